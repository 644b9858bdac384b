"""The scheduler interface: what ``generate --part auto``, the device policy and ``submit``
need from a cluster scheduler, and nothing else.

A scheduler

* finds its array task in the environment (:meth:`Scheduler.array_task`): the 0-based index,
  and the number of tasks when its environment tells it;
* says how many CPU cores it gave the task (:meth:`Scheduler.cpus`), or None;
* writes the submit script(s) of a run (:meth:`Scheduler.scripts`) from one
  :class:`Submission`;
* names the command that submits them (:meth:`Scheduler.submit_command`).

Pure: no scheduler is called here; the Slurm client calls live in ``slurm.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import UsageError

PARTS_ENV = "CLEVR_REMV_PARTS"  # the number of parts (tasks) of a run, where the scheduler does not say


@dataclass(frozen=True)
class ArrayTask:
    """One task of a scheduler's array: ``index`` counted from 0, of ``count`` tasks."""

    index: int
    count: int
    source: str  # how it was found, for the log


@dataclass
class Submission:
    """Everything a scheduler's scripts say about one run, decided before any is written."""

    out: Path
    scenes: int
    shards: int
    tasks: int
    shards_per_task: int
    generate: list[str]          # the command every task runs (generate --part auto ...)
    merge: list[str]             # the command the merge job runs
    digest: str = ""             # the run's settings digest (config.digest)
    job_name: str = "clevr-remv"
    setup: tuple = ()            # shell lines before the command
    parallel: int | None = None  # tasks at once
    gpus_per_task: int | None = None
    cpus_per_task: int | None = None
    mem: str | None = None       # memory per task, in the scheduler's syntax
    options: dict = field(default_factory=dict)  # scheduler-specific (partition, image, ...)

    @property
    def per_task(self) -> str:
        return f"{self.shards_per_task} shard{'s' if self.shards_per_task > 1 else ''}"


def int_env(env: Mapping[str, str], name: str) -> int | None:
    """An integer environment variable; None when unset or empty; a usage error otherwise."""
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return None
    try:
        return int(raw.strip())
    except ValueError:
        raise UsageError(f"--part auto: {name}='{raw}' is not an integer") from None


def format_ranges(indices: list[int]) -> str:
    """Task indices as ranges, Slurm's --array syntax: [0,1,2,5,7,8] -> '0-2,5,7-8'."""
    out, run = [], []
    for i in sorted(set(indices)):
        if run and i == run[-1] + 1:
            run.append(i)
            continue
        if run:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [i]
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(out)


class Scheduler:
    """One cluster scheduler.  Subclasses set the class attributes and override the methods."""

    name = ""            # as in 'submit NAME'
    title = ""           # e.g. "Slurm job array", for messages
    index_var = ""       # the variable that marks one of its array tasks
    script_dir = ""      # OUT/logs/<script_dir>/ holds its scripts

    def present(self, env: Mapping[str, str]) -> bool:
        """Whether ``env`` is one of this scheduler's array tasks."""
        return int_env(env, self.index_var) is not None

    def array_task(self, env: Mapping[str, str], parts: int | None) -> ArrayTask:
        """This task's index and the number of tasks; ``parts``: ``CLEVR_REMV_PARTS`` if set."""
        raise NotImplementedError

    def cpus(self, env: Mapping[str, str]) -> int | None:
        """CPU cores the scheduler gave this task, when its environment says; None otherwise."""
        return None

    def scripts(self, sub: Submission) -> dict[str, str]:
        """{file name: text} of the run's submit scripts, written to OUT/logs/<script_dir>/."""
        raise NotImplementedError

    def submit_command(self, sub: Submission, folder: Path, tasks: list[int]) -> list[list[str]]:
        """The commands that submit the scripts in ``folder`` for the 0-based ``tasks``."""
        raise NotImplementedError
