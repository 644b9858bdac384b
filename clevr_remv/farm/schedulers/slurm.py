"""Slurm: job arrays, ``#SBATCH`` scripts, and the client calls ``submit slurm`` makes.

Why plain sbatch scripts and not submitit: the scripts are written to OUT/logs/slurm/ where
users can read them, keep them, edit them (modules, QOS, constraints) and submit them again
by hand with ``sbatch``; every Slurm option is an ``#SBATCH`` line rather than an executor
parameter; nothing is pickled, so a node only needs the same ``clevr-remv`` install (or a
``--blender`` executable plus our Python), not the submitting Python's exact objects; and it adds
no dependency.

The array task: ``SLURM_ARRAY_TASK_ID`` with the array's size.  For a plain range
(``--array=0-9`` or ``1-10``, any ``%N``) that is ``SLURM_ARRAY_TASK_COUNT``, and the index is
counted from ``SLURM_ARRAY_TASK_MIN``.  A sparse array (``--array=0,3,7``, as a re-submission of
the missing tasks is) does not tell the run's part count, so there ``CLEVR_REMV_PARTS`` must give
it, and the index is 0-based.  ``submit slurm`` always sets it.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path

from ...errors import UsageError
from .base import PARTS_ENV, ArrayTask, Scheduler, Submission, format_ranges, int_env

COMMENT_PREFIX = "clevr-remv:"  # job comment: marks the jobs of one output folder

# sbatch --time: "M", "M:S", "H:M:S", "D-H", "D-H:M", "D-H:M:S", or unlimited.
_TIME = re.compile(r"^(\d+|\d+:\d+|\d+:\d+:\d+|\d+-\d+|\d+-\d+:\d+|\d+-\d+:\d+:\d+)$")
# sbatch --mem: a whole number, optionally with the unit K, M (the default), G or T.
_MEM = re.compile(r"^\d+[KMGT]?$", re.IGNORECASE)


def check_time(option: str, value: str | None) -> None:
    """A usage error unless ``value`` is in sbatch's --time syntax."""
    if value is None or value.strip().lower() in ("unlimited", "infinite") or _TIME.match(value.strip()):
        return
    raise UsageError(f"{option} '{value}' is not a Slurm time; give minutes, H:MM:SS or D-HH:MM:SS (e.g. 4:00:00)")


def check_mem(option: str, value: str | None) -> None:
    """A usage error unless ``value`` is in sbatch's --mem syntax."""
    if value is None or _MEM.match(value.strip()):
        return
    raise UsageError(f"{option} '{value}' is not a Slurm memory size; give a number with K, M, G or T (e.g. 16G)")


def _leading_int(text: str) -> int | None:
    digits = ""
    for ch in text:  # "4", or "4(x2)" for several nodes
        if not ch.isdigit():
            break
        digits += ch
    return int(digits) if digits and int(digits) > 0 else None


