"""Figures for the README: one scene's U x V views and instance maps as mosaics.

    python bench/figures.py DIR --scene 0 --out docs/images
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from clevr_remv.data import Reader

PALETTE = np.array([[40, 40, 40], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200],
                    [245, 130, 48], [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60],
                    [250, 190, 212]], np.uint8)


def mosaic(tiles, rows, cols, gap=2):
    h, w = tiles[0].shape[:2]
    out = np.full((rows * (h + gap) - gap, cols * (w + gap) - gap, 3), 255, np.uint8)
    for k, t in enumerate(tiles):
        u, v = divmod(k, cols)
        out[u * (h + gap):u * (h + gap) + h, v * (w + gap):v * (w + gap) + w] = t
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("root")
    ap.add_argument("--scene", type=int, default=0)
    ap.add_argument("--out", default="docs/images")
    ap.add_argument("--tile-width", type=int, default=120)
    args = ap.parse_args()
    r = Reader(args.root)
    rows, cols = r.grid
    tw = args.tile_width
    th = round(tw * r.height / r.width)
    rgb, masks = [], []
    for u in range(rows):
        for v in range(cols):
            rgb.append(np.asarray(Image.fromarray(r.image(args.scene, u, v)).resize((tw, th), Image.LANCZOS)))
            ids = r.instances(args.scene, u, v)
            masks.append(np.asarray(Image.fromarray(PALETTE[ids % len(PALETTE)]).resize((tw, th), Image.NEAREST)))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mosaic(rgb, rows, cols)).save(out / "grid_rgb.png", optimize=True)
    Image.fromarray(mosaic(masks, rows, cols)).save(out / "grid_masks.png", optimize=True)
    for e in r.expressions(r.split_of(args.scene)):  # the stored expressions of that scene
        if e["scene"] == args.scene:
            print(e["family"], "|", e["text"])


if __name__ == "__main__":
    main()
