"""Behaviour stays the same: a fresh tiny run matches the stored golden reference.

Every dataset that does not come out of Cycles (cameras, scenes, expressions) must match the
reference exactly, on any machine: a digest of its decoded contents (tests/golden/make_golden.py).
The rendered datasets (images, depth, instances, visible_pixels) are compared with the stored
arrays within a tolerance, because Cycles on the CPU does not give the same bits on every
processor.  The tolerance is tight enough that a change of scene, camera, light, material or
sample count fails it (see the tests below that show it).

Per dataset of decoded contents, not whole-file bytes: a new format version may add datasets,
which changes the files' bytes while every dataset that existed before must stay identical.
Datasets the reference does not list (newer ones) are not compared here; their own tests check
them.  A change that legitimately alters content regenerates the reference with
``python tests/golden/make_golden.py``, committed with a message saying why.
"""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "golden"))
import make_golden  # noqa: E402

pytestmark = pytest.mark.render


def rendered_close(name: str, fresh: np.ndarray, ref: np.ndarray) -> str | None:
    """Why ``fresh`` is not the same render as ``ref`` up to the processor, or None."""
    if fresh.shape != ref.shape or fresh.dtype != ref.dtype:
        return f"shape/dtype {fresh.shape} {fresh.dtype} != {ref.shape} {ref.dtype}"
    if name == "images":  # 2 samples, no denoiser: a diverging path moves single pixels a lot
        diff = np.abs(fresh.astype(np.int16) - ref.astype(np.int16))
        mean, near = float(diff.mean()), float((diff.max(axis=-1) <= 4).mean())
        return None if mean <= 1.0 and near >= 0.98 else f"mean |diff| {mean:.3f} levels, {near:.2%} of pixels within 4"
    if name == "depth":
        both = np.isfinite(fresh) & np.isfinite(ref)
        same_hit = float((np.isfinite(fresh) == np.isfinite(ref)).mean())
        rel = np.abs(fresh[both] - ref[both]) / ref[both]
        close = float((rel <= 1e-4).mean()) if rel.size else 1.0
        return None if same_hit >= 0.99 and close >= 0.99 else f"{same_hit:.2%} same hit/miss, {close:.2%} within 1e-4"
    if name == "instances":
        same = float((fresh == ref).mean())
        return None if same >= 0.99 else f"{same:.2%} of pixels with the same id"
    if name == "visible_pixels":  # per object and view; boundary pixels may move
        diff = np.abs(fresh.astype(np.int64) - ref.astype(np.int64))
        ok = np.all(diff <= np.maximum(2, 0.02 * ref))
        return None if ok and np.array_equal(fresh > 0, ref > 0) else f"counts differ by up to {int(diff.max())}"
    raise AssertionError(f"no tolerance for {name}")


def test_tiny_run_matches_the_golden_reference(tmp_path):
    golden = json.loads(make_golden.GOLDEN.read_text())
    assert golden["config"] == make_golden.TINY and golden["args"] == make_golden.ARGS, \
        "the reference was made with other settings: regenerate it"
    run = make_golden.tiny_run(tmp_path)
    fresh = make_golden.run_digests(run)
    assert sorted(fresh) == sorted(golden["shards"])
    hint = "if intended, run python tests/golden/make_golden.py and say why in the commit message"
    for shard, datasets in golden["shards"].items():
        for name, digest in datasets.items():
            assert name in fresh[shard], f"{shard}: dataset {name} disappeared"
            if name not in make_golden.RENDERED:
                assert fresh[shard][name] == digest, f"{shard}: {name} changed; {hint}"
    ref = np.load(make_golden.RENDERED_ARRAYS)
    got = make_golden.run_rendered(run)
    assert sorted(got) == sorted(ref.files)
    for key in ref.files:
        why = rendered_close(key.split(":")[1], got[key], ref[key])
        assert why is None, f"{key}: {why}; {hint}"


def test_the_tolerance_tells_a_different_render():
    """The tolerance is not so loose that another render passes: each scene's arrays against
    the other scene's, and a one-level brightening of every pixel, fail."""
    ref = np.load(make_golden.RENDERED_ARRAYS)
    for name in make_golden.RENDERED:
        a, b = (ref[k] for k in sorted(ref.files) if k.endswith(":" + name))
        assert rendered_close(name, a, a) is None
        if a.shape == b.shape:
            assert rendered_close(name, a, b) is not None, name
    img = ref[next(k for k in ref.files if k.endswith(":images"))]
    assert rendered_close("images", np.clip(img.astype(np.int16) + 2, 0, 255).astype(np.uint8), img) is not None
