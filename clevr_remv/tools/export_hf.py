"""``clevr-remv export hf DIR --out OUT``: a folder the Hugging Face ``datasets`` library loads
as it is (``datasets.load_dataset(OUT)``), with Croissant metadata (``OUT/croissant.json``).

    OUT/README.md                         dataset card: YAML configs/data_files per split, license,
                                          citation, the generation settings
    OUT/croissant.json                    Croissant 1.0 (mlcommons) metadata: the Parquet files
                                          and one record set of the rows
    OUT/data/<split>-NNNNN-of-MMMMM.parquet

One row per (expression, valid view) of each split: ``image`` (the view, PNG, an Image
feature), ``mask`` (the union of the targets' masks, PNG, 255 inside, an Image feature),
``text``, ``family``, ``num_relations``, ``scene`` (global index), ``u``, ``v``, ``expression``
(id "scene-k"), ``targets`` (object indices).  With ``amodal`` (datasets with amodal masks,
format 1.4 on) also ``amodal_mask`` (the union of the targets' whole silhouettes, as if nothing
hid them, PNG) and ``occlusion`` (``1 - mask / amodal_mask`` pixels).  Offline: pushing to a hub
is the user's step.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from .. import __version__
from ..read.reader import Reader, check_splits
from ..read.views import resolve_views
from ..store.files import AtomicFolder
from ..store.shards import sha256_file
from .common import open_dataset, progress_bar

ROWS_PER_FILE = 1000
LICENSE = "cc-by-4.0"
CITATION = """@phdthesis{chen2023multimodal,
  title  = {Deep Learning Based Multimodal Retrieval},
  author = {Chen, J.},
  school = {INSA Rennes},
  year   = {2023},
  note   = {Part III: CLEVR-REMV, a generative multimodal and multi-view dataset for referring
            expression segmentation}
}
@inproceedings{johnson2017clevr,
  title     = {{CLEVR}: A Diagnostic Dataset for Compositional Language and Elementary Visual Reasoning},
  author    = {Johnson, Justin and Hariharan, Bharath and van der Maaten, Laurens and Fei-Fei, Li and
               Zitnick, C. Lawrence and Girshick, Ross},
  booktitle = {CVPR},
  year      = {2017}
}"""

# Hugging Face feature types of the columns (the Parquet schema's "huggingface" metadata).
FEATURES = {
    "image": {"_type": "Image"},
    "mask": {"_type": "Image"},
    "text": {"dtype": "string", "_type": "Value"},
    "family": {"dtype": "string", "_type": "Value"},
    "num_relations": {"dtype": "int32", "_type": "Value"},
    "scene": {"dtype": "int64", "_type": "Value"},
    "u": {"dtype": "int32", "_type": "Value"},
    "v": {"dtype": "int32", "_type": "Value"},
    "expression": {"dtype": "string", "_type": "Value"},
    "targets": {"feature": {"dtype": "int32", "_type": "Value"}, "_type": "List"},
}
DESCRIPTIONS = {
    "image": "the view (u, v) of the scene, 8-bit sRGB, PNG",
    "mask": "union of the target objects' pixels in this view (255 inside, 0 outside), PNG",
    "text": "the referring expression",
    "family": "template family of the expression",
    "num_relations": "spatial relations in the expression",
    "scene": "global scene index",
    "u": "row of the view in the camera grid (0 at the top)",
    "v": "column of the view in the camera grid (0 at the left)",
    "expression": "expression id 'scene-k': the k-th expression of the scene",
    "targets": "the referred objects (0-based indices into the scene record's objects)",
}


# The columns ``amodal=True`` adds.
AMODAL_FEATURES = {"amodal_mask": {"_type": "Image"}, "occlusion": {"dtype": "float32", "_type": "Value"}}
AMODAL_DESCRIPTIONS = {
    "amodal_mask": "union of the target objects' whole silhouettes in this view, as if nothing hid them, "
                   "clipped to the frame (255 inside), PNG",
    "occlusion": "1 - mask pixels / amodal_mask pixels: the share of the targets hidden by other objects",
}


_AMODAL_CARD = ("\n`amodal_mask` is the union of the targets' whole silhouettes, as if nothing hid them "
                "(255 inside), and `occlusion` the share of them hidden by other objects.")


def _features(amodal: bool) -> dict:
    return {**FEATURES, **(AMODAL_FEATURES if amodal else {})}


def _png(arr: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", compress_level=4)
    return buf.getvalue()


def _schema(amodal: bool = False):
    import pyarrow as pa

    img = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    fields = [("image", img), ("mask", img), ("text", pa.string()), ("family", pa.string()),
              ("num_relations", pa.int32()), ("scene", pa.int64()), ("u", pa.int32()), ("v", pa.int32()),
              ("expression", pa.string()), ("targets", pa.list_(pa.int32()))]
    if amodal:
        fields += [("amodal_mask", img), ("occlusion", pa.float32())]
    meta = {"huggingface": json.dumps({"info": {"features": _features(amodal)}})}
    return pa.schema(fields, metadata=meta)


def targets_of(e: dict) -> list[int]:
    """The referred objects of an expression record (a list where the shard stores several)."""
    t = e.get("targets")
    return [int(x) for x in t] if t is not None else [int(e["object"])]


def _split_rows(reader: Reader, split: str, views) -> list[tuple[dict, int, int]]:
    return [(e, u, v) for e in reader.expressions(split) for (u, v) in views if e["valid_views"][u, v]]


def _write_split(reader: Reader, split: str, items, folder: Path, bar, amodal: bool = False) -> list[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = _schema(amodal)
    nfiles = max(1, -(-len(items) // ROWS_PER_FILE))
    names = []
    cache: dict = {}  # (scene, u, v) -> (PNG bytes of the view, instance map): a view serves many rows
    for k in range(nfiles):
        chunk = items[k * ROWS_PER_FILE:(k + 1) * ROWS_PER_FILE]
        cols = {name: [] for name in schema.names}
        for e, u, v in chunk:
            key = (e["scene"], u, v)
            if key not in cache:
                cache.clear()
                arrays = reader.outputs(e["scene"], u, v, ("images", "instances") + (("amodal",) if amodal else ()))
                cache[key] = (_png(arrays["images"]), arrays["instances"], arrays.get("amodal"))
            png, ids, wholes = cache[key]
            targets = targets_of(e)
            mask = np.isin(ids, np.asarray(targets) + 1).astype(np.uint8) * 255
            if amodal:
                whole = wholes[targets].any(axis=0)
                cols["amodal_mask"].append({"bytes": _png(whole.astype(np.uint8) * 255),
                                            "path": f"{e['id']}_{u}_{v}_amodal.png"})
                n = int(whole.sum())
                cols["occlusion"].append(float(max(0.0, 1.0 - int((mask > 0).sum()) / n)) if n else None)
            cols["image"].append({"bytes": png, "path": f"{e['scene']:07d}_{u}_{v}.png"})
            cols["mask"].append({"bytes": _png(mask), "path": f"{e['id']}_{u}_{v}_mask.png"})
            for name, value in (("text", str(e["text"])), ("family", str(e["family"])),
                                ("num_relations", int(e["num_relations"])), ("scene", int(e["scene"])),
                                ("u", u), ("v", v), ("expression", e["id"]), ("targets", targets)):
                cols[name].append(value)
            bar.update(1)
        name = f"{split}-{k:05d}-of-{nfiles:05d}.parquet"
        pq.write_table(pa.table(cols, schema=schema), folder / name, compression="zstd")
        names.append(name)
    return names


def _card(reader: Reader, splits: dict[str, dict], views, amodal: bool = False) -> str:
    m = reader.manifest
    cfg = m.get("config", {})
    lines = ["---", f"license: {LICENSE}", "pretty_name: CLEVR-REMV", "language:", "- en",
             "task_categories:", "- image-segmentation", "tags:", "- referring-expression-segmentation",
             "- multi-view", "- light-field", "- synthetic", "- clevr", "configs:", "- config_name: default",
             "  data_files:"]
    for split in splits:
        lines += [f"  - split: {split}", f"    path: data/{split}-*.parquet"]
    lines += ["dataset_info:", "  features:"]
    for name, feat in _features(amodal).items():
        if feat["_type"] == "Image":
            lines += [f"  - name: {name}", "    dtype: image"]
        elif feat["_type"] == "List":
            lines += [f"  - name: {name}", "    list: int32"]
        else:
            lines += [f"  - name: {name}", f"    dtype: {feat['dtype']}"]
    lines += ["  splits:"]
    for split, info in splits.items():
        lines += [f"  - name: {split}", f"    num_examples: {info['rows']}"]
    lines += ["---", ""]
    rc, rig = cfg.get("render", {}), cfg.get("rig", {})
    settings = {"format_version": m.get("format_version"), "generator_version": m.get("generator", {}).get("version"),
                "config_digest": m.get("config_digest"), "seed": m.get("seed"), "scenes": m.get("scenes"),
                "grid": m.get("grid"), "resolution": m.get("resolution"), "baseline": rig.get("baseline"),
                "samples": rc.get("samples"), "denoise": rc.get("denoise"), "views_exported": [list(x) for x in views]}
    body = f"""# CLEVR-REMV (multi-view referring expression segmentation)

