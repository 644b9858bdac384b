"""``clevr-remv browse DIR --out SITE``: a static site to look at a dataset, no server needed
(open ``SITE/index.html`` from disk).

Layout of SITE:

* ``index.html``, ``browse.js`` (the only script; no network, no CDN), ``style.css``;
* ``data/index.js``: the scene list; ``data/scene-K.js``: one scene's JSON (objects,
  expressions with per-view validity, visible pixels).  Each is a JSON object wrapped in one
  function call, because a page opened from ``file://`` may not fetch JSON files;
* ``img/K/U-V.webp``: view (u, v) of scene K; ``img/K/U-V.png``: its overlays stacked
  vertically, one H-pixel strip each: strip 0 the instance masks, strip 1 + k object k
  highlighted (the rest dimmed, outlined in yellow; its amodal outline dashed in magenta where
  the dataset has amodal masks), strip 1 + N + k object k outlined in cyan
  (an anchor, as ``preview`` draws it; N objects).  The page draws strips onto a canvas over
  the photo.

The site is built in ``SITE/.partial`` and moved into place at the end: an interrupted run
leaves the previous site (or none) intact.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np

from ..errors import UsageError
from ..store import refexps
from ..store.files import writable_folder
from .common import open_dataset, palette

ASSETS = Path(__file__).resolve().parent / "browse_site"
MARKER = ".clevr-remv-browse"
GENERATED = ("index.html", "browse.js", "style.css", "data", "img", MARKER)


DEFAULT_SCENES = 100


def parse_scenes(spec: str | None, available: list[int]) -> list[int]:
    """None: the first DEFAULT_SCENES; 'all'; or a list like '0-19,40,41'."""
    if spec is None:
        return list(available)[:DEFAULT_SCENES]
    if spec in ("", "all"):
        return list(available)
    want: list[int] = []
    try:
        for part in spec.split(","):
            part = part.strip()
            if "-" in part:
                a, b = (int(x) for x in part.split("-", 1))
                want += range(a, b + 1)
            elif part:
                want.append(int(part))
    except ValueError:
        raise UsageError(f"--scenes '{spec}' is not a list like '0-19,40'") from None
    have = set(available)
    missing = [i for i in want if i not in have]
    if missing:
        span = f"{available[0]}-{available[-1]}" if available else "none"
        raise UsageError(f"scene {missing[0]} is not in a finished shard (scenes: {span})")
    return sorted(set(want))


def _check_site(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out '{out}' is a file; give a folder for the site")
    if out.is_dir():
        extra = [p.name for p in out.iterdir() if p.name not in GENERATED + (".partial",)]
        if extra and not (out / MARKER).exists():
            raise UsageError(f"--out '{out}' holds other files ({extra[0]}, ...); give a new or empty folder")
        if extra:
            raise UsageError(f"--out '{out}' holds files browse did not write ({extra[0]}, ...); move them away first")
    writable_folder(out, "--out")  # the folder, or the one it is made in, can be written


ANCHOR_RGB = (0, 220, 255)  # as preview.highlight outlines an anchor


def overlay_strips(ids: np.ndarray, nobj: int, wholes: np.ndarray | None = None) -> np.ndarray:
    """RGBA [(1 + 2 nobj) * H, W, 4]: strip 0 all masks, strip 1 + k object k highlighted (with
    its amodal mask ``wholes[k]`` outlined dashed, when given), strip 1 + nobj + k object k
    outlined as an anchor (transparent elsewhere)."""
    from .preview import AMODAL, dashed_outline, outline

    h, w = ids.shape
    out = np.zeros(((1 + 2 * nobj) * h, w, 4), np.uint8)
    masks = out[:h]
    on = ids > 0
    masks[on, :3] = palette(ids[on])
    masks[on, 3] = 150
    for k in range(nobj):
        s = out[(1 + k) * h:(2 + k) * h]
        m = ids == k + 1
        s[~m] = (0, 0, 0, 150)          # dim everything else
        s[m] = (255, 230, 0, 70)        # tint the target
        s[outline(m)] = (255, 230, 0, 255)
        if wholes is not None:
            s[dashed_outline(wholes[k])] = (*AMODAL, 255)
        a = out[(1 + nobj + k) * h:(2 + nobj + k) * h]
        a[outline(m)] = ANCHOR_RGB + (255,)
    return out


def _scene_files(d: dict, entry: dict, row: int, exprs: list[dict], grid, img_dir: Path) -> dict:
    from PIL import Image

    rows, cols = grid
    index = entry["scene_range"][0] + row
    scene = d["scene"]
    nobj = len(scene["objects"])
    images = d["images"]
    ids = d["instances"]
    img_dir.mkdir(parents=True, exist_ok=True)
    for u in range(rows):
        for v in range(cols):
            Image.fromarray(images[u, v]).save(img_dir / f"{u}-{v}.webp", quality=90, method=4)
            wholes = d["amodal"][u, v] if "amodal" in d else None
            Image.fromarray(overlay_strips(ids[u, v], nobj, wholes), "RGBA").save(img_dir / f"{u}-{v}.png",
                                                                                 optimize=False)
    mine = [e for e in exprs if e["scene"] == index]
    return {
        "index": index, "split": entry["split"], "shard": entry["path"], "grid": [rows, cols],
        "width": int(images.shape[3]), "height": int(images.shape[2]),
        "objects": [{k: o.get(k) for k in ("size", "color", "material", "shape")} for o in scene["objects"]],
        "colors": [palette(np.array([k + 1]))[0].tolist() for k in range(nobj)],  # in the masks overlay
        "object_colors": [_rgb(o.get("rgb")) for o in scene["objects"]],  # the object's own colour
        "visible_pixels": d["visible_pixels"][:, :, :nobj].tolist(),
        "expressions": [{"id": e["id"], "text": str(e["text"]), "family": str(e["family"]),
                         "object": e["object"], "anchor": refexps.anchor(e, scene),
                         "targets": list(e["targets"]), "anchors": refexps.anchors(e, scene),
                         "num_relations": e["num_relations"],
                         "valid_views": e["valid_views"].astype(int).tolist()} for e in mine],
    }


def _rgb(value) -> list[int] | None:
    """An object's [r, g, b] from its record, or None when the record has no usable one."""
    if (isinstance(value, list) and len(value) == 3
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) and 0 <= x <= 255 for x in value)):
        return [int(x) for x in value]
    return None


