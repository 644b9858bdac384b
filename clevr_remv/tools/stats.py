"""``clevr-remv stats DIR``: dataset statistics per split, beside the source's own numbers
(thesis section 6.4, Figures 6.5 to 6.7).

Terms, as the tables print them:

* a *pair* is an (expression, scene) pair: the source's "image-text pairs" (about 8 per scene);
* *objects per pair*: the number of objects in the scene of each pair (the source's mean
  "objects per image", counted over its pairs);
* *words per expression*: :func:`clevr_remv.language.templates.word_count` of each text;
* *(expression, view) pairs not valid*: of all expressions x all U x V views, those whose
  ``valid_views`` entry is false, i.e. pairs a view-level training set leaves out.  They are
  split by reason: the target shows fewer than ``expressions.min_visible_pixels`` pixels in that
  view; else the anchor of a relation does; else the program picks another object with that
  view's own directions.  Expressions a generator drops as a whole never reach a shard and are
  not counted there;
* *target mix*: expressions naming one object, several, or none (the generalized setting);
  *relations*: how many relations each expression chains (0, 1, 2); *words by family*: the
  mean words per expression of each family.  A hidden target of a several-target expression
  is any of its targets hidden; a no-target expression has none;
* *objects with 0 px in some view*: objects no pixel of which shows in at least one view
  (out of that view's frame, or wholly behind others; :func:`clevr_remv.scene.visibility.unseen`);
* *expressions dropped (hidden in a view)*: those, where the scene records say how many
  (``record["expressions"]["dropped_hidden"]``), as a share of the expressions chosen
  (kept + dropped); "not recorded" for datasets whose records do not carry it;
* *target occlusion* (datasets with amodal masks, format 1.4 on): ``1 - visible / amodal`` of
  the target in each valid (expression, view) pair (scene/amodal.py; for several targets their
  summed pixels; no-target expressions have none), in the buckets 0,
  (0, 25%], (25%, 50%], > 50%, in the central view, the four corners and all valid views, and
  its mean by distance (|u - uc| + |v - vc|) from the centre.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import h5py
import numpy as np

from ..errors import UsageError
from ..language.templates import word_count
from ..read.checks import check_shard
from ..read.reader import shard_errors
from ..scene import amodal, lightfield, visibility
from ..store import refexps
from ..store.refexps import read_refexps
from .common import min_visible_pixels, open_dataset, shard_path

# Thesis section 6.4.  (Section 6.3.3 gives 11,992 val and 11,989 test pairs instead: the
# thesis disagrees with itself; 6.4 is the section with the per-split statistics.)
SOURCE = {
    "train": {"scenes": 7000, "pairs": 55966, "objects_per_pair": 6.529, "words_per_expression": 8.0175},
    "val": {"scenes": 1500, "pairs": 11989, "objects_per_pair": 6.528, "words_per_expression": 8.0174},
    "test": {"scenes": 1500, "pairs": 11994, "objects_per_pair": 6.495, "words_per_expression": 8.042},
}
_P = sum(v["pairs"] for v in SOURCE.values())
SOURCE_ALL = {"scenes": 10000, "pairs": _P,
              **{k: round(sum(v["pairs"] * v[k] for v in SOURCE.values()) / _P, 4)
                 for k in ("objects_per_pair", "words_per_expression")}}  # pair-weighted means
SOURCE_NOT_VALID = "< 0.1%"          # "we remove those missing pairs (< 0.1%)" (section 6.3.3)
SOURCE_BYTES_PER_SCENE = 150e9 / 10000  # "a total size of over 150GB" at 480x320 (section 6.3.2)
SOURCE_SCENES = 10000


def chi2_sf(x: float, dof: int) -> float:
    """Survival function of the chi-square distribution, P(X > x), closed forms for integer dof."""
    if dof % 2 == 0:
        term = total = math.exp(-x / 2)
        for i in range(1, dof // 2):
            term *= (x / 2) / i
            total += term
        return total
    q = math.erfc(math.sqrt(x / 2))
    k = 1
    while k < dof:  # Q(x; k + 2) = Q(x; k) + (x/2)^(k/2) e^(-x/2) / Gamma(k/2 + 1)
        q += math.exp((k / 2) * math.log(x / 2) - x / 2 - math.lgamma(k / 2 + 1)) if x > 0 else 0.0
        k += 2
    return q


def uniform_p(counts) -> float:
    """p-value of Pearson's chi-square test that ``counts`` (one per category) are uniform.
    Used to check that layouts draw colours, shapes, materials and sizes as CLEVR does."""
    counts = np.asarray(counts, dtype=float)
    expected = counts.sum() / len(counts)
    return chi2_sf(float(((counts - expected) ** 2 / expected).sum()), len(counts) - 1)


def _empty() -> dict:
    return {"shards": 0, "scenes": 0, "bytes": 0, "pairs": 0, "objects": Counter(), "words": Counter(),
            "families": Counter(), "with_relation": 0, "view_pairs": 0, "not_valid": 0,
            "not_valid_target_hidden": 0, "not_valid_anchor_hidden": 0, "not_valid_predicate": 0,
            "valid_in_no_view": 0, "dropped_hidden": 0, "scenes_with_drop_record": 0,
            "target_mix": Counter(), "relations": Counter(), "family_words": Counter(),
            "scene_objects": 0, "objects_unseen": 0,
            "occ_shards": 0, "occ_centre": Counter(), "occ_corners": Counter(), "occ_all": Counter(),
            "occ_ring_sum": Counter(), "occ_ring_n": Counter()}


def _add(acc: dict, other: dict) -> None:
    for k, v in other.items():
        if isinstance(v, Counter):
            acc[k].update(v)
        else:
            acc[k] += v


def collect(root: Path) -> dict:
    """Raw counts per split (Counters for the histograms)."""
    reader = open_dataset(root)
    min_px = min_visible_pixels(reader)
    splits: dict[str, dict] = {}
    try:
        for entry in reader.shards:
            acc = splits.setdefault(entry["split"], _empty())
            path = shard_path(reader, entry)
            try:
                f = h5py.File(path, "r")
            except OSError as exc:
                raise UsageError(f"cannot read shard '{path}' ({exc}); run 'clevr-remv validate {root}'") from None
            with f, shard_errors(path, root):
                check_shard(f, path, root)
                scenes = [json.loads(s) for s in f["scenes"].asstr()[()]]
                visible = f["visible_pixels"][()]
                amodal_px = f["amodal_pixels"][()] if "amodal_pixels" in f else None
                exprs = read_refexps(f)
            acc["shards"] += 1
            acc["occ_shards"] += int(amodal_px is not None)
            acc["scenes"] += len(scenes)
            for px in visible:
                n, k = visibility.unseen(px)
                acc["scene_objects"] += n
                acc["objects_unseen"] += k
            acc["bytes"] += int(entry.get("bytes") or path.stat().st_size)
            for sc in scenes:  # newer scene records say what the generator's drop rule removed
                rec = sc.get("expressions")
                if isinstance(rec, dict) and isinstance(rec.get("dropped_hidden"), int):
                    acc["dropped_hidden"] += rec["dropped_hidden"]
                    acc["scenes_with_drop_record"] += 1
            for e in exprs:
                scene = scenes[e["scene"]]
                acc["pairs"] += 1
                acc["objects"][len(scene["objects"])] += 1
                words = word_count(str(e["text"]))
                acc["words"][words] += 1
                acc["families"][str(e["family"])] += 1
                acc["family_words"][str(e["family"])] += words
                targets, anchors = e["targets"], refexps.anchors(e, scene)
                acc["target_mix"][("none", "single")[len(targets)] if len(targets) < 2 else "multi"] += 1
                acc["relations"][int(e["num_relations"])] += 1
                acc["with_relation"] += int(e["num_relations"] > 0)
                valid = e["valid_views"]
                acc["view_pairs"] += valid.size
                bad = ~valid
                acc["not_valid"] += int(bad.sum())
                acc["valid_in_no_view"] += int(not valid.any())
                vis = visible[e["scene"]]
                hidden_t = np.zeros_like(bad)
                for t in targets:
                    hidden_t |= vis[:, :, t] < min_px
                hidden_a = np.zeros_like(bad)
                for a in anchors if targets else ():
                    hidden_a |= (vis[:, :, a] < min_px) & ~hidden_t
                acc["not_valid_target_hidden"] += int((bad & hidden_t).sum())
                acc["not_valid_anchor_hidden"] += int((bad & hidden_a).sum())
                acc["not_valid_predicate"] += int((bad & ~hidden_t & ~hidden_a).sum())
                if amodal_px is not None and targets:
                    _add_occlusion(acc, valid, amodal.targets_occlusion(vis, amodal_px[e["scene"]], targets))
    finally:
        reader.close()
    return {"reader_info": {"root": str(root), "grid": list(reader.grid),
                            "resolution": [reader.width, reader.height],
                            "min_visible_pixels": min_px, "scenes_planned": reader.manifest.get("scenes"),
                            "complete": bool(reader.manifest.get("complete")),
                            "split_shares": reader.manifest.get("config", {}).get("output", {}).get("splits", {})},
            "splits": splits}


def _add_occlusion(acc: dict, valid: np.ndarray, occ: np.ndarray) -> None:
    """Count the targets' occlusion ([U, V]) in the valid views of one expression."""
    bucket = amodal.occlusion_bucket(occ)
    rows, cols = valid.shape
    use = valid & (bucket >= 0)
    names = amodal.OCCLUSION_BUCKETS
    for name, n in zip(names, np.bincount(bucket[use], minlength=len(names))):
        acc["occ_all"][name] += int(n)
    if use[rows // 2, cols // 2]:
        acc["occ_centre"][names[bucket[rows // 2, cols // 2]]] += 1
    for u, v in lightfield.corner_views((rows, cols)):
        if use[u, v]:
            acc["occ_corners"][names[bucket[u, v]]] += 1
    ring = np.abs(np.arange(rows)[:, None] - rows // 2) + np.abs(np.arange(cols)[None, :] - cols // 2)
    sums = np.bincount(ring[use], weights=occ[use], minlength=rows + cols)
    counts = np.bincount(ring[use], minlength=rows + cols)
    for r in np.flatnonzero(counts):
        acc["occ_ring_sum"][int(r)] += float(sums[r])
        acc["occ_ring_n"][int(r)] += int(counts[r])


def _occlusion_figures(acc: dict) -> dict | None:
    if not acc["occ_shards"]:
        return None

    def shares(c: Counter) -> dict:
        n = sum(c.values())
        return {"pairs": n, **{b: _share(c[b], n) for b in amodal.OCCLUSION_BUCKETS}}

    return {"shards_with_amodal": acc["occ_shards"], "centre": shares(acc["occ_centre"]),
            "corners": shares(acc["occ_corners"]), "all_views": shares(acc["occ_all"]),
            "mean_by_distance_from_centre": {str(r): acc["occ_ring_sum"][r] / acc["occ_ring_n"][r]
                                             for r in sorted(acc["occ_ring_n"])}}


def _mean(counter: Counter) -> float | None:
    n = sum(counter.values())
    return sum(k * c for k, c in counter.items()) / n if n else None


def _share(a: int, b: int) -> float | None:
    return a / b if b else None


def summarise(raw: dict) -> dict:
    """The figures ``stats`` prints (and ``--json`` gives), per split and over all splits."""
    info = raw["reader_info"]
    shares = info["split_shares"] or {"train": 0.7, "val": 0.15, "test": 0.15}
    total_share = sum(shares.values()) or 1.0
    total = _empty()
    out_splits = {}
    order = [s for s in ("train", "val", "test") if s in raw["splits"]] + \
            sorted(s for s in raw["splits"] if s not in ("train", "val", "test"))
    for name in order:
        acc = raw["splits"][name]
        _add(total, acc)
        out_splits[name] = _figures(acc, SOURCE.get(name),
                                    SOURCE_SCENES * shares.get(name, 0) / total_share)
    everything = _figures(total, SOURCE_ALL, SOURCE_SCENES)
    return {**info, "splits": out_splits, "all": everything,
            "source": {"splits": SOURCE, "all": SOURCE_ALL, "not_valid": SOURCE_NOT_VALID,
                       "bytes_per_scene": SOURCE_BYTES_PER_SCENE,
                       "reference": "thesis section 6.4 (Figures 6.5-6.7); 6.3.2 for the size; 6.3.3 for dropped pairs"}}


def _figures(acc: dict, source: dict | None, scenes_at_10k: float) -> dict:
    per_scene = _share(acc["pairs"], acc["scenes"])
    fig = {
        "shards": acc["shards"], "scenes": acc["scenes"], "pairs": acc["pairs"],
        "pairs_per_scene": per_scene,
        "scenes_at_10000": round(scenes_at_10k),
        "pairs_at_10000_scenes": round(per_scene * scenes_at_10k) if per_scene is not None else None,
        "objects_per_pair": _mean(acc["objects"]),
        "objects_per_pair_histogram": {str(k): acc["objects"][k] for k in sorted(acc["objects"])},
        "words_per_expression": _mean(acc["words"]),
        "words_per_expression_histogram": {str(k): acc["words"][k] for k in sorted(acc["words"])},
        "families": {k: acc["families"][k] for k in sorted(acc["families"])},
        "family_shares": {k: acc["families"][k] / acc["pairs"] for k in sorted(acc["families"])} if acc["pairs"] else {},
        "relation_share": _share(acc["with_relation"], acc["pairs"]),
        "target_mix": {k: acc["target_mix"][k] for k in ("single", "multi", "none")},
        "target_mix_shares": {k: _share(acc["target_mix"][k], acc["pairs"]) for k in ("single", "multi", "none")},
        "relations": {str(k): acc["relations"][k] for k in sorted(acc["relations"])},
        "words_by_family": {k: acc["family_words"][k] / acc["families"][k] for k in sorted(acc["families"])},
        "view_pairs": acc["view_pairs"],
        "view_pairs_not_valid": acc["not_valid"],
        "view_pairs_not_valid_share": _share(acc["not_valid"], acc["view_pairs"]),
        "not_valid_target_hidden": acc["not_valid_target_hidden"],
        "not_valid_anchor_hidden": acc["not_valid_anchor_hidden"],
        "not_valid_predicate": acc["not_valid_predicate"],
        "not_valid_target_hidden_share": _share(acc["not_valid_target_hidden"], acc["view_pairs"]),
        "expressions_valid_in_no_view": acc["valid_in_no_view"],
        # From the scene records, where they carry it: expressions the generator dropped as a
        # whole because their target or anchor is hidden in some view (None: not recorded).
        "expressions_dropped_hidden": acc["dropped_hidden"] if acc["scenes_with_drop_record"] else None,
        "expressions_dropped_hidden_share": (_share(acc["dropped_hidden"], acc["pairs"] + acc["dropped_hidden"])
                                             if acc["scenes_with_drop_record"] else None),
        # Objects with 0 pixels in some view: out of that view's frame (a wide rig.baseline), or
        # wholly behind others there.  Expressions can only refer to the objects every view shows.
        "objects": acc["scene_objects"],
        "objects_unseen": acc["objects_unseen"],
        "objects_unseen_share": _share(acc["objects_unseen"], acc["scene_objects"]),
        "bytes": acc["bytes"],
        "bytes_per_scene": _share(acc["bytes"], acc["scenes"]),
        "target_occlusion": _occlusion_figures(acc),
    }
    if source:
        fig["source"] = source
    return fig


# -- text -------------------------------------------------------------------------------------
def _num(x, fmt="{:,.0f}") -> str:
    return "-" if x is None else fmt.format(x)


def _pct(x, digits=3) -> str:
    return "-" if x is None else f"{100 * x:.{digits}f}%"


def _mb(x) -> str:
    return "-" if x is None else f"{x / 1e6:.2f} MB"


def _hist(h: dict) -> str:
    return "  ".join(f"{k}:{v}" for k, v in h.items()) or "-"


def format_table(s: dict) -> str:
    w, h = s["resolution"]
    lines = [f"CLEVR-REMV statistics of {s['root']}: grid {s['grid'][0]}x{s['grid'][1]}, {w}x{h}, "
             f"{s['all']['scenes']} scenes in {s['all']['shards']} shards"
             + ("" if s["complete"] else f" (INCOMPLETE: {s['scenes_planned']} planned)"),
             f"Source: thesis section 6.4 (10,000 scenes at 480x320, 70/15/15).  "
             f"A view counts as showing an object from {s['min_visible_pixels']} pixel(s).", ""]
    rows = [
        ("(expression, scene) pairs", lambda f: _num(f["pairs"]), lambda src: _num(src["pairs"])),
        ("  per scene", lambda f: _num(f["pairs_per_scene"], "{:.3f}"),
         lambda src: f"{src['pairs'] / src['scenes']:.3f}"),
        ("  extrapolated to 10,000 scenes", lambda f: _num(f["pairs_at_10000_scenes"]) + f" ({_num(f['scenes_at_10000'])} sc.)",
         lambda src: _num(src["pairs"]) + f" ({_num(src['scenes'])} sc.)"),
        ("objects per pair (mean)", lambda f: _num(f["objects_per_pair"], "{:.3f}"),
         lambda src: f"{src['objects_per_pair']:.3f}"),
        ("words per expression (mean)", lambda f: _num(f["words_per_expression"], "{:.4f}"),
         lambda src: f"{src['words_per_expression']:.4f}"),
        ("share with a relation", lambda f: _pct(f["relation_share"], 1), lambda src: "-"),
        ("(expression, view) pairs not valid", lambda f: _pct(f["view_pairs_not_valid_share"]),
         lambda src: SOURCE_NOT_VALID + " (removed)"),
        ("  target hidden in the view", lambda f: _pct(_share(f["not_valid_target_hidden"], f["view_pairs"])),
         lambda src: "-"),
        ("  anchor hidden in the view", lambda f: _pct(_share(f["not_valid_anchor_hidden"], f["view_pairs"])),
         lambda src: "-"),
        ("  relation changes in the view", lambda f: _pct(_share(f["not_valid_predicate"], f["view_pairs"])),
         lambda src: "-"),
        ("expressions valid in no view", lambda f: _num(f["expressions_valid_in_no_view"]), lambda src: "-"),
        ("expressions dropped (hidden in a view)",
         lambda f: "not recorded" if f["expressions_dropped_hidden"] is None else
         f"{f['expressions_dropped_hidden']:,} ({_pct(f['expressions_dropped_hidden_share'])})",
         lambda src: SOURCE_NOT_VALID + " (removed)"),
        ("objects with 0 px in some view", lambda f: f"{f['objects_unseen']:,} ({_pct(f['objects_unseen_share'], 1)})",
         lambda src: "-"),
        ("bytes per scene", lambda f: _mb(f["bytes_per_scene"]),
         lambda src: f"> {SOURCE_BYTES_PER_SCENE / 1e6:.0f} MB (480x320)"),
    ]
    label_w = max(len(r[0]) for r in rows) + 2
    for name, fig in list(s["splits"].items()) + [("all", s["all"])]:
        src = fig.get("source")
        lines.append(f"{name}: {fig['scenes']:,} scenes in {fig['shards']} shards")
        lines.append(f"  {'':<{label_w}}{'this run':>22}  {'source' if src else '':>22}")
        for label, ours, theirs in rows:
            lines.append(f"  {label:<{label_w}}{ours(fig):>22}  {theirs(src) if src else '':>22}")
        fams = ", ".join(f"{k} {fig['families'][k]:,} ({100 * v:.1f}%)" for k, v in fig["family_shares"].items())
        lines.append(f"  family mix: {fams or '-'}")
        mix = fig["target_mix_shares"]
        lines.append("  targets: " + ", ".join(f"{k} {fig['target_mix'][k]:,} ({_pct(mix[k], 1)})" for k in mix)
                     + "; relations: " + (_hist(fig["relations"])))
        lines.append("  words by family: " + (", ".join(f"{k} {v:.2f}" for k, v in fig["words_by_family"].items())
                                             or "-"))
        lines.append(f"  objects per pair, histogram: {_hist(fig['objects_per_pair_histogram'])}")
        lines.append(f"  words per expression, histogram: {_hist(fig['words_per_expression_histogram'])}")
        lines += _occlusion_lines(fig.get("target_occlusion"))
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _occlusion_lines(occ: dict | None) -> list[str]:
    if occ is None:
        return ["  target occlusion: no amodal masks in this dataset (format 1.4 on)"]
    out = ["  target occlusion (1 - visible/amodal) over valid (expression, view) pairs:",
           "    " + f"{'':<10}{'pairs':>9}" + "".join(f"{b:>12}" for b in amodal.OCCLUSION_BUCKETS)]
    for label, key in (("centre", "centre"), ("corners", "corners"), ("all views", "all_views")):
        row = occ[key]
        out.append("    " + f"{label:<10}{row['pairs']:>9,}" + "".join(f"{_pct(row[b], 1):>12}"
                                                                     for b in amodal.OCCLUSION_BUCKETS))
    ring = "  ".join(f"{r}: {_pct(m, 1)}" for r, m in occ["mean_by_distance_from_centre"].items())
    out.append(f"    mean by distance from the centre (|u-uc|+|v-vc|): {ring or '-'}")
    return out


# -- plots ------------------------------------------------------------------------------------
def draw_plots(name: str, fig: dict):
    """The figure of one split (a matplotlib Figure): (a) objects per pair, (b) words per
    expression; integer ticks on both axes, the legend below each plot (never over a bar)."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    src = fig.get("source") or {}
    f = Figure(figsize=(10, 4.2), dpi=100, layout="constrained")
    axes = f.subplots(1, 2)
    for ax, key, mean_key, xlabel in (
            (axes[0], "objects_per_pair_histogram", "objects_per_pair", "objects in the scene"),
            (axes[1], "words_per_expression_histogram", "words_per_expression", "words in the expression")):
        hist = {int(k): v for k, v in fig[key].items()}
        ax.bar(list(hist), list(hist.values()), color="#4878a8", width=0.8, label="pairs")
        if fig[mean_key] is not None:
            ax.axvline(fig[mean_key], color="#c03030", lw=1.5, label=f"mean {fig[mean_key]:.3f}")
        if src.get(mean_key) is not None:
            ax.axvline(src[mean_key], color="#303030", lw=1.2, ls="--", label=f"source {src[mean_key]:.4g}")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("pairs")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # counts: no 0.25 ticks
        if hist:
            ax.set_xticks(range(min(hist), max(hist) + 1))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=8, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3)
    axes[0].set_title(f"(a) {name}: objects per pair ({fig['pairs']:,} pairs)", fontsize=10)
    axes[1].set_title(f"(b) {name}: words per expression", fontsize=10)
    return f


def write_plots(s: dict, folder: Path) -> list[Path]:
    """One PNG per split, as the source's Figures 6.5-6.7 (see :func:`draw_plots`); our mean
    as a solid line, the source's as a dashed one."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, fig in list(s["splits"].items()) + [("all", s["all"])]:
        path = folder / f"stats-{name}.png"
        draw_plots(name, fig).savefig(path)
        written.append(path)
    return written
