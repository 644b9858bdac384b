"""The object catalogue (``catalogue.json``): shapes with their ground rule, sizes, materials
with their looks, colours, and the words for each; validated on load.

Needs only json and math, so the Blender side imports it too (like :mod:`lightfield`).
Rules in docs/scenes.md.
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

PATH = Path(__file__).resolve().parent / "catalogue.json"

# How high an object's centre sits above the ground, by rule name (the rule is data; the
# arithmetic is here once, for layout and Blender alike).  The mesh of each shape spans
# [-1, 1] on each axis, so this is also the scale Blender gives the mesh.
GROUND_RULES = {
    "radius": lambda r: r,
    "radius/sqrt2": lambda r: r / math.sqrt(2.0),
}


class CatalogueError(ValueError):
    """The catalogue file breaks a rule (unknown ground rule, missing words, duplicate ids)."""


@functools.lru_cache(maxsize=4)
def load(path: str | None = None) -> dict:
    with open(path or PATH, encoding="utf-8") as fh:
        data = json.load(fh)
    validate(data)
    return data


def validate(data: dict) -> None:
    for table in ("shapes", "sizes", "materials", "colors"):
        if not data.get(table):
            raise CatalogueError(f"catalogue: '{table}' is missing or empty")
        for name, entry in data[table].items():
            words = entry.get("synonyms")
            if not words or not all(isinstance(w, str) and w.strip() for w in words):
                raise CatalogueError(f"catalogue: {table}.{name} needs a non-empty list of synonyms")
    ids = [s.get("coco_id") for s in data["shapes"].values()]
    if not all(isinstance(i, int) and i > 0 for i in ids) or len(set(ids)) != len(ids):
        raise CatalogueError("catalogue: every shape needs its own positive integer coco_id")
    for name, s in data["shapes"].items():
        if s.get("ground") not in GROUND_RULES:
            raise CatalogueError(f"catalogue: shapes.{name}.ground must be one of {sorted(GROUND_RULES)}")
    for name, s in data["sizes"].items():
        if not isinstance(s.get("radius"), (int, float)) or s["radius"] <= 0:
            raise CatalogueError(f"catalogue: sizes.{name}.radius must be a positive number")
    for name, m in data["materials"].items():
        if not isinstance(m.get("look"), dict):
            raise CatalogueError(f"catalogue: materials.{name}.look must map Principled BSDF inputs to values")
    for name, c in data["colors"].items():
        rgb = c.get("rgb")
        if not (isinstance(rgb, list) and len(rgb) == 3 and all(isinstance(x, int) and 0 <= x <= 255 for x in rgb)):
            raise CatalogueError(f"catalogue: colors.{name}.rgb must be three integers 0-255")
    if data.get("ground", {}).get("material") not in data["materials"]:
        raise CatalogueError("catalogue: ground.material must be one of the materials")
    if not isinstance(data.get("render_policy"), dict):
        raise CatalogueError("catalogue: 'render_policy' (bounce limits, view transform) is missing")
    if not data.get("thing"):
        raise CatalogueError("catalogue: 'thing' (the words for an object of any shape) is missing")
    values = [v for t in ("shapes", "sizes", "materials", "colors") for v in data[t]]
    if len(set(values)) != len(values) or "thing" in values:
        raise CatalogueError("catalogue: a value name is used twice (values name expression words)")


def render_policy() -> dict:
    return {k: v for k, v in load()["render_policy"].items() if k != "about"}


def digest_payload() -> dict:
    """What of the catalogue determines a dataset's bytes (all but the prose)."""
    return {k: v for k, v in load().items() if k not in ("about", "ground_rules")}


def shapes() -> tuple[str, ...]:
    return tuple(load()["shapes"])


def materials() -> tuple[str, ...]:
    return tuple(load()["materials"])


def sizes() -> dict[str, float]:
    return {k: v["radius"] for k, v in load()["sizes"].items()}


def colors() -> dict[str, tuple[int, int, int]]:
    return {k: tuple(v["rgb"]) for k, v in load()["colors"].items()}


def material_looks() -> dict[str, dict]:
    return {k: dict(v["look"]) for k, v in load()["materials"].items()}


def centre_height(shape: str, radius: float) -> float:
    """z of an object's centre with its base on the ground (also the mesh scale in Blender)."""
    return GROUND_RULES[load()["shapes"][shape]["ground"]](radius)


def coco_categories() -> list[dict]:
    return [{"id": s["coco_id"], "name": name, "supercategory": "shape"} for name, s in load()["shapes"].items()]


def synonyms() -> dict[str, list[str]]:
    """Words for every value (and 'thing'), as the expression templates use them."""
    data = load()
    out = {"thing": list(data["thing"])}
    for table in ("shapes", "sizes", "materials", "colors"):
        for name, entry in data[table].items():
            out[name] = list(entry["synonyms"])
    return out


def values_by_attribute() -> dict[str, list[str]]:
    data = load()
    return {"size": list(data["sizes"]), "color": list(data["colors"]), "material": list(data["materials"]),
            "shape": list(data["shapes"])}


def merge_synonyms(template_words: dict) -> dict:
    """The templates' own words (relations) plus the catalogue's object words; a template
    that redefines an object word is an error (the catalogue is the one place for them)."""
    mine = synonyms()
    twice = sorted(set(mine) & set(template_words))
    if twice:
        raise CatalogueError(f"templates redefine catalogue words for {', '.join(twice)}; "
                             f"edit clevr_remv/catalogue.json instead")
    return {**mine, **template_words}