Synthetic CLEVR scenes rendered by Blender Cycles from a {m['grid'][0]}x{m['grid'][1]} light-field
camera grid, with referring expressions from templates. Generated by clevr-remv {__version__} and
exported with `clevr-remv export hf`.

One row per (expression, view where the expression is valid): `image` is the view, `mask` the
union of the targets' pixels in it (255 inside), `text` the expression, `family` and
`num_relations` its template family and number of relations, `scene`, `u`, `v` the scene and
the view (row, column of the grid), `expression` its id and `targets` the referred objects.{_AMODAL_CARD if amodal else ""}

| split | rows |
|---|---|
""" + "".join(f"| {s} | {info['rows']} |\n" for s, info in splits.items()) + f"""
```python
from datasets import load_dataset
ds = load_dataset("path/to/this/folder")   # or the hub name once pushed
row = ds["train"][0]
row["image"], row["mask"], row["text"]      # PIL images and the expression
```

Croissant metadata: `croissant.json` (load with `mlcroissant.Dataset("croissant.json")`).

## Generation settings

```json
{json.dumps(settings, indent=2)}
```

## License and citation

Licensed {LICENSE} (the CLEVR objects and materials are CC BY 4.0). Please cite the dataset's
source and CLEVR:

```bibtex
{CITATION}
```
"""
    return "\n".join(lines) + body


def _croissant(reader: Reader, files: dict[str, list[str]], folder: Path, amodal: bool = False) -> dict:
    m = reader.manifest
    dist = []
    for names in files.values():
        for name in names:
            dist.append({"@type": "cr:FileObject", "@id": f"data/{name}", "name": f"data/{name}",
                         "contentUrl": f"data/{name}", "encodingFormat": "application/x-parquet",
                         "sha256": sha256_file(folder / "data" / name)})
    dist.append({"@type": "cr:FileSet", "@id": "parquet-files", "name": "parquet-files",
                 "description": "the Parquet shards of every split", "encodingFormat": "application/x-parquet",
                 "includes": "data/*.parquet"})
    types = {"Image": "sc:ImageObject", "string": "sc:Text", "int32": "sc:Integer", "int64": "sc:Integer",
             "float32": "sc:Float"}
    descriptions = {**DESCRIPTIONS, **AMODAL_DESCRIPTIONS}
    fields = []
    for name, feat in _features(amodal).items():
        dtype = types["Image"] if feat["_type"] == "Image" else types[feat.get("dtype", "int32")]
        field = {"@type": "cr:Field", "@id": f"rows/{name}", "name": name, "description": descriptions[name],
                 "dataType": dtype, "source": {"fileSet": {"@id": "parquet-files"}, "extract": {"column": name}}}
        if feat["_type"] == "Image":
            field["source"]["transform"] = {"jsonPath": "bytes"}
        if feat["_type"] == "List":
            field["dataType"] = "sc:Integer"
            field["repeated"] = True
        fields.append(field)
    fields.append({"@type": "cr:Field", "@id": "rows/split", "name": "split", "dataType": "sc:Text",
                   "description": "the split the row belongs to",
                   "source": {"fileSet": {"@id": "parquet-files"}, "extract": {"fileProperty": "filename"},
                              "transform": {"regex": "^([A-Za-z0-9_.-]+)-\\d{5}-of-\\d{5}\\.parquet$"}}})
    return {
        "@context": {
            "@language": "en", "@vocab": "https://schema.org/", "sc": "https://schema.org/",
            "cr": "http://mlcommons.org/croissant/", "rai": "http://mlcommons.org/croissant/RAI/",
            "dct": "http://purl.org/dc/terms/", "citeAs": "cr:citeAs", "column": "cr:column",
            "conformsTo": "dct:conformsTo", "data": {"@id": "cr:data", "@type": "@json"},
            "dataType": {"@id": "cr:dataType", "@type": "@vocab"}, "examples": {"@id": "cr:examples", "@type": "@json"},
            "extract": "cr:extract", "field": "cr:field", "fileProperty": "cr:fileProperty",
            "fileObject": "cr:fileObject", "fileSet": "cr:fileSet", "format": "cr:format",
            "includes": "cr:includes", "isLiveDataset": "cr:isLiveDataset", "jsonPath": "cr:jsonPath",
            "key": "cr:key", "md5": "cr:md5", "parentField": "cr:parentField", "path": "cr:path",
            "recordSet": "cr:recordSet", "references": "cr:references", "regex": "cr:regex",
            "repeated": "cr:repeated", "replace": "cr:replace", "separator": "cr:separator",
            "source": "cr:source", "subField": "cr:subField", "transform": "cr:transform",
            "equivalentProperty": "cr:equivalentProperty", "samplingRate": "cr:samplingRate",
        },
        "@type": "sc:Dataset",
        "name": "CLEVR-REMV",
        "conformsTo": "http://mlcommons.org/croissant/1.0",
        "description": (f"Multi-view referring expression segmentation: CLEVR scenes rendered from a "
                        f"{m['grid'][0]}x{m['grid'][1]} light-field camera grid; one record per "
                        f"(expression, valid view)."),
        "citeAs": CITATION,
        "license": "https://creativecommons.org/licenses/by/4.0/",
        "url": "https://github.com/clevr-remv/clevr-remv",
        "version": str(m.get("format_version", "1.0")) + ".0",
        "datePublished": str(m.get("created", ""))[:10],
        "distribution": dist,
        "recordSet": [{"@type": "cr:RecordSet", "@id": "rows", "name": "rows",
                       "description": "one row per (expression, valid view)", "field": fields}],
    }


def export_hf(root, out, views="all", splits=None, amodal: bool = False) -> dict:
    """Write the folder; returns {split: rows}.  ``amodal``: the amodal_mask and occlusion
    columns too (datasets of format 1.4 on)."""
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        from ..errors import UsageError
        raise UsageError("export hf writes Parquet with pyarrow, which is missing; "
                         "pip install 'clevr-remv[hf]'") from None
    reader = open_dataset(Path(root))
    try:
        if amodal and not reader.has_amodal():
            from ..errors import UsageError
            raise UsageError(f"'{root}' has no amodal masks (format {reader.manifest.get('format_version')}; "
                             f"they are stored from format 1.4 on); export without --amodal, or generate it again")
        sel = resolve_views(views, reader.grid)
        wanted = check_splits(reader, splits) or sorted({e["split"] for e in reader.shards},
                                                       key=list(reader.manifest.get("splits", {})).index)
        items = {split: _split_rows(reader, split, sel) for split in wanted}
        with AtomicFolder(Path(out), "export folder") as tmp:
            (tmp / "data").mkdir()
            files = {}
            with progress_bar(sum(len(x) for x in items.values()), "export hf", "rows") as bar:
                for split, rows in items.items():
                    files[split] = _write_split(reader, split, rows, tmp / "data", bar, amodal)
            info = {split: {"rows": len(rows)} for split, rows in items.items()}
            (tmp / "README.md").write_text(_card(reader, info, sel, amodal), encoding="utf-8")
            (tmp / "croissant.json").write_text(json.dumps(_croissant(reader, files, tmp, amodal), indent=1) + "\n",
                                                encoding="utf-8")
    finally:
        reader.close()
    return {split: info["rows"] for split, info in info.items()}
