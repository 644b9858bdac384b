"""Is the share of (expression, view) pairs that are not valid a matter of resolution?

Compares runs of the same seed and settings at different image sizes on the scenes they share
(same global index and same object layout: a scene can differ between runs when the central
view's visibility check re-samples it), and on those the expressions they share (same text).

    python bench/visibility_resolution.py RUN_96x64 RUN_160x108 RUN_480x320

Prints, per run: scenes and (expression, view) pairs compared, the share not valid, split by
reason (target hidden / anchor hidden / relation), and how many pairs not valid in one run are
valid in the highest-resolution one.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import h5py
import numpy as np

from clevr_remv.scene import lightfield
from clevr_remv.store import refexps
from clevr_remv.store.refexps import read_refexps
from clevr_remv.tools.common import min_visible_pixels, open_dataset


def load(root: Path) -> dict:
    reader = open_dataset(root)
    min_px = min_visible_pixels(reader)
    out = {"resolution": (reader.width, reader.height), "min_px": min_px, "scenes": {}}
    for entry in reader.shards:
        with h5py.File(reader.root / entry["path"], "r") as f:
            scenes = [json.loads(s) for s in f["scenes"].asstr()[()]]
            vis = f["visible_pixels"][()]
            exprs = read_refexps(f)
        for row, sc in enumerate(scenes):
            layout = json.dumps([[o["shape"], o["color"], o["size"], o["material"],
                                  [round(x, 6) for x in o["position"]]] for o in sc["objects"]])
            out["scenes"][sc["index"]] = {"layout": layout, "scene": sc, "visible": vis[row],
                                          "exprs": {str(e["text"]): e for e in exprs if e["scene"] == row}}
    reader.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    args = ap.parse_args()
    runs = [load(r) for r in args.runs]
    common = set(runs[0]["scenes"])
    for r in runs[1:]:
        common &= set(r["scenes"])
    same = sorted(i for i in common if len({r["scenes"][i]["layout"] for r in runs}) == 1)
    texts = {i: set.intersection(*(set(r["scenes"][i]["exprs"]) for r in runs)) for i in same}
    print(f"{len(same)} scenes with the same layout in all {len(runs)} runs (of {len(common)} indices in common), "
          f"{sum(len(t) for t in texts.values())} expressions in common")
    best = max(range(len(runs)), key=lambda k: runs[k]["resolution"][0])
    for k, r in enumerate(runs):
        n = bad = hid_t = hid_a = rel = rescued = out_of_frame = 0
        rings: dict[int, list[int]] = {}  # Manhattan distance from the central view -> [pairs, not valid]
        tiny = []  # pixels the target shows at the best resolution where it is hidden here
        for i in same:
            sc = r["scenes"][i]
            for t in texts[i]:
                e = sc["exprs"][t]
                valid = e["valid_views"]
                n += valid.size
                nv = ~valid
                gu, gv = valid.shape
                dist = np.abs(np.arange(gu)[:, None] - gu // 2) + np.abs(np.arange(gv)[None, :] - gv // 2)
                for d in np.unique(dist):
                    ring = rings.setdefault(int(d), [0, 0])
                    ring[0] += int((dist == d).sum())
                    ring[1] += int(nv[dist == d].sum())
                bad += int(nv.sum())
                vt = sc["visible"][:, :, e["object"]] < r["min_px"]
                a = refexps.anchor(e, sc["scene"])
                va = (sc["visible"][:, :, a] < r["min_px"]) & ~vt if a is not None else np.zeros_like(vt)
                hid_t += int((nv & vt).sum())
                w, h = r["resolution"]
                pos = sc["scene"]["objects"][e["object"]]["position"]
                for u, v in zip(*np.nonzero(nv & vt)):  # the target's centre outside the picture?
                    (x, y), _ = lightfield.project(sc["scene"]["rig"], int(u), int(v), pos)
                    out_of_frame += int(not (0 <= x < w and 0 <= y < h))
                hid_a += int((nv & va).sum())
                rel += int((nv & ~vt & ~va).sum())
                hi = runs[best]["scenes"][i]
                rescued += int((nv & hi["exprs"][t]["valid_views"]).sum())
                if k != best:
                    tiny += hi["visible"][:, :, e["object"]][nv & vt].tolist()
        w, h = r["resolution"]
        line = (f"{w}x{h}: {n} (expression, view) pairs, not valid {bad} ({100 * bad / n:.3f}%): "
                f"target hidden {hid_t} (centre out of frame {out_of_frame}), anchor hidden {hid_a}, relation {rel}")
        if k != best:
            bw, bh = runs[best]["resolution"]
            line += f"; valid at {bw}x{bh}: {rescued} of {bad}"
            if tiny:
                line += (f"; the hidden targets show {np.median(tiny):.0f} px (median, max {max(tiny)}) "
                         f"at {bw}x{bh}")
        print(line)
        print("  not valid by distance from the central view: " + ", ".join(
            f"{d}: {100 * b / max(a, 1):.2f}%" for d, (a, b) in sorted(rings.items())))


if __name__ == "__main__":
    main()
