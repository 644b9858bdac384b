"""``clevr-remv submit slurm|kubernetes``: the click glue.  The work is in ``farm/submit.py``
and ``farm/schedulers/``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..errors import UsageError
from ..run.plan import MAX_SCENES
from .options import flags, overrides, run_options


@click.group()
def submit():
    """Hand a run to a cluster scheduler ('submit slurm', 'submit kubernetes')."""


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
    from ..farm import submit as farm_submit

    sub = farm_submit.prepare(
        "slurm", scenes, out, seed, config_spec, overrides(run), flags(run), blender=blender,
        program=[python or sys.executable, "-m", "clevr_remv"], shards_per_task=shards_per_task,
        job_name=job_name, setup=tuple(setup_lines), parallel=parallel, gpus_per_task=gpus_per_task,
        cpus_per_task=cpus_per_task, mem=mem,
        options={"partition": partition, "account": account, "time": time_limit, "merge_time": merge_time,
                 "merge_mem": merge_mem, "sbatch_lines": _sbatch_lines(sbatch_lines)})
    code = farm_submit.slurm(sub, dry_run, click.echo)
    if code:
        raise SystemExit(code)


def _sbatch_lines(lines) -> list[str]:
    extra = [line.strip().removeprefix("#SBATCH").strip() for line in lines if line.strip()]
    for line in extra:
        if not line.startswith("-"):
            raise UsageError(f"--sbatch-line '{line}' is not an sbatch option (e.g. '--qos=long')")
    return extra


@submit.command("kubernetes")
@click.option("--scenes", type=click.IntRange(1, MAX_SCENES), required=True,
              help="Number of scenes in the whole dataset; at most 2,000,000 per --out.")
@click.option("--out", "out", required=True, metavar="PATH",
              help="Output folder as the pods see it: an absolute path under --mount.")
@click.option("--seed", type=int, default=0, show_default=True, help="Global seed.")
@click.option("--config", "config_spec", metavar="FILE",
              help="Settings file or shipped preset; a file must be at the same path here and in the pods.")
@run_options
@click.option("--image", required=True, help="The clevr-remv image (see docs/kubernetes.md), e.g. registry.example.com/clevr-remv:0.1.0.")
@click.option("--claim", default="clevr-remv-data", show_default=True,
              help="PersistentVolumeClaim (ReadWriteMany) every pod mounts.")
@click.option("--mount", default="/data", show_default=True, help="Where the pods mount the claim.")
@click.option("--gpus-per-task", type=int, default=1, show_default=True, help="GPUs per pod (nvidia.com/gpu limit).")
@click.option("--cpus-per-task", type=int, help="CPU cores each pod requests.")
@click.option("--mem", metavar="SIZE", help="Memory per pod in Kubernetes' syntax, e.g. 16Gi.")
@click.option("--parallel", type=int, metavar="N", help="Pods at once (spec.parallelism) [default: up to 16].")
@click.option("--shards-per-task", type=int, default=1, show_default=True, help="Shards each pod renders.")
@click.option("--job-name", default="clevr-remv", show_default=True, help="Jobs are named NAME-render and NAME-merge.")
@click.option("--manifests", type=click.Path(path_type=Path), default=Path("clevr-remv-kubernetes"), show_default=True,
              help="Folder here the two Job manifests are written to.")
def kubernetes(scenes, out, seed, config_spec, image, claim, mount, gpus_per_task, cpus_per_task, mem, parallel,
               shards_per_task, job_name, manifests, **run):
    """Write a run as a Kubernetes Indexed Job (one pod per shard by default) and a merge Job,
    and print the kubectl commands that apply them.  Nothing is applied here.

    \b
    Every pod runs 'clevr-remv generate --part auto' with CLEVR_REMV_PARTS equal to the Job's
    completions.  Apply the merge Job after the render Job has ended (docs/kubernetes.md).
    """
    from pathlib import PurePosixPath

    from ..farm import submit as farm_submit

    pod_out, root = PurePosixPath(out), PurePosixPath(mount)
    if not pod_out.is_absolute() or not root.is_absolute() or root not in pod_out.parents or ".." in pod_out.parts:
        raise UsageError(f"--out '{out}' must be an absolute path under --mount '{mount}' (the pods' volume)")
    sub = farm_submit.prepare(
        "kubernetes", scenes, Path(str(pod_out)), seed, config_spec, overrides(run), flags(run), program=[],
        shards_per_task=shards_per_task, resolve_paths=False, job_name=job_name, parallel=parallel,
        gpus_per_task=gpus_per_task, cpus_per_task=cpus_per_task, mem=mem,
        options={"image": image, "claim": claim, "mount": mount})
    farm_submit.kubernetes(sub, manifests, click.echo)
