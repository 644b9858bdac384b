"""Render farms: which part of a run a scheduler's task renders, and what is still missing.

Pure functions (no Blender, no scheduler calls), used by ``generate --part auto``,
``clevr-remv merge`` and ``clevr-remv submit slurm``.

The work unit is the shard.  A run of S shards split into M parts gives part K (1-based) the
shards k with ``k % M == K - 1`` (``generate --part K/M``).  A scheduler's task index i
(0-based) renders part i + 1.  With M = S every task renders one shard, so a slow node holds
back only its own shard and the scheduler balances the rest by handing out the next index.

Where the part count comes from: the scheduler's array task (``schedulers/``: Slurm job
arrays, Kubernetes Indexed Jobs), with ``CLEVR_REMV_PARTS`` where its environment does not
tell the number of tasks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from ..errors import UsageError
from ..run import plan
from . import schedulers
from .schedulers.base import PARTS_ENV, format_ranges, int_env

__all__ = ["PARTS_ENV", "format_ranges"]


@dataclass(frozen=True)
class Part:
    k: int          # 1-based
    m: int
    source: str     # how it was found, for the log

    @property
    def spec(self) -> str:
        return f"{self.k}/{self.m}"


def resolve_part(env: Mapping[str, str]) -> Part:
    """The part (K/M) a scheduler's array task renders, from its environment."""
    parts = int_env(env, PARTS_ENV)
    if parts is not None and parts < 1:
        raise UsageError(f"--part auto: {PARTS_ENV}={parts}; it must be the number of parts (>= 1)")
    found = schedulers.present(env)
    if len(found) > 1:
        raise UsageError(f"--part auto: both {' and '.join(s.index_var for s in found)} are set; "
                         "give --part K/M explicitly")
    if not found:
        known = " or ".join(f"{s.index_var} ({s.title})" for s in schedulers.SCHEDULERS.values())
        raise UsageError(f"--part auto: no {known} in the environment; give --part K/M instead")
    task = found[0].array_task(env, parts)
    return _checked(task.index, task.count, task.source)


def _checked(index: int, parts: int, source: str) -> Part:
    if not 0 <= index < parts:
        raise UsageError(f"--part auto: {source}: the index must be from 0 to {parts - 1}")
    return Part(index + 1, parts, source)


def visible_gpus(env: Mapping[str, str]) -> str | None:
    """The GPUs a scheduler gave this task (CUDA_VISIBLE_DEVICES, or ROCm's / oneAPI's
    equivalents), as set; None when nothing restricts them.  Blender's Cycles sees only these
    devices (the CUDA, HIP and Level Zero drivers honour the variables), and the device policy
    starts one Blender worker per device it sees, so the variables need no other handling."""
    for name in ("CUDA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "ZE_AFFINITY_MASK"):
        if name in env:
            return f"{name}={env[name]}"
    return None


def gpus_were_given(env: Mapping[str, str]) -> bool:
    """True when the scheduler named at least one GPU for this task."""
    v = env.get("CUDA_VISIBLE_DEVICES", env.get("ROCR_VISIBLE_DEVICES", ""))
    return v.strip() not in ("", "NoDevFiles", "-1")


# -- tasks of a run -----------------------------------------------------------------------------

def task_count(shards: int, shards_per_task: int) -> int:
    """Tasks (array indices) for a run of ``shards`` shards, about ``shards_per_task`` each."""
    if shards_per_task < 1:
        raise UsageError("--shards-per-task must be at least 1")
    return max(1, math.ceil(shards / shards_per_task))


def shards_of_task(index: int, tasks: int, shards: int) -> list[int]:
    """Shard numbers (positions in the run's shard plan) rendered by 0-based task ``index``."""
    return plan.select_part(list(range(shards)), (index + 1, tasks))  # task i runs part i+1 of T


def part_manifest_name(k: int, m: int) -> str:
    return plan.manifest_name((k, m))


def missing_shards(manifest: dict, plan_names: list[str]) -> list[tuple[str, int | None]]:
    """Planned shards that a (merged) manifest does not list, each with the 1-based part that
    renders it (None when the run was not split into parts)."""
    done = {e["path"] for e in manifest.get("shards", [])}
    m = manifest.get("parts_expected") or (manifest.get("part") or [None, None])[1]
    return [(name, (i % m) + 1 if m else None) for i, name in enumerate(plan_names) if name not in done]


# -- the command line's side (logging and reports) ----------------------------------------------

def log_auto_part(env: Mapping[str, str] | None = None) -> str:
    """``generate --part auto``: resolve, log where the part came from, return 'K/M'."""
    import logging
    import os

    env = os.environ if env is None else env
    part = resolve_part(env)
    gpus = visible_gpus(env)
    logging.getLogger("clevr_remv").info(
        "--part auto: %s -> part %s%s", part.source, part.spec,
        f"; GPUs given by the scheduler: {gpus} (one Blender worker per visible GPU)" if gpus else "")
    return part.spec


def warn_unused_gpus(env: Mapping[str, str] | None = None) -> None:
    """A run that fell back to the CPU although the scheduler gave it GPUs is almost always a
    node without a working driver or a kernel mismatch: say so in the task's log."""
    import logging
    import os

    env = os.environ if env is None else env
    if gpus_were_given(env):
        logging.getLogger("clevr_remv").warning(
            "the scheduler gave this task GPUs (%s) but Blender found none it can use, so it rendered on "
            "the CPU; check the node with 'clevr-remv doctor' or pass --device cuda/optix to fail instead",
            visible_gpus(env))


def report_missing(out, manifest: dict, echo) -> bool:
    """After ``merge``: list the planned shards the merged manifest lacks.  True if none."""
    from ..run.plan import plan_shards

    cfg = manifest["config"]
    plans = plan_shards(manifest["scenes"], cfg["output"]["splits"], cfg["output"]["shard_size"])
    missing = missing_shards(manifest, [p.name for p in plans])
    if not missing and manifest.get("complete"):
        return True
    m = manifest.get("parts_expected")
    parts = sorted({k for _, k in missing if k})
    echo(f"{out}: INCOMPLETE: {len(missing)} of {len(plans)} shards missing"
         + (f", from parts {format_ranges(parts)} of {m}" if parts else ""), err=True)
    for name, k in missing[:20]:
        echo(f"  missing {name}" + (f" (part {k}/{m})" if k else ""), err=True)
    if len(missing) > 20:
        echo(f"  ... and {len(missing) - 20} more", err=True)
    echo("  re-run those parts (generate --part K/M, or the same 'submit slurm' command), then merge again",
         err=True)
    return False
