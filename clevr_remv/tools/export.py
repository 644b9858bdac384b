"""Export to the layouts existing training code reads.

``refcoco``: what the ``refer`` API (lichengunc/refer) and the codebases built on it (LAVT,
CRIS, ReSTR, ...) load, so a RefCOCO training script runs with only its data root changed:

    OUT/refcoco/refs(unc).p         pickled list of refs (ref_id, ann_id, image_id, split,
                                    category_id, sentences[{sent_id, sent, raw, tokens}], ...)
    OUT/refcoco/instances.json      COCO images, annotations (segmentation = [RLE]), categories
    OUT/images/mscoco/images/train2014/<file_name>.png

    REFER(data_root=OUT, dataset="refcoco", splitBy="unc")

One image per (scene, view); one ref per (view, target object) carrying every valid sentence
for that object in that view.  Splits are train/val/test (``getRefIds(split="test")``).
RefCOCO refers to one object: expressions with several targets or none (the generalized
setting) are left out and counted (``skipped``); ``export grefcoco`` takes them all.

``coco``: per-view instance annotations of every visible object, one file per split:
``OUT/annotations/instances_<split>.json`` and ``OUT/images/<split>/``.  With ``amodal``
(datasets with amodal masks, format 1.4 on), in the COCO-Amodal style: ``segmentation`` stays
the visible mask, ``amodal_segmentation`` is the whole silhouette (RLE, clipped to the frame),
``occlude_rate`` is ``1 - visible / amodal``, ``amodal_area`` and ``amodal_bbox`` go with it, and
an object hidden in a view is annotated too (empty ``segmentation``, ``occlude_rate`` 1).
"""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from ..errors import UsageError
from ..read.reader import Reader, check_splits
from ..read.views import resolve_views
from ..scene import amodal as amodal_geometry
from ..scene import catalogue
from ..store.files import writable_folder

CATEGORIES = catalogue.coco_categories()  # stable ids from the catalogue, not positions
CAT_ID = {c["name"]: c["id"] for c in CATEGORIES}


def encode_mask(mask: np.ndarray) -> dict:
    """Compressed COCO RLE with ``counts`` as str (JSON- and pickle-friendly)."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def _annotation(ann_id, image_id, mask, obj) -> dict:
    rle = encode_mask(mask)
    return {"id": ann_id, "image_id": image_id, "category_id": CAT_ID[obj["shape"]],
            "area": int(mask_utils.area(rle)), "bbox": [float(x) for x in mask_utils.toBbox(rle)],
            "iscrowd": 0, "rle": rle,
            "attributes": {k: obj[k] for k in ("shape", "color", "material", "size")}}


def _tokens(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def _image_id(reader: Reader, scene: int, u: int, v: int) -> int:
    rows, cols = reader.grid
    return (scene * rows + u) * cols + v


def view_image(reader: Reader, e: dict, u: int, v: int, image_dir: Path, file_of: dict, images: list) -> int:
    """The image id of view (u, v) of expression ``e``'s scene; its PNG is written (and its
    COCO image record appended to ``images``) the first time a view is asked for."""
    image_id = _image_id(reader, e["scene"], u, v)
    if image_id not in file_of:
        name = file_of[image_id] = f"CLEVR_REMV_{e['split']}_{e['scene']:07d}_{u}_{v}.png"
        Image.fromarray(reader.image(e["scene"], u, v)).save(image_dir / name, compress_level=1)
        images.append({"id": image_id, "file_name": name, "width": reader.width, "height": reader.height,
                       "scene": e["scene"], "view": [u, v], "split": e["split"]})
    return image_id


def coco_info(reader: Reader, what: str, views) -> dict:
    """COCO's ``info`` record (``pycocotools.COCO(...).info()`` prints it): the standard keys
    plus what identifies the source dataset.  Dates are the run's, so exports stay repeatable."""
    m = reader.manifest
    created = m.get("created", "")
    return {"description": f"CLEVR-REMV {what}, views {[list(x) for x in views]} of a "
                           f"{reader.grid[0]}x{reader.grid[1]} rig",
            "version": m["generator"]["version"], "year": int(created[:4]) if created[:4].isdigit() else None,
            "date_created": created, "contributor": "clevr-remv generator", "url": "",
            "format_version": m["format_version"], "config_digest": m["config_digest"], "seed": m["seed"]}


def _prepare_out(out: Path) -> None:
    writable_folder(out, "export folder")
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"'{out}' is not empty; export into a new folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create '{out}': {exc.strerror}") from None


