"""``clevr-remv preview DIR --scene K``: one scene as pictures.

* ``FILE`` (PNG): (a) all U x V views with the instance masks overlaid; (b) one row per
  expression: its target highlighted in a view where it is valid (the central view when it is
  valid there), with its amodal outline dashed beside its visible one (datasets with amodal
  masks, format 1.4 on), a U x V map of the views it is valid in, and its text.
* ``FILE`` with ``.gif``: an animation sweeping every view (rows in a serpentine order), so the
  parallax shows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..store import refexps
from .common import open_dataset, palette, scene_location

BG = (255, 255, 255)
INK = (20, 20, 20)
VALID = (60, 170, 80)
NOT_VALID = (200, 60, 60)


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: a fixed bitmap font
        return ImageFont.load_default()


def overlay_masks(rgb: np.ndarray, ids: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """The view with each object's pixels tinted by its instance colour."""
    out = rgb.astype(np.float32)
    on = ids > 0
    out[on] = (1 - alpha) * out[on] + alpha * palette(ids[on]).astype(np.float32)
    return out.round().astype(np.uint8)


def outline(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` with a 4-neighbour outside it."""
    m = np.pad(mask, 1)
    inner = m[1:-1, 1:-1] & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]
    return mask & ~inner


def dashed_outline(mask: np.ndarray, dash: int = 3) -> np.ndarray:
    """The :func:`outline` of ``mask`` cut into dashes ``dash`` pixels long (diagonal stripes)."""
    ys, xs = np.indices(mask.shape)
    return outline(mask) & (((ys + xs) // dash) % 2 == 0)


AMODAL = (255, 60, 220)  # the dashed amodal outline


def draw_amodal(pic: np.ndarray, whole: np.ndarray) -> np.ndarray:
    """``pic`` (a resized view) with the amodal mask ``whole`` (full size) outlined, dashed."""
    from PIL import Image

    h, w = pic.shape[:2]
    m = np.asarray(Image.fromarray(whole.astype(np.uint8) * 255).resize((w, h), Image.NEAREST)) > 0
    out = pic.copy()
    out[dashed_outline(m)] = AMODAL
    return out


def highlight(rgb: np.ndarray, mask: np.ndarray, anchor: np.ndarray | None = None) -> np.ndarray:
    """Everything but the target dimmed; the target outlined in yellow, an anchor in cyan."""
    out = rgb.astype(np.float32)
    out[~mask] *= 0.35
    if anchor is not None:
        out[outline(anchor)] = (0, 220, 255)
    out[outline(mask)] = (255, 230, 0)
    return out.round().astype(np.uint8)


def _resize(img: np.ndarray, width: int, nearest: bool = False) -> np.ndarray:
    from PIL import Image

    h, w = img.shape[:2]
    if w == width:
        return img
    height = max(1, round(h * width / w))
    return np.asarray(Image.fromarray(img).resize((width, height), Image.NEAREST if nearest else Image.LANCZOS))


def _describe(obj: dict) -> str:
    return " ".join(str(obj.get(k, "?")) for k in ("size", "color", "material", "shape"))


def load_scene(root: Path, index: int) -> dict:
    """Everything the pictures need about one scene, read once."""
    reader = open_dataset(root)
    try:
        entry, _ = scene_location(reader, index)
        data = {"index": index, "split": entry["split"], "shard": entry["path"], "grid": tuple(reader.grid),
                **reader.scene_views(index, ("images", "instances")),
                "expressions": reader.expressions(scene=index)}
        if reader.has_amodal():  # the target's whole silhouette in the view each row shows
            # every target's (several targets: their union; no target: nothing)
            data["amodal_targets"] = [reader.targets_amodal_mask(index, e["targets"],
                                                                 *_view_for(e["valid_views"], data["grid"]))
                                      for e in data["expressions"]]
    finally:
        reader.close()
    return data


def _view_for(valid: np.ndarray, grid) -> tuple[int, int]:
    cu, cv = grid[0] // 2, grid[1] // 2
    if valid[cu, cv] or not valid.any():
        return cu, cv
    us, vs = np.nonzero(valid)
    k = int(np.argmin(np.abs(us - cu) + np.abs(vs - cv)))
    return int(us[k]), int(vs[k])


def render_png(d: dict):
    from PIL import Image, ImageDraw

    rows, cols = d["grid"]
    h, w = d["images"].shape[2:4]
    tw = min(2 * w, max(64, 960 // cols))
    gap = 2
    tiles = [[_resize(overlay_masks(d["images"][u, v], d["instances"][u, v]), tw) for v in range(cols)]
             for u in range(rows)]
    th = tiles[0][0].shape[0]
    grid_w = cols * (tw + gap) - gap
    grid_h = rows * (th + gap) - gap
    font, small, title = _font(13), _font(11), _font(15)

    # Panel (b): one row per expression.
    big = max(160, min(2 * w, 320))
    cell = max(6, min(14, 126 // max(rows, cols)))
    exprs = d["expressions"]
    row_h = max(round(h * big / w), rows * cell) + 10
    width = max(grid_w + 20, 900)
    head = 28
    height = head + grid_h + 30 + 24 + len(exprs) * row_h + 10
    img = Image.new("RGB", (width, height), BG)
    draw = ImageDraw.Draw(img)
    sc = d["scene"]
    draw.text((10, 6), f"scene {d['index']} ({d['split']}, {d['shard']}): {len(sc['objects'])} objects, "
              f"{rows}x{cols} views at {w}x{h}; (a) every view with instance masks", fill=INK, font=title)
    for u in range(rows):
        for v in range(cols):
            img.paste(Image.fromarray(tiles[u][v]), (10 + v * (tw + gap), head + u * (th + gap)))
    y = head + grid_h + 12
    wholes = d.get("amodal_targets")
    draw.text((10, y), f"(b) {len(exprs)} expressions: target outlined in yellow (anchor in cyan)"
              + (", its amodal outline dashed in magenta," if wholes else "") + " in the view "
              "named; views where the expression is valid in green, not valid in red", fill=INK, font=title)
    y += 24
    for k, e in enumerate(exprs):
        valid = e["valid_views"]
        u, v = _view_for(valid, d["grid"])
        target = np.isin(d["instances"][u, v], np.asarray(e["targets"], np.int64) + 1)
        anchors = refexps.anchors(e, sc)
        anchor = np.isin(d["instances"][u, v], np.asarray(anchors, np.int64) + 1) if anchors else None
        pic = _resize(highlight(d["images"][u, v], target, anchor), big)
        if wholes:
            pic = draw_amodal(pic, wholes[k])
        img.paste(Image.fromarray(pic), (10, y))
        gx = 10 + big + 12
        for uu in range(rows):
            for vv in range(cols):
                x0, y0 = gx + vv * cell, y + uu * cell
                draw.rectangle([x0, y0, x0 + cell - 2, y0 + cell - 2], fill=VALID if valid[uu, vv] else NOT_VALID,
                               outline=INK if (uu, vv) == (u, v) else None)
        tx = gx + cols * cell + 14
        named = "; ".join(f"object {t} ({_describe(sc['objects'][t])})" for t in e["targets"]) or "no target"
        draw.text((tx, y + 2), f"{d['index']}-{k}  {e['text']}", fill=INK, font=font)
        draw.text((tx, y + 22), f"{e['family']}; target {named}"
                  + (f"; anchor object {', '.join(map(str, anchors))}" if anchors else ""), fill=(90, 90, 90), font=small)
        draw.text((tx, y + 38), f"valid in {int(valid.sum())} of {valid.size} views; shown: view ({u},{v})"
                  + ("" if valid[u, v] else " (valid in none)"), fill=(90, 90, 90), font=small)
        y += row_h
    return img


def sweep_frames(d: dict, width: int = 320) -> list:
    """Every view once, rows in a serpentine order (left to right, then right to left...)."""
    from PIL import Image, ImageDraw

    rows, cols = d["grid"]
    font = _font(12)
    frames = []
    for u in range(rows):
        order = range(cols) if u % 2 == 0 else range(cols - 1, -1, -1)
        for v in order:
            im = Image.fromarray(_resize(d["images"][u, v], max(width, d["images"].shape[3])))
            ImageDraw.Draw(im).text((6, 4), f"view ({u},{v})", fill=(255, 255, 255), font=font,
                                    stroke_width=2, stroke_fill=(0, 0, 0))
            frames.append(im)
    return frames


def write_preview(root: Path, index: int, out: Path) -> tuple[Path, Path]:
    d = load_scene(root, index)
    png = render_png(d)
    anim = out.with_suffix(".gif")
    frames = sweep_frames(d)
    out.parent.mkdir(parents=True, exist_ok=True)
    png.save(out, optimize=True)
    frames[0].save(anim, save_all=True, append_images=frames[1:], duration=70, loop=0, optimize=True)
    return out, anim