def _js(call: str, data) -> str:
    return f"{call}({json.dumps(data, separators=(',', ':'))});\n"


def build_site(root: Path, out: Path, scenes_spec: str | None = None, echo=None) -> dict:
    reader = open_dataset(root)
    _check_site(out)
    wanted = parse_scenes(scenes_spec, reader.scene_indices)
    if echo and scenes_spec is None and len(wanted) < len(reader.scene_indices):
        echo(f"browse: the first {len(wanted)} of {len(reader.scene_indices)} scenes (--scenes all for every one)")
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    part = out / ".partial"
    shutil.rmtree(part, ignore_errors=True)
    (part / "data").mkdir(parents=True)
    listing = []
    t0 = time.perf_counter()
    amodal = reader.has_amodal()
    try:
        by_shard: dict[int, list[int]] = {}
        for i in wanted:
            si, row = reader.location(i)
            by_shard.setdefault(si, []).append(row)
        for si, rows_in in sorted(by_shard.items()):
            entry = reader.shards[si]
            exprs = reader.expressions(shard=si)
            for row in rows_in:
                index = entry["scene_range"][0] + row
                d = reader.scene_views(index, ("images", "instances") + (("amodal",) if amodal else ()))
                data = _scene_files(d, entry, row, exprs, reader.grid, part / "img" / str(index))
                (part / "data" / f"scene-{index}.js").write_text(_js("CLEVR_REMV.scene", data), encoding="utf-8")
                listing.append({"index": index, "split": entry["split"], "objects": len(data["objects"]),
                                "expressions": len(data["expressions"])})
            if echo:
                echo(f"browse: {len(listing)}/{len(wanted)} scenes written ({time.perf_counter() - t0:.1f} s)")
        meta = {"root": str(root), "grid": list(reader.grid), "resolution": [reader.width, reader.height],
                "scenes": sorted(listing, key=lambda x: x["index"])}
        (part / "data" / "index.js").write_text(_js("CLEVR_REMV.index", meta), encoding="utf-8")
        for name in ("index.html", "browse.js", "style.css"):
            shutil.copyfile(ASSETS / name, part / name)
        (part / MARKER).write_text("written by clevr-remv browse\n", encoding="utf-8")
        for name in GENERATED:  # the previous site (only files browse writes), then the new one
            old = out / name
            if old.is_dir():
                shutil.rmtree(old)
            elif old.exists():
                old.unlink()
        for p in part.iterdir():
            p.rename(out / p.name)
        part.rmdir()
    except BaseException:
        shutil.rmtree(part, ignore_errors=True)
        if created and not any(out.iterdir()):
            out.rmdir()
        raise
    finally:
        reader.close()
    return {"scenes": len(listing), "index": out / "index.html"}
