"""Fidelity to the source (docs/fidelity.md): object sizes, expressions per scene, sentence length,
vanished targets, family mix, and sample sentences.

    python bench/fidelity.py layout --scenes 4000 --seed 15      # layout only, no rendering
    python bench/fidelity.py dataset OUT                          # a generated run

``layout`` samples scene records and generates expressions without visibility (no render);
``dataset`` reads a finished run's shards and manifest.
"""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path

import h5py
import numpy as np

from clevr_remv import config
from clevr_remv.language import selection, templates, validity
from clevr_remv.scene import layout
from clevr_remv.tools import stats


def size_draws(cfg: dict, seed: int, record: dict) -> dict:
    """Every size drawn for a stored scene: its layout's draws plus those of the layouts the
    central-view pixel check rejected before it (re-sampled: a layout is a pure function)."""
    total = dict.fromkeys(layout.SIZES, 0)
    for attempt in range(record["layout"]["attempt"] + 1):
        s = layout.sample_scene(cfg, seed, record["index"], attempt)
        for name, n in s["layout"]["size_draws"].items():
            total[name] += n
    assert [o["size"] for o in s["objects"]] == [o["size"] for o in record["objects"]], "same code as the run"
    return total


def object_report(records: list[dict], draws: list[dict] | None = None) -> dict:
    objs = [o for r in records for o in r["objects"]]
    draws = draws if draws is not None else [r["layout"]["size_draws"] for r in records]
    by_count = collections.defaultdict(list)
    for r in records:
        by_count[len(r["objects"])] += [o["size"] == "large" for o in r["objects"]]
    drawn = [sum(d[name] for d in draws) for name in layout.SIZES]
    out = {"scenes": len(records), "objects": len(objs),
           "size_draws": sum(drawn), "large_share_as_drawn": drawn[list(layout.SIZES).index("large")] / sum(drawn),
           "size_draws_uniform_p": stats.uniform_p(drawn),
           "large_share": sum(o["size"] == "large" for o in objs) / len(objs),
           "large_share_by_count": {n: round(float(np.mean(v)), 4) for n, v in sorted(by_count.items())}}
    for attr, values in (("size", list(layout.SIZES)), ("color", list(layout.COLORS)),
                         ("shape", layout.SHAPES), ("material", layout.MATERIALS)):
        out[f"{attr}_uniform_p"] = stats.uniform_p([sum(o[attr] == v for o in objs) for v in values])
    few = [o for r in records if len(r["objects"]) <= 7 for o in r["objects"]]
    out["size_uniform_p_up_to_7_objects"] = stats.uniform_p([sum(o["size"] == v for o in few) for v in layout.SIZES])
    return out


def expression_report(exprs: list[dict], per_scene: list[int], shortfalls: list[tuple[int, str]]) -> dict:
    words = [templates.word_count(e["text"]) for e in exprs]
    fam = collections.Counter(e["family"] for e in exprs)
    fam_words = {f: round(float(np.mean([templates.word_count(e["text"]) for e in exprs if e["family"] == f])), 3)
                 for f in sorted(fam)}
    return {"expressions": len(exprs), "per_scene": float(np.mean(per_scene)),
            "per_scene_histogram": dict(sorted(collections.Counter(per_scene).items())),
            "mean_words": float(np.mean(words)), "words_by_family": fam_words,
            "family_share": {f: round(n / len(exprs), 4) for f, n in sorted(fam.items())},
            "scenes_short": dict(collections.Counter(r for _, r in shortfalls)),
            "scenes_short_by_objects": dict(collections.Counter(f"{n} objects: {r}" for n, r in shortfalls))}


def sample_sentences(exprs: list[dict], k: int, seed: int) -> list[str]:
    gen = np.random.default_rng(seed)
    return [exprs[i]["text"] for i in gen.choice(len(exprs), min(k, len(exprs)), replace=False)]


def run_layout(args) -> dict:
    cfg = config.load_config(args.config)
    records, exprs, per_scene, short = [], [], [], []
    for i in range(args.scenes):
        s = layout.sample_scene(cfg, args.seed, i)
        records.append(s)
        got = selection.select(s, args.seed, cfg["expressions"]["per_scene"])
        exprs += got.kept
        per_scene.append(len(got.kept))
        if got.shortfall:
            short.append((len(s["objects"]), got.shortfall))
    return {"objects": object_report(records), "expressions": expression_report(exprs, per_scene, short),
            "sentences": sample_sentences(exprs, args.sentences, args.seed)}


def run_dataset(args) -> dict:
    root = Path(args.root)
    manifest = json.loads((root / "manifest.json").read_text())
    cfg = config.validate(manifest["config"])
    records, exprs, per_scene, short = [], [], [], []
    hidden_objects = objects = 0
    pairs = not_valid = 0
    dropped = 0
    for entry in manifest["shards"]:
        with h5py.File(root / entry["path"], "r") as f:
            recs = [json.loads(x) for x in f["scenes"][:]]
            rows = f["refexps/scene"][:]
            texts = [t.decode() if isinstance(t, bytes) else t for t in f["refexps/text"][:]]
            fams = [t.decode() if isinstance(t, bytes) else t for t in f["refexps/family"][:]]
            valid = f["refexps/valid_views"][:]
            vis = f["visible_pixels"][:]
        min_px = manifest["config"]["expressions"]["min_visible_pixels"]
        for row, r in enumerate(recs):
            records.append(r)
            n = len(r["objects"])
            per_scene.append(int((rows == row).sum()))
            hidden_objects += int(validity.hidden_objects(vis[row], n, min_px).sum())
            objects += n
            info = r.get("expressions", {})
            dropped += info.get("dropped_hidden", 0)
            if info.get("shortfall"):
                short.append((n, info["shortfall"]))
        exprs += [{"text": t, "family": fa} for t, fa in zip(texts, fams)]
        pairs += valid.size
        not_valid += int(valid.size - valid.sum())
    rep = expression_report(exprs, per_scene, short)
    rep["expressions_dropped_hidden"] = dropped
    rep["expressions_dropped_hidden_share"] = dropped / (dropped + len(exprs)) if exprs or dropped else 0.0
    rep["view_pairs"] = pairs
    rep["view_pairs_not_valid"] = not_valid
    rep["objects_hidden_in_some_view_share"] = hidden_objects / objects if objects else 0.0
    draws = [size_draws(cfg, manifest["seed"], r) for r in records]
    obj = object_report(records, draws)
    obj["visibility_resamples"] = sum(r["layout"]["attempt"] for r in records)
    return {"objects": obj, "expressions": rep,
            "sentences": sample_sentences(exprs, args.sentences, args.seed)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="mode", required=True)
    a = sub.add_parser("layout", help="layout-only statistics (no rendering)")
    a.add_argument("--scenes", type=int, default=4000)
    a.add_argument("--seed", type=int, default=15)
    a.add_argument("--config", default=None)
    b = sub.add_parser("dataset", help="statistics of a generated run")
    b.add_argument("root")
    b.add_argument("--seed", type=int, default=15, help="seed of the sentence sample")
    for p in (a, b):
        p.add_argument("--sentences", type=int, default=30, help="random sentences to print")
        p.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rep = run_layout(args) if args.mode == "layout" else run_dataset(args)
    if args.json:
        print(json.dumps(rep, indent=2))
        return
    for section in ("objects", "expressions"):
        print(f"== {section}")
        for k, v in rep[section].items():
            print(f"  {k}: {v:.4g}" if isinstance(v, float) else f"  {k}: {v}")
    print("== sentences")
    for t in rep["sentences"]:
        print("  -", t)


if __name__ == "__main__":
    main()
