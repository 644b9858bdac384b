"""A reference baseline that needs no trained model: the attribute oracle.

It reads the sentence, keeps the attribute words it knows (the synonym table of
``templates/expressions.json``: sizes, colors, materials, shapes) and predicts the union of the
ground-truth instance masks of every object in the view that has all the attributes mentioned
first in the sentence (the target's description; anchors and relations are ignored).  It is
an oracle for segmentation (perfect masks) and a weak reader of language: it shows what
attribute matching alone achieves and exercises ``evaluate`` end to end.  Not a model.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import h5py
import numpy as np

from .data import Reader, resolve_views
from .errors import UsageError
from .outdir import new_file
from .expressions import ATTRIBUTES, load_templates
from .layout import COLORS, MATERIALS, SHAPES, SIZES

_VALUES = {"size": list(SIZES), "color": list(COLORS), "material": list(MATERIALS), "shape": list(SHAPES)}
_CLAUSE = re.compile(r"\b(left of|right of|in front of|behind|with the same|sharing|matching|whose)\b")


def sentence_attributes(text: str) -> dict:
    """Attributes named before the first relation word (the target's own description)."""
    syn = load_templates()["synonyms"]
    head = _CLAUSE.split(text.lower())[0]
    found = {}
    for attr in ATTRIBUTES:
        for value in _VALUES[attr]:
            if any(re.search(r"\b" + re.escape(w) + r"\b", head) for w in syn[value]):
                found[attr] = value
                break
    return found


def predict(root, out: Path, split: str = "test", views="all") -> int:
    reader = Reader(root)
    sel = resolve_views(views, reader.grid)
    out = Path(out)
    new_file(out, "predictions file")
    if split not in reader.manifest.get("splits", {}):
        raise UsageError(f"unknown split '{split}' in '{root}' (splits: {', '.join(reader.manifest.get('splits', {}))})")
    # A temporary name in the same folder, renamed when complete: nothing half-written.
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        n = _write_predictions(reader, tmp, split, sel)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
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
