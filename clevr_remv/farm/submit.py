"""``clevr-remv submit``: a run handed to a scheduler as an array of parts plus a merge.

The scheduler-independent half: the checks of the run and the output folder, the plan (one
task per ``--shards-per-task`` shards), the tasks already finished, the commands every task
runs.  Then one function per scheduler client: :func:`slurm` calls sbatch/squeue,
:func:`kubernetes` writes the manifests and prints the kubectl commands.

Array task i (0-based) runs ``generate --part auto`` with ``CLEVR_REMV_PARTS=T``: part i+1 of T,
that is shards i, i+T, i+2T, ... .  A re-run of the same command submits only the tasks whose
part is neither finished nor queued/running.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable
from pathlib import Path

from .. import FORMAT_VERSION, config
from ..errors import UsageError
from ..run.guard import FolderGuard
from ..run.plan import check_run, plan_shards
from ..store import files
from ..store.manifest import follow_existing_run
from . import parts
from .schedulers import SCHEDULERS, Submission
from .schedulers.slurm import check_mem, check_time

Echo = Callable[..., None]


def prepare(scheduler: str, scenes: int, out: Path, seed: int, config_spec: str | None, overrides: dict,
            flags: list[str], *, blender: str | None = None, program: list[str] | None = None,
            shards_per_task: int = 1, resolve_paths: bool = True, **resources) -> Submission:
    """Check the run and the folder (usage errors before anything is written) and describe it.
    ``program``: how a node starts clevr-remv (a Python and ``-m clevr_remv``; empty where the
    image's entry point is clevr-remv).  ``resolve_paths``: --config / --blender paths made
    absolute (a shared file system), or kept as given (paths inside a container)."""
    for name in ("gpus_per_task", "cpus_per_task", "parallel"):
        if resources.get(name) is not None and resources[name] < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1")
    if scheduler == "slurm":
        check_time("--time", resources.get("options", {}).get("time"))
        check_time("--merge-time", resources.get("options", {}).get("merge_time"))
        check_mem("--merge-mem", resources.get("options", {}).get("merge_mem"))
        check_mem("--mem", resources.get("mem"))
    check_run(scenes, seed)
    cfg = config.load_config(config_spec, overrides)  # --blender: a path on the nodes, checked there, not here
    version = FORMAT_VERSION
    if resolve_paths:  # a folder here: a run of an older format keeps its storage settings, as in generate
        out = check_out(out)
        cfg, version = follow_existing_run(out, cfg, seed, scenes)
    digest = config.digest(cfg, seed, scenes, version)
    plans = plan_shards(scenes, cfg["output"]["splits"], cfg["output"]["shard_size"])
    tasks = parts.task_count(len(plans), shards_per_task)
    gen = ["generate", "--part", "auto", "--scenes", str(scenes), "--out", str(out), "--seed", str(seed)]
    if config_spec is not None:
        local = resolve_paths and Path(config_spec).is_file()
        gen += ["--config", str(Path(config_spec).resolve()) if local else config_spec]
    gen += flags
    if blender:
        gen += ["--blender", str(Path(blender).resolve()) if resolve_paths and "/" in blender else blender]
    gen += ["--no-progress"]
    program = [sys.executable, "-m", "clevr_remv"] if program is None else program
    sub = Submission(out=out, scenes=scenes, shards=len(plans), tasks=tasks, shards_per_task=shards_per_task,
                     generate=program + gen, merge=program + ["merge", str(out)], digest=digest, **resources)
    return sub


def check_out(out: Path) -> Path:
    from ..run.lock import LOCK_PREFIX
    from ..store.files import writable_folder

    out = out.expanduser().resolve()
    writable_folder(out, "--out")
    if out.exists():
        other = [p for p in out.iterdir() if p.name != "logs" and not p.name.startswith(LOCK_PREFIX)]
        if other and not (any(out.glob("manifest*.json")) or (out / ".work").exists()):
            raise UsageError(f"'{out}' is not empty and holds no clevr-remv run; choose an empty or new folder")
    return out


def finished_tasks(out: Path, digest: str, tasks: int) -> set[int]:
    """0-based tasks whose part manifest says complete; refuses folders holding another run."""
    done: set[int] = set()
    if not out.exists():
        return done
    for path in sorted(out.glob("manifest*.json")):
        try:
            m = files.read_json(path)
        except (OSError, ValueError):
            continue  # damaged: its task is not finished; generate rebuilds it from the shards
        if m.get("config_digest") != digest:
            raise UsageError(f"'{out}' holds a run with other settings (digest {m.get('config_digest')}, "
                             f"{m.get('scenes')} scenes, seed {m.get('seed')}); use another --out or the same options")
        part = m.get("part")
        if not part:
            continue
        if part[1] != tasks:
            raise UsageError(f"'{out}' holds parts of {part[1]} (from another --shards-per-task); this command "
                             f"makes {tasks}; give the same --shards-per-task as before")
        if m.get("complete"):
            done.add(part[0] - 1)
    return done


def write_scripts(sub: Submission, texts: dict[str, str], folder: Path) -> None:
    """The scripts, into ``folder``: inside the run folder through its guard (no link out of it
    followed), elsewhere (Kubernetes' --manifests) as plain files."""
    try:
        folder.relative_to(sub.out)
        guard = FolderGuard(sub.out)
    except ValueError:
        guard = FolderGuard(folder)
    if folder == guard.root:
        folder.mkdir(parents=True, exist_ok=True)
    else:
        guard.mkdir(folder)
    for name, text in texts.items():
        guard.write_atomic(folder / name, text.encode("utf-8"))


# -- Slurm ------------------------------------------------------------------------------------

def slurm(sub: Submission, dry_run: bool, echo: Echo) -> int:
    """Submit (or with ``dry_run`` only write) the array and the merge job; the exit code."""
    s = SCHEDULERS["slurm"]
    out, tasks = sub.out, sub.tasks
    done = finished_tasks(out, sub.digest, tasks)
    active = {} if dry_run else s.active_jobs(out)
    active_tasks = {t for j in active.values() if j["kind"] == "render" for t in j["tasks"]}
    missing = [i for i in range(tasks) if i not in done and i not in active_tasks]
    limit = None if dry_run or not missing else s.max_array_size()
    if limit is not None and max(missing) >= limit:
        need = -(-sub.shards // limit)
        raise UsageError(f"this cluster allows array indices below {limit} (MaxArraySize) but the run needs "
                         f"{tasks} tasks; use --shards-per-task {need} or more")
    texts = s.scripts(sub)
    folder = out / "logs" / s.script_dir

    # Nothing to submit: merge at once (a JSON join), or wait for what is queued.
    if not missing:
        if active:
            ids = ",".join(sorted(active))
            echo(f"nothing to submit: every task of {out} is finished, queued or running (jobs {ids})")
            echo(f"  watch:   squeue -j {ids}")
            echo(f"  cancel:  scancel {' '.join(sorted(active))}")
            return 0
        from ..store.manifest import merge_parts
        echo(f"nothing to submit: all {tasks} tasks of {out} are finished; merging")
        manifest = merge_parts(out)
        if not parts.report_missing(out, manifest, echo):
            return 1
        echo(f"{out}/manifest.json: {len(manifest['shards'])} shards, complete")
        return 0

    listed = parts.format_ranges(missing)
    array = s.array_spec(sub, missing)
    if not dry_run:  # Slurm checks the options (partition, account, time, gres...) before anything is written
        s.sbatch(["sbatch", "--test-only", f"--array={array}"], "the render array", stdin=texts["render.sbatch"])
        s.sbatch(["sbatch", "--test-only"], "the merge job", stdin=texts["merge.sbatch"])
    write_scripts(sub, texts, folder)
    render_cmd, merge_cmd = s.submit_command(sub, folder, missing)
    old_arrays = sorted(j for j, info in active.items() if info["kind"] == "render")
    old_merges = sorted(j for j, info in active.items() if info["kind"] == "merge" and info["state"] == "PENDING")

    if dry_run:
        echo(f"would submit {len(missing)} of {tasks} tasks ({listed}); scripts written to {folder}:")
        echo("  " + shlex.join(render_cmd))
        echo("  " + shlex.join(merge_cmd))
        return 0

    array_id = s.sbatch(render_cmd, "the render array")
    after = ":".join([array_id, *old_arrays])
    try:
        merge_id = s.sbatch([a.replace("<array id>", after) for a in merge_cmd], "the merge job")
    except UsageError as exc:
        raise UsageError(f"{exc} (the render array {array_id} was submitted; merge by hand afterwards: "
                         f"clevr-remv merge {out})") from None
    for j in old_merges:  # superseded: the new merge job waits for everything
        s.cancel(j)

    ids = [array_id, merge_id, *old_arrays]
    echo(f"submitted render array {array_id}: {len(missing)} of {tasks} tasks ({listed}), "
         f"{sub.per_task} each" + (f", at most {sub.parallel} at once" if sub.parallel else ""))
    if done:
        echo(f"  {len(done)} tasks already finished" + (f"; {len(active_tasks)} still queued or running "
                                                       f"(array {', '.join(old_arrays)})" if active_tasks else ""))
    elif active_tasks:
        echo(f"  {len(active_tasks)} tasks still queued or running (array {', '.join(old_arrays)})")
    echo(f"submitted merge job {merge_id}: runs when the array{'s' if old_arrays else ''} "
         f"{', '.join([array_id, *old_arrays])} ended, writes {out}/manifest.json"
         + (f" (replaces pending merge job {', '.join(old_merges)})" if old_merges else ""))
    echo(f"  watch:   squeue -j {','.join(ids)}      (when done: sacct -j {','.join(ids)}, if accounting is on)")
    echo(f"  logs:    {folder}/render-{array_id}_<task>.out, {folder}/merge-{merge_id}.out")
    echo(f"  cancel:  scancel {' '.join(ids)}      (one task: scancel {array_id}_<task>)")
    echo("  resume:  run this same command again; it submits only the tasks not finished")
    return 0


# -- Kubernetes -------------------------------------------------------------------------------

def kubernetes(sub: Submission, folder: Path, echo: Echo) -> int:
    """Write the Indexed Job and the merge Job to ``folder``; print how to apply them."""
    s = SCHEDULERS["kubernetes"]
    folder = folder.expanduser().resolve()
    files.writable_folder(folder, "--manifests")
    write_scripts(sub, s.scripts(sub), folder)
    echo(f"{sub.scenes} scenes in {sub.shards} shards: an Indexed Job of {sub.tasks} pods "
         f"({sub.per_task} each); manifests written to {folder}:")
    for cmd in s.submit_command(sub, folder, list(range(sub.tasks))):
        echo("  " + shlex.join(cmd))
    echo("  resume:  kubectl delete the render Job and apply it again; finished shards are kept")
    return 0