def export_refcoco(root, out, views="center", splits=None, dataset="refcoco", split_by="unc",
                   progress=None) -> dict:
    reader = Reader(root)
    sel = resolve_views(views, reader.grid)
    splits = check_splits(reader, splits)
    out = Path(out)
    _prepare_out(out)
    image_dir = out / "images" / "mscoco" / "images" / "train2014"
    image_dir.mkdir(parents=True)
    (out / dataset).mkdir()
    images, annotations, refs = [], [], []
    ann_of: dict[tuple, int] = {}
    ref_of: dict[tuple, dict] = {}
    sent_id = 0
    exprs = [e for e in reader.expressions() if splits is None or e["split"] in splits]
    skipped = sum(len(e["targets"]) != 1 for e in exprs)
    exprs = [e for e in exprs if len(e["targets"]) == 1]
    file_of: dict[int, str] = {}
    for e in exprs:
        scene_rec = None
        for (u, v) in sel:
            if not e["valid_views"][u, v]:
                continue
            image_id = view_image(reader, e, u, v, image_dir, file_of, images)
            key = (image_id, e["object"])
            if key not in ann_of:
                scene_rec = scene_rec or reader.scene(e["scene"])
                ann = _annotation(len(annotations) + 1, image_id, reader.object_mask(e["scene"], e["object"], u, v),
                                  scene_rec["objects"][e["object"]])
                ann["segmentation"] = [ann.pop("rle")]  # refer.getMask decodes a list of RLEs
                annotations.append(ann)
                ann_of[key] = ann["id"]
                ref = {"ref_id": len(refs) + 1, "ann_id": ann["id"], "image_id": image_id, "split": e["split"],
                       "category_id": ann["category_id"], "file_name": file_of[image_id], "sentences": [], "sent_ids": [], "scene": e["scene"], "object": e["object"], "view": [u, v]}
                refs.append(ref)
                ref_of[key] = ref
            ref = ref_of[key]
            sent_id += 1
            ref["sentences"].append({"sent_id": sent_id, "sent": " ".join(_tokens(e["text"])), "raw": e["text"],
                                     "tokens": _tokens(e["text"]), "expression": e["id"]})
            ref["sent_ids"].append(sent_id)
        if progress:
            progress()
    with open(out / dataset / f"refs({split_by}).p", "wb") as fh:
        pickle.dump(refs, fh, protocol=2)
    with open(out / dataset / "instances.json", "w", encoding="utf-8") as fh:
        json.dump({"images": images, "annotations": annotations, "categories": CATEGORIES,
                   "info": {"description": "CLEVR-REMV exported for the refer API", "views": [list(x) for x in sel]}},
                  fh)
    reader.close()
    return {"images": len(images), "annotations": len(annotations), "refs": len(refs), "sentences": sent_id,
            "skipped": skipped}


def _add_amodal(ann: dict, visible: np.ndarray, whole: np.ndarray) -> None:
    """The COCO-Amodal fields of one annotation (``whole``: the object's amodal mask)."""
    rle = encode_mask(whole)
    ann["amodal_segmentation"] = rle
    ann["amodal_area"] = int(mask_utils.area(rle))
    ann["amodal_bbox"] = [float(x) for x in mask_utils.toBbox(rle)]
    occ = amodal_geometry.occlusion(int(visible.sum()), int(whole.sum()))
    ann["occlude_rate"] = None if np.isnan(occ) else round(float(occ), 6)


def export_coco(root, out, views="center", splits=None, amodal: bool = False) -> dict:
    reader = Reader(root)
    sel = resolve_views(views, reader.grid)
    splits = check_splits(reader, splits)
    if amodal and not reader.has_amodal():
        raise UsageError(f"'{root}' has no amodal masks (format {reader.manifest.get('format_version')}; they are "
                         f"stored from format 1.4 on); export without --amodal, or generate it again")
    out = Path(out)
    _prepare_out(out)
    (out / "annotations").mkdir()
    counts = {"images": 0, "annotations": 0}
    split_names = splits or sorted({e["split"] for e in reader.shards})
    for split in split_names:
        (out / "images" / split).mkdir(parents=True)
        images, annotations = [], []
        for scene in reader.scenes_in(split):
            rec = reader.scene(scene)
            for (u, v) in sel:
                image_id = _image_id(reader, scene, u, v)
                name = f"CLEVR_REMV_{split}_{scene:07d}_{u}_{v}.png"
                Image.fromarray(reader.image(scene, u, v)).save(out / "images" / split / name, compress_level=1)
                images.append({"id": image_id, "file_name": name, "width": reader.width, "height": reader.height,
                               "scene": scene, "view": [u, v]})
                inst = reader.instances(scene, u, v)
                whole = reader.output("amodal", scene, u, v) if amodal else None
                for k, obj in enumerate(rec["objects"]):
                    m = inst == k + 1
                    if not m.any() and (whole is None or not whole[k].any()):
                        continue
                    ann = _annotation(image_id * 256 + k + 1, image_id, m, obj)
                    ann["segmentation"] = ann.pop("rle")  # COCO: an RLE dict
                    ann["object"] = k
                    if whole is not None:
                        _add_amodal(ann, m, whole[k])
                    annotations.append(ann)
        with open(out / "annotations" / f"instances_{split}.json", "w", encoding="utf-8") as fh:
            json.dump({"info": coco_info(reader, f"split {split}", sel), "images": images,
                       "annotations": annotations, "categories": CATEGORIES}, fh)
        counts["images"] += len(images)
        counts["annotations"] += len(annotations)
    reader.close()
    return counts
