"""The cluster schedulers behind one interface (:class:`base.Scheduler`).

A new scheduler is one module here and one line in ``SCHEDULERS``.  Used by
``generate --part auto`` (which array task this is), the device policy (the CPU cores a task
was given) and ``submit`` (the scripts and the commands that submit them)."""

from __future__ import annotations

import os
from collections.abc import Mapping

from ...render import devices
from .base import PARTS_ENV, ArrayTask, Scheduler, Submission
from .kubernetes import Kubernetes
from .slurm import Slurm

SCHEDULERS: dict[str, Scheduler] = {s.name: s for s in (Slurm(), Kubernetes())}

__all__ = ["PARTS_ENV", "SCHEDULERS", "ArrayTask", "Scheduler", "Submission", "present", "task_cpus", "usable_cpus"]


def present(env: Mapping[str, str]) -> list[Scheduler]:
    """The schedulers whose array task ``env`` is (normally none or one)."""
    return [s for s in SCHEDULERS.values() if s.present(env)]


def task_cpus(env: Mapping[str, str]) -> list[int]:
    """CPU cores the schedulers' variables give this task (empty: none says)."""
    return [n for s in SCHEDULERS.values() if (n := s.cpus(env))]


def usable_cpus(env: Mapping[str, str] | None = None, cgroup_cpu_max: str = "/sys/fs/cgroup/cpu.max") -> int:
    """CPU cores this task may use: the device policy's count (affinity, cgroup quota) bounded
    by what the scheduler's variables say it was given."""
    return devices.usable_cpus(task_cpus(os.environ if env is None else env), cgroup_cpu_max)