class Slurm(Scheduler):
    name = "slurm"
    title = "Slurm job array"
    index_var = "SLURM_ARRAY_TASK_ID"
    script_dir = "slurm"

    # -- on the node --------------------------------------------------------------------------
    def array_task(self, env: Mapping[str, str], parts: int | None) -> ArrayTask:
        task = int_env(env, self.index_var)
        if parts is not None:
            return ArrayTask(task, parts, f"Slurm array task {task}, {PARTS_ENV}={parts}")
        lo, hi = int_env(env, "SLURM_ARRAY_TASK_MIN"), int_env(env, "SLURM_ARRAY_TASK_MAX")
        count = int_env(env, "SLURM_ARRAY_TASK_COUNT")
        if lo is None or hi is None:
            if count is None:
                raise UsageError(f"--part auto: SLURM_ARRAY_TASK_ID is set but not the array's size "
                                 f"(SLURM_ARRAY_TASK_COUNT or MIN/MAX); set {PARTS_ENV}")
            lo, hi = 0, count - 1
        if count is not None and count != hi - lo + 1:
            raise UsageError(f"--part auto: the array {lo}-{hi} has {count} tasks (sparse or stepped), which does "
                             f"not tell the number of parts; set {PARTS_ENV} (0-based task ids)")
        return ArrayTask(task - lo, hi - lo + 1, f"Slurm array task {task} of {lo}-{hi}")

    def cpus(self, env: Mapping[str, str]) -> int | None:
        """SLURM_CPUS_PER_TASK, else SLURM_JOB_CPUS_PER_NODE (its first node's count)."""
        for name in ("SLURM_CPUS_PER_TASK", "SLURM_JOB_CPUS_PER_NODE"):
            n = _leading_int(env.get(name, ""))
            if n:
                return n
        return None

    # -- the scripts --------------------------------------------------------------------------
    def scripts(self, sub: Submission) -> dict[str, str]:
        o = sub.options
        folder = sub.out / "logs" / self.script_dir
        common = [f"--partition={o['partition']}"] if o.get("partition") else []
        if o.get("account"):
            common.append(f"--account={o['account']}")
        extra = list(o.get("sbatch_lines", ()))
        comment = f"{COMMENT_PREFIX}{sub.out}"
        render = [f"--job-name={sub.job_name}", f"--comment={comment}",
                  f"--array=0-{sub.tasks - 1}" + (f"%{sub.parallel}" if sub.parallel else ""),
                  f"--output={folder}/render-%A_%a.out", *common]
        if o.get("time"):
            render.append(f"--time={o['time']}")
        if sub.gpus_per_task:
            render.append(f"--gres=gpu:{sub.gpus_per_task}")
        if sub.cpus_per_task:
            render.append(f"--cpus-per-task={sub.cpus_per_task}")
        if sub.mem:
            render.append(f"--mem={sub.mem}")
        render += extra
        merge = [f"--job-name={sub.job_name}-merge", f"--comment={comment}", f"--output={folder}/merge-%j.out",
                 *common, f"--time={o.get('merge_time', '1:00:00')}", "--cpus-per-task=1",
                 f"--mem={o.get('merge_mem', '4G')}", *extra]
        render_script = _script(
            f"clevr-remv render array: {sub.scenes} scenes in {sub.shards} shards, {sub.tasks} tasks of {sub.per_task}.",
            ["Array task i renders part i+1 of the run (shards i, i+T, i+2T, ... with T = CLEVR_REMV_PARTS).",
             f"Submit again by hand with: sbatch {folder}/render.sbatch  (finished shards are kept;",
             f"'--array=3,7' on the sbatch line renders only those tasks), then: sbatch {folder}/merge.sbatch"],
            render, sub.setup, [f"export {PARTS_ENV}={sub.tasks}"], sub.generate)
        merge_script = _script(
            "clevr-remv merge: joins the parts' manifests into manifest.json; exits 1 naming missing shards.",
            [], merge, sub.setup, [], sub.merge)
        return {"render.sbatch": render_script, "merge.sbatch": merge_script}

    def submit_command(self, sub: Submission, folder: Path, tasks: list[int]) -> list[list[str]]:
        return [["sbatch", "--parsable", f"--array={self.array_spec(sub, tasks)}", str(folder / "render.sbatch")],
                ["sbatch", "--parsable", "--dependency=afterany:<array id>", str(folder / "merge.sbatch")]]

    @staticmethod
    def array_spec(sub: Submission, tasks: list[int]) -> str:
        return format_ranges(tasks) + (f"%{sub.parallel}" if sub.parallel else "")

    # -- the client (login node) --------------------------------------------------------------
    def active_jobs(self, out: Path) -> dict[str, dict]:
        """Queued or running jobs of this output folder: {job id: {kind, state, tasks}}."""
        if shutil.which("squeue") is None or shutil.which("sbatch") is None:
            raise UsageError("sbatch/squeue not found on PATH; run this on a Slurm login node (or use --dry-run)")
        r = subprocess.run(["squeue", "--me", "-h", "-r", "-o", "%F|%K|%j|%k|%T"], check=False, capture_output=True, text=True,
                           timeout=120)
        if r.returncode != 0:
            raise UsageError(f"squeue failed: {(r.stderr.strip().splitlines() or ['no output'])[-1]}")
        comment = f"{COMMENT_PREFIX}{out}"
        jobs: dict[str, dict] = {}
        for line in r.stdout.splitlines():
            fields = line.split("|")
            if len(fields) < 5 or fields[3] != comment:
                continue
            job, task, name, _, state = fields[:5]
            kind = "merge" if name.endswith("-merge") else "render"
            info = jobs.setdefault(job, {"kind": kind, "state": state, "tasks": set()})
            if task.isdigit():
                info["tasks"].add(int(task))
        return jobs

    def max_array_size(self) -> int | None:
        r = subprocess.run(["scontrol", "show", "config"], check=False, capture_output=True, text=True, timeout=120)
        for line in r.stdout.splitlines():
            if line.startswith("MaxArraySize"):
                try:
                    return int(line.split("=", 1)[1].strip())
                except ValueError:
                    return None
        return None

    def sbatch(self, cmd: list[str], what: str, stdin: str | None = None) -> str:
        """Run an sbatch command; its job id, or a usage error with sbatch's reason."""
        r = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=300, input=stdin)
        if r.returncode != 0:
            lines = r.stderr.strip().splitlines() or ["no message"]
            reason = next((ln for ln in lines if ln.startswith("sbatch: error:")), lines[-1])
            raise UsageError(f"sbatch refused {what}: {reason.removeprefix('sbatch: error: ')}")
        return r.stdout.strip().split(";")[0]

    def cancel(self, job: str) -> None:
        subprocess.run(["scancel", job], check=False, capture_output=True, timeout=60)


def _script(title: str, notes: list[str], opts: list[str], setup: tuple, env: list[str], cmd: list[str]) -> str:
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    lines = ["#!/bin/bash", f"# {title}", f"# Written by 'clevr-remv submit slurm' on {now}.",
             *(f"# {n}" for n in notes)]
    lines += [f"#SBATCH {_sbatch_quote(o)}" for o in opts]
    lines += ["", "set -eo pipefail", *setup, *env,
              'echo "$(date -u +%FT%TZ) job ${SLURM_JOB_ID:-?} task ${SLURM_ARRAY_TASK_ID:-none} on $(hostname)"',
              # exec: scancel's / the time limit's SIGTERM reaches clevr-remv itself, which stops
              # cleanly (finished scenes kept) before Slurm's SIGKILL.
              "exec " + shlex.join(cmd), ""]
    return "\n".join(lines)


def _sbatch_quote(opt: str) -> str:
    if any(c.isspace() for c in opt) and "=" in opt:
        key, value = opt.split("=", 1)
        return f'{key}="{value}"'
    return opt
