"""What ``clevr-remv validate`` checks of the amodal masks (format 1.4 on; docs/format.md):

* ``amodal_pixels``: the stored counts against the masks (-1 past the scene's objects);
* ``amodal_absent``: no amodal pixel for an object slot the scene does not use;
* ``amodal_visible``: every visible pixel of an object (its instance id) lies in its amodal
  mask, up to anti-aliasing: within one pixel (8-neighbourhood) of it.
"""

from __future__ import annotations

import numpy as np


def grow(mask: np.ndarray) -> np.ndarray:
    """``mask`` [..., H, W] dilated by one pixel (3x3), numpy only."""
    h, w = mask.shape[-2:]
    pad = [(0, 0)] * (mask.ndim - 2) + [(1, 1), (1, 1)]
    p = np.pad(mask, pad)
    out = np.zeros(mask.shape, bool)
    for i in range(3):
        for j in range(3):
            out |= p[..., i:i + h, j:j + w]
    return out


def check_view(ids: np.ndarray, whole: np.ndarray, stored: np.ndarray, nobj: int) -> list[tuple[str, str]]:
    """(kind, message) of each problem of one view: ``ids`` the instance map [H, W], ``whole``
    the amodal masks [K, H, W], ``stored`` the amodal pixel counts [K]."""
    out: list[tuple[str, str]] = []
    counts = whole.reshape(len(whole), -1).sum(axis=1)
    want = np.where(np.arange(len(whole)) < nobj, counts, -1)
    for k in np.flatnonzero(stored != want):
        what = f"object {k}" if k < nobj else f"slot {k} (past the {nobj} objects)"
        out.append(("amodal_pixels", f"{what}: amodal_pixels stored {int(stored[k])}, the mask holds "
                                     f"{int(counts[k])}" + (" (-1 expected)" if k >= nobj else "")))
    for k in np.flatnonzero(counts[nobj:]):
        out.append(("amodal_absent", (f"object {nobj + k}: {int(counts[nobj + k])} amodal pixel(s) for a slot "
                                     f"the scene does not use ({nobj} objects)")))
    for k in range(min(nobj, len(whole))):
        visible = ids == k + 1
        if not visible.any():
            continue
        outside = int((visible & ~grow(whole[k])).sum())
        if outside:
            out.append(("amodal_visible", (f"object {k}: {outside} visible pixel(s) lie outside its amodal mask "
                                          f"(more than one pixel from it)")))
    return out
