"""validate's amodal checks on hand-made views (no render)."""

import numpy as np

from clevr_remv.tools.amodal_checks import check_view, grow


def _view():
    ids = np.zeros((10, 12), np.uint8)
    whole = np.zeros((4, 10, 12), bool)
    whole[0, 2:8, 2:7] = True
    ids[2:8, 2:7] = 1
    whole[1, 1:6, 5:11] = True        # object 1, partly behind object 0
    ids[1:6, 7:11] = 2
    return ids, whole, np.array([30, 30, -1, -1], np.int32)


def test_a_sound_view_passes_and_grow_is_one_pixel():
    ids, whole, stored = _view()
    assert check_view(ids, whole, stored, 2) == []
    assert grow(whole[0]).sum() == 8 * 7 and grow(whole[:1]).shape == (1, 10, 12)


def test_each_problem_is_named():
    ids, whole, stored = _view()
    bad = stored.copy()
    bad[1] = 29
    bad[3] = 0
    kinds = [k for k, _ in check_view(ids, whole, bad, 2)]
    assert kinds == ["amodal_pixels", "amodal_pixels"]
    w = whole.copy()
    w[2, 0, 0] = True
    problems = check_view(ids, w, stored, 2)
    assert [k for k, _ in problems] == ["amodal_absent"] and "object 2" in problems[0][1]
    ids2 = ids.copy()
    ids2[9, 0] = 1                      # two pixels from object 0's mask
    ids2[8, 4] = 1                      # next to it: anti-aliasing, allowed
    problems = check_view(ids2, whole, stored, 2)
    assert problems == [("amodal_visible", ("object 0: 1 visible pixel(s) lie outside its amodal mask "
                                           "(more than one pixel from it)"))]
