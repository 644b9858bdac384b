"""Export to the gRefCOCO layout (GRES, CVPR 2023), as its ``G_REFER`` API reads it:

    OUT/grefcoco/grefs(unc).json    list of refs: ref_id, image_id, split, ann_id and
                                    category_id as lists ([-1] for no target), no_target,
                                    sentences[{sent_id, sent, raw, tokens}], sent_ids
    OUT/grefcoco/instances.json     COCO images (with ``scene``, the global scene index, and
                                    ``view`` [u, v]), annotations (segmentation = [RLE]),
                                    categories
    OUT/images/train2014/<file_name>.png

    G_REFER(data_root=OUT, dataset="grefcoco", splitBy="unc")

One image per (scene, view); one ref per (view, set of targets) carrying every valid sentence
that names exactly that set in that view (no-target sentences of a view share one ref with
``ann_id`` [-1]).  ``getMaskByRef(ref, merge=True)`` gives the union of the targets' masks.
Splits are train/val/test as generated."""

from __future__ import annotations

import json
from pathlib import Path

from ..read.reader import Reader, check_splits
from ..read.views import resolve_views
from .export import (
    CATEGORIES,
    _annotation,
    _prepare_out,
    _tokens,
    coco_info,
    view_image,
)


def export_grefcoco(root, out, views="center", splits=None, split_by="unc", progress=None) -> dict:
    reader = Reader(root)
    try:
        sel = resolve_views(views, reader.grid)
        splits = check_splits(reader, splits)
        out = Path(out)
        _prepare_out(out)
        image_dir = out / "images" / "train2014"
        image_dir.mkdir(parents=True)
        (out / "grefcoco").mkdir()
        images, annotations, refs = [], [], []
        ann_of: dict[tuple, int] = {}
        ref_of: dict[tuple, dict] = {}
        file_of: dict[int, str] = {}
        sent_id = 0
        for e in reader.expressions():
            if splits is not None and e["split"] not in splits:
                continue
            scene_rec = None
            targets = tuple(e["targets"])
            for (u, v) in sel:
                if not e["valid_views"][u, v]:
                    continue
                image_id = view_image(reader, e, u, v, image_dir, file_of, images)
                ann_ids, cat_ids = [], []
                for t in targets:
                    if (image_id, t) not in ann_of:
                        scene_rec = scene_rec or reader.scene(e["scene"])
                        ann = _annotation(len(annotations) + 1, image_id, reader.object_mask(e["scene"], t, u, v),
                                          scene_rec["objects"][t])
                        ann["segmentation"] = [ann.pop("rle")]  # getMask decodes a list of RLEs
                        ann["object"] = t
                        annotations.append(ann)
                        ann_of[(image_id, t)] = ann["id"]
                    ann_ids.append(ann_of[(image_id, t)])
                    cat_ids.append(annotations[ann_of[(image_id, t)] - 1]["category_id"])
                key = (image_id, targets)
                if key not in ref_of:
                    ref = {"ref_id": len(refs) + 1, "image_id": image_id, "split": e["split"],
                           "ann_id": ann_ids or [-1], "category_id": cat_ids or [-1], "no_target": not targets,
                           "file_name": file_of[image_id], "sentences": [], "sent_ids": [],
                           "scene": e["scene"], "view": [u, v], "targets": list(targets)}
                    refs.append(ref)
                    ref_of[key] = ref
                ref = ref_of[key]
                sent_id += 1
                tokens = _tokens(e["text"])
                ref["sentences"].append({"sent_id": sent_id, "sent": " ".join(tokens), "raw": e["text"],
                                         "tokens": tokens, "expression": e["id"], "family": e["family"]})
                ref["sent_ids"].append(sent_id)
            if progress:
                progress()
        with open(out / "grefcoco" / f"grefs({split_by}).json", "w", encoding="utf-8") as fh:
            json.dump(refs, fh)
        with open(out / "grefcoco" / "instances.json", "w", encoding="utf-8") as fh:
            json.dump({"images": images, "annotations": annotations, "categories": CATEGORIES,
                       "info": coco_info(reader, "exported for the gRefCOCO API (G_REFER)", sel)}, fh)
    finally:
        reader.close()
    return {"images": len(images), "annotations": len(annotations), "refs": len(refs), "sentences": sent_id,
            "no_target_refs": sum(r["no_target"] for r in refs)}
