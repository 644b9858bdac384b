"""Determinism by construction: every random draw comes from a generator seeded by
(global seed, scene index, purpose, ...)."""

from __future__ import annotations

import zlib

import numpy as np


def purpose_code(purpose: str) -> int:
    return zlib.crc32(purpose.encode("utf-8"))


def rng(seed: int, index: int, purpose: str, *extra: int) -> np.random.Generator:
    """A generator that depends only on its arguments (stable across numpy versions:
    SeedSequence and PCG64 are part of numpy's stability guarantee)."""
    entropy = [int(seed) & 0xFFFFFFFF, int(seed) >> 32, int(index), purpose_code(purpose)]
    entropy += [int(e) for e in extra]
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(entropy)))


def scene_seed(seed: int, index: int) -> int:
    """A 63-bit seed that names the scene on its own (stored in the scene record)."""
    ss = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(seed) >> 32, int(index)])
    return int(ss.generate_state(2, dtype=np.uint32).astype(np.uint64) @ np.array(
        [1 << 32, 1], dtype=np.uint64)) & ((1 << 63) - 1)
