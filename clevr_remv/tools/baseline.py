"""A reference baseline that needs no trained model: the attribute oracle.

It reads the sentence, keeps the attribute words it knows (the object catalogue's words for
sizes, colors, materials, shapes) and predicts the union of the
ground-truth instance masks of every object in the view that has all the attributes mentioned
first in the sentence (the target's description; anchors and relations are ignored).  It is
an oracle for segmentation (perfect masks) and a weak reader of language: it shows what
attribute matching alone achieves and exercises ``evaluate`` end to end.  Not a model.

Under ``expressions.targets: generalized`` it reads every family the same way: plural nouns
("the two red cubes") name their shape, so a several-target sentence predicts every object of
that description (all of them when the relation does not narrow it); a no-target sentence
predicts the objects its description fits, which is nothing for a zero-hop one ("the green
cylinder" where there is none) and, as relations are ignored, the wrong objects for a
no-target sentence with a relation.  ``evaluate`` scores these with the GRES metrics.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path

import h5py
import numpy as np

from ..language.programs import ATTRIBUTES, RELATIONS
from ..language.templates import load_templates, plural
from ..read.reader import Reader, check_splits
from ..read.views import resolve_views
from ..scene import catalogue
from ..store.files import new_file


@functools.lru_cache(maxsize=1)
def clause_markers() -> tuple[str, ...]:
    """Words that end the target's own description, taken from the templates: every relation
    wording ("left of", "on the left side of", ...) and the literal text that follows the
    target in the wordings of families with an anchor ("with the same", "sharing the", ...),
    and the same-attribute phrases ("of the same size as", ...)."""
    tpl = load_templates()
    words = {w for rel in RELATIONS for w in tpl["synonyms"][rel]}
    words |= {w for phrases in tpl.get("same_as", {}).values() for w in phrases}
    for fam in tpl["families"]:
        if not any(node.get("attrs") == "$anchor" for node in fam["program"]):
            continue
        for wording in fam["wordings"]:
            text = wording["text"] if isinstance(wording, dict) else wording
            after = text.split("{{ target }}", 1)[1].split("{{", 1)[0].strip().lower()
            if after:
                words.add(after)
    return tuple(sorted(words, key=len, reverse=True))


def sentence_attributes(text: str) -> dict:
    """Attributes named before the first relation or comparison words (the target's own
    description), matched against the catalogue's words for each value."""
    tpl = load_templates()
    syn = tpl["synonyms"]
    clause = re.compile(r"\b(" + "|".join(re.escape(w) for w in clause_markers()) + r")\b")
    head = clause.split(text.lower())[0]
    values = catalogue.values_by_attribute()
    found = {}
    for attr in ATTRIBUTES:
        for value in values[attr]:
            words = syn[value] + ([plural(tpl, w) for w in syn[value]] if attr == "shape" else [])
            if any(re.search(r"\b" + re.escape(w) + r"\b", head) for w in words):
                found[attr] = value
                break
    return found


def predict(root, out: Path, split: str = "test", views="all") -> int:
    reader = Reader(root)
    try:
        sel = resolve_views(views, reader.grid)
        out = Path(out)
        new_file(out, "predictions file")
        check_splits(reader, [split])
        # A temporary name in the same folder, renamed when complete: nothing half-written.
        tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            n = _write_predictions(reader, tmp, split, sel)
            os.replace(tmp, out)
        finally:
            tmp.unlink(missing_ok=True)
    finally:
        reader.close()
    return n


def _write_predictions(reader: Reader, path: Path, split: str, sel) -> int:
    n = 0
    with h5py.File(path, "w") as f:
        for e in reader.expressions(split):
            rec = reader.scene(e["scene"])
            attrs = sentence_attributes(e["text"])
            ids = [k + 1 for k, o in enumerate(rec["objects"]) if all(o[a] == v for a, v in attrs.items())]
            for (u, v) in sel:
                if not e["valid_views"][u, v]:
                    continue
                inst = reader.instances(e["scene"], u, v)
                f.create_dataset(f"{e['id']}/{u}_{v}", data=np.isin(inst, ids), compression="gzip")
                n += 1
    return n
