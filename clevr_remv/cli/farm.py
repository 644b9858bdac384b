"""``clevr-remv submit slurm``: a run as a Slurm job array plus a dependent merge job.

Why plain sbatch scripts and not submitit: the scripts are written to OUT/logs/slurm/ where
users can read them, keep them, edit them (modules, QOS, constraints) and submit them again
by hand with ``sbatch``; every Slurm option is an ``#SBATCH`` line rather than an executor
parameter; nothing is pickled, so a node only needs the same ``clevr-remv`` install (or a
``--blender`` executable plus our Python), not the submitting Python's exact objects; and it adds
no dependency.  submitit's strengths (Python callables, results back in Python) are not needed:
a task's result is files on the shared file system.

Array task i (0-based) runs ``generate --part auto`` with ``CLEVR_REMV_PARTS=T``: part i+1 of T,
that is shards i, i+T, i+2T, ... (``--shards-per-task`` of them; one by default).  A re-run of
the same command submits only the tasks whose part is neither finished nor queued/running.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import click

from .. import config
from ..errors import UsageError
from ..farm import parts
from ..run.plan import MAX_SCENES, check_run, plan_shards
from ..store import files
from .options import flags, overrides, run_options

COMMENT_PREFIX = "clevr-remv:"  # job comment: marks the jobs of one output folder


@click.group()
def submit():
    """Hand a run to a cluster scheduler (Slurm: 'submit slurm')."""


@submit.command("slurm")
# -- the run (as for generate) --
@click.option("--scenes", type=click.IntRange(1, MAX_SCENES), required=True,  # generate's bound
              help="Number of scenes in the whole dataset; at most 2,000,000 per --out.")
@click.option("--out", "out", type=click.Path(path_type=Path), required=True,
              help="Output folder on a file system every node sees.")
@click.option("--seed", type=int, default=0, show_default=True, help="Global seed.")
@click.option("--config", "config_spec", metavar="FILE", help="Settings file or shipped preset (as for generate).")
@run_options
@click.option("--blender", metavar="PATH", help="blender executable on the nodes instead of the bpy module (checked on the nodes).")
# -- Slurm --
@click.option("--partition", "-p", help="Slurm partition (sbatch --partition).")
@click.option("--account", "-A", help="Slurm account to charge (sbatch --account).")
@click.option("--time", "time_limit", metavar="TIME", help="Time limit per array task, e.g. 4:00:00 (sbatch --time).")
@click.option("--gpus-per-task", type=int, help="GPUs per array task (sbatch --gres=gpu:N); one Blender worker per GPU.")
@click.option("--mem", metavar="SIZE", help="Memory per array task, e.g. 16G (sbatch --mem).")
@click.option("--cpus-per-task", type=int, help="CPU cores per array task (sbatch --cpus-per-task).")
@click.option("--parallel", type=int, metavar="N", help="At most N array tasks at once (the array's %N).")
@click.option("--shards-per-task", type=int, default=1, show_default=True,
              help="Shards each array task renders. One keeps tasks short: a slow or killed node holds back only its own shard.")
@click.option("--sbatch-line", "sbatch_lines", multiple=True, metavar="OPTION",
              help="Extra sbatch option for both jobs, e.g. '--qos=long' or '--constraint=a100' (repeatable).")
@click.option("--setup", "setup_lines", multiple=True, metavar="COMMAND",
              help="Shell line run before clevr-remv in every job, e.g. 'module load cuda' (repeatable).")
@click.option("--job-name", default="clevr-remv", show_default=True, help="Name of the array; the merge job gets '-merge'.")
@click.option("--merge-time", default="1:00:00", show_default=True, metavar="TIME", help="Time limit of the merge job.")
@click.option("--merge-mem", default="4G", show_default=True, metavar="SIZE",
              help="Memory of the merge job (a JSON join: 1 GB for 62,500 parts, docs/farms.md).")
@click.option("--python", "python", metavar="PATH", help="Python with clevr-remv installed on the nodes [default: this one].")
@click.option("--dry-run", is_flag=True, help="Write the sbatch scripts and print the commands; submit nothing.")
def slurm(scenes, out, seed, config_spec, blender, partition, account, time_limit, gpus_per_task, mem, cpus_per_task, parallel, shards_per_task,
          sbatch_lines, setup_lines, job_name, merge_time, merge_mem, python, dry_run, **run):
    """Render a dataset on Slurm: a job array (one task per shard by default) and a merge job
    that runs when the array has ended (afterany) and writes OUT/manifest.json.

    \b
    Every task runs 'clevr-remv generate --part auto' with the options given here.  The
    scripts are kept in OUT/logs/slurm/ (render.sbatch, merge.sbatch), task logs next to them.
    Run the same command again to render only what is missing (killed, failed or cancelled
    tasks); tasks still queued or running are left alone.

    \b
    Example (10,000 scenes, one GPU per task, at most 64 tasks at once):
      clevr-remv submit slurm --scenes 10000 --out /scratch/clevr-remv \\
          --partition gpu --account proj42 --time 4:00:00 --gpus-per-task 1 \\
          --cpus-per-task 4 --mem 16G --parallel 64
    """
    from ..config import load_config

    for name, value in (("--gpus-per-task", gpus_per_task), ("--cpus-per-task", cpus_per_task),
                        ("--parallel", parallel)):
        if value is not None and value < 1:
            raise UsageError(f"{name} must be at least 1")
    check_run(scenes, seed)
    cfg = load_config(config_spec, overrides(run))  # --blender: a path on the nodes, checked there, not here
    digest = config.digest(cfg, seed, scenes)
    plans = plan_shards(scenes, cfg["output"]["splits"], cfg["output"]["shard_size"])
    tasks = parts.task_count(len(plans), shards_per_task)
    out = _check_out(out)

    done = _finished_tasks(out, digest, tasks)
    active = {} if dry_run else _active_jobs(out)
    active_tasks = {t for j in active.values() if j["kind"] == "render" for t in j["tasks"]}
    missing = [i for i in range(tasks) if i not in done and i not in active_tasks]
    limit = None if dry_run or not missing else _max_array_size()
    if limit is not None and max(missing) >= limit:
        need = -(-len(plans) // limit)
        raise UsageError(f"this cluster allows array indices below {limit} (MaxArraySize) but the run needs "
                         f"{tasks} tasks; use --shards-per-task {need} or more")

    # -- the scripts -------------------------------------------------------------------------
    gen = [python or sys.executable, "-m", "clevr_remv", "generate", "--part", "auto", "--scenes", str(scenes),
           "--out", str(out), "--seed", str(seed)]
    if config_spec is not None:
        gen += ["--config", str(Path(config_spec).resolve()) if Path(config_spec).is_file() else config_spec]
    gen += flags(run)
    if blender:
        gen += ["--blender", str(Path(blender).resolve()) if "/" in blender else blender]
    gen += ["--no-progress"]
    merge_cmd = [python or sys.executable, "-m", "clevr_remv", "merge", str(out)]

    slurm_dir = out / "logs" / "slurm"
    common = []
    if partition:
        common.append(f"--partition={partition}")
    if account:
        common.append(f"--account={account}")
    extra = [line.strip().removeprefix("#SBATCH").strip() for line in sbatch_lines if line.strip()]
    for line in extra:
        if not line.startswith("-"):
            raise UsageError(f"--sbatch-line '{line}' is not an sbatch option (e.g. '--qos=long')")
    comment = f"{COMMENT_PREFIX}{out}"
    render_opts = [f"--job-name={job_name}", f"--comment={comment}",
                   f"--array=0-{tasks - 1}" + (f"%{parallel}" if parallel else ""),
                   f"--output={slurm_dir}/render-%A_%a.out", *common]
    if time_limit:
        render_opts.append(f"--time={time_limit}")
    if gpus_per_task:
        render_opts.append(f"--gres=gpu:{gpus_per_task}")
    if cpus_per_task:
        render_opts.append(f"--cpus-per-task={cpus_per_task}")
    if mem:
        render_opts.append(f"--mem={mem}")
    render_opts += extra
    merge_opts = [f"--job-name={job_name}-merge", f"--comment={comment}", f"--output={slurm_dir}/merge-%j.out",
                  *common, f"--time={merge_time}", "--cpus-per-task=1", f"--mem={merge_mem}", *extra]
    per_task = f"{shards_per_task} shard{'s' if shards_per_task > 1 else ''}"
    render_script = _script(
        f"clevr-remv render array: {scenes} scenes in {len(plans)} shards, {tasks} tasks of {per_task}.",
        ["Array task i renders part i+1 of the run (shards i, i+T, i+2T, ... with T = CLEVR_REMV_PARTS).",
         f"Submit again by hand with: sbatch {slurm_dir}/render.sbatch  (finished shards are kept;",
         f"'--array=3,7' on the sbatch line renders only those tasks), then: sbatch {slurm_dir}/merge.sbatch"],
        render_opts, setup_lines, [f"export {parts.PARTS_ENV}={tasks}"], gen)
    merge_script = _script(
        "clevr-remv merge: joins the parts' manifests into manifest.json; exits 1 naming missing shards.",
        [], merge_opts, setup_lines, [], merge_cmd)

    # Nothing to submit: merge at once (a JSON join), or wait for what is queued.
    if not missing:
        if active:
            ids = ",".join(sorted(active))
            click.echo(f"nothing to submit: every task of {out} is finished, queued or running (jobs {ids})")
            click.echo(f"  watch:   squeue -j {ids}")
            click.echo(f"  cancel:  scancel {' '.join(sorted(active))}")
            return
        from ..store.manifest import merge_parts
        click.echo(f"nothing to submit: all {tasks} tasks of {out} are finished; merging")
        manifest = merge_parts(out)
        if not parts.report_missing(out, manifest, click.echo):
            raise SystemExit(1)
        click.echo(f"{out}/manifest.json: {len(manifest['shards'])} shards, complete")
        return

    listed = parts.format_ranges(missing)
    array = listed + (f"%{parallel}" if parallel else "")
    if not dry_run:  # Slurm checks the options (partition, account, time, gres...) before anything is written
        _sbatch(["sbatch", "--test-only", f"--array={array}"], "the render array", stdin=render_script)
        _sbatch(["sbatch", "--test-only"], "the merge job", stdin=merge_script)
    slurm_dir.mkdir(parents=True, exist_ok=True)
    (slurm_dir / "render.sbatch").write_text(render_script, encoding="utf-8")
    (slurm_dir / "merge.sbatch").write_text(merge_script, encoding="utf-8")
    render_cmd = ["sbatch", "--parsable", f"--array={array}", str(slurm_dir / "render.sbatch")]
    old_arrays = sorted(j for j, info in active.items() if info["kind"] == "render")
    old_merges = sorted(j for j, info in active.items() if info["kind"] == "merge" and info["state"] == "PENDING")

    if dry_run:
        click.echo(f"would submit {len(missing)} of {tasks} tasks ({listed}); scripts written to {slurm_dir}:")
        click.echo("  " + shlex.join(render_cmd))
        click.echo("  " + shlex.join(["sbatch", "--parsable", "--dependency=afterany:<array id>",
                                      str(slurm_dir / "merge.sbatch")]))
        return

    array_id = _sbatch(render_cmd, "the render array")
    after = ":".join([array_id, *old_arrays])
    try:
        merge_id = _sbatch(["sbatch", "--parsable", f"--dependency=afterany:{after}",
                            str(slurm_dir / "merge.sbatch")], "the merge job")
    except UsageError as exc:
        raise UsageError(f"{exc} (the render array {array_id} was submitted; merge by hand afterwards: "
                         f"clevr-remv merge {out})") from None
    for j in old_merges:  # superseded: the new merge job waits for everything
        subprocess.run(["scancel", j], capture_output=True, timeout=60)

    ids = [array_id, merge_id, *old_arrays]
    click.echo(f"submitted render array {array_id}: {len(missing)} of {tasks} tasks ({listed}), "
               f"{per_task} each" + (f", at most {parallel} at once" if parallel else ""))
    if done:
        click.echo(f"  {len(done)} tasks already finished" + (f"; {len(active_tasks)} still queued or running "
                                                              f"(array {', '.join(old_arrays)})" if active_tasks else ""))
    elif active_tasks:
        click.echo(f"  {len(active_tasks)} tasks still queued or running (array {', '.join(old_arrays)})")
    click.echo(f"submitted merge job {merge_id}: runs when the array{'s' if old_arrays else ''} "
               f"{', '.join([array_id, *old_arrays])} ended, writes {out}/manifest.json"
               + (f" (replaces pending merge job {', '.join(old_merges)})" if old_merges else ""))
    click.echo(f"  watch:   squeue -j {','.join(ids)}      (when done: sacct -j {','.join(ids)}, if accounting is on)")
    click.echo(f"  logs:    {slurm_dir}/render-{array_id}_<task>.out, {slurm_dir}/merge-{merge_id}.out")
    click.echo(f"  cancel:  scancel {' '.join(ids)}      (one task: scancel {array_id}_<task>)")
    click.echo("  resume:  run this same command again; it submits only the tasks not finished")


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


def _check_out(out: Path) -> Path:
    from ..run.folder import LOCK_PREFIX
    from ..store.files import writable_folder

    out = out.expanduser().resolve()
    writable_folder(out, "--out")
    if out.exists():
        other = [p for p in out.iterdir() if p.name != "logs" and not p.name.startswith(LOCK_PREFIX)]
        if other and not (any(out.glob("manifest*.json")) or (out / ".work").exists()):
            raise UsageError(f"'{out}' is not empty and holds no clevr-remv run; choose an empty or new folder")
    return out



def _finished_tasks(out: Path, digest: str, tasks: int) -> set[int]:
    """0-based tasks whose part manifest says complete; refuses folders holding another run."""

    done = set()
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


def _active_jobs(out: Path) -> dict[str, dict]:
    """Queued or running jobs of this output folder: {job id: {kind, state, tasks}}."""
    if shutil.which("squeue") is None or shutil.which("sbatch") is None:
        raise UsageError("sbatch/squeue not found on PATH; run this on a Slurm login node (or use --dry-run)")
    r = subprocess.run(["squeue", "--me", "-h", "-r", "-o", "%F|%K|%j|%k|%T"], capture_output=True, text=True,
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


def _max_array_size() -> int | None:
    r = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=120)
    for line in r.stdout.splitlines():
        if line.startswith("MaxArraySize"):
            try:
                return int(line.split("=", 1)[1].strip())
            except ValueError:
                return None
    return None


def _sbatch(cmd: list[str], what: str, stdin: str | None = None) -> str:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, input=stdin)
    if r.returncode != 0:
        lines = r.stderr.strip().splitlines() or ["no message"]
        reason = next((ln for ln in lines if ln.startswith("sbatch: error:")), lines[-1])
        raise UsageError(f"sbatch refused {what}: {reason.removeprefix('sbatch: error: ')}")
    return r.stdout.strip().split(";")[0]
