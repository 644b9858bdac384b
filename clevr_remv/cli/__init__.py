"""Command line: ``clevr-remv generate | info | ...``.

Every kind of bad input ends with one line on stderr and exit code 2, before anything is
written.  A Blender failure ends with exit code 1 and the worker log's path.  Ctrl-C ends with
exit code 130, SIGTERM with 143 (128 + 15); ``generate`` keeps every finished scene and shard
(re-running it resumes), the other commands have nothing to resume.  A reader that
closes stdout early (``clevr-remv validate ROOT | head -1``) ends the command quietly with exit
code 141 (128 + SIGPIPE, as a shell reports a process a closed pipe ends), never with a code
that has a meaning of its own (1: violations, a failed render, an incomplete merge).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
from pathlib import Path

import click

from .. import __version__
from ..config import load_config, shipped_config_names
from ..errors import CorruptShardError, DiskFullError, Terminated, UsageError, WorkerError
from ..run.plan import MAX_SCENES
from .options import overrides, run_options

log = logging.getLogger("clevr_remv")


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    if sys.stderr.isatty():
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%S"))
    root = logging.getLogger("clevr_remv")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def _verbose_callback(ctx, param, value):  # noqa: ARG001
    if value:
        _setup_logging(value, False)
    return value


def _give_verbose(cmd: click.Command) -> None:
    """A ``-v`` for the traceback on ``cmd``, or on every command of a group (recursively)."""
    if isinstance(cmd, click.Group):
        for sub in cmd.commands.values():
            _give_verbose(sub)
    elif not any(p.name == "verbose" for p in cmd.params):
        cmd.params.append(click.Option(["-v", "--verbose"], count=True, expose_value=False,
                                       is_eager=True, callback=_verbose_callback,
                                       help="More detail in the log; the traceback of an internal error."))


class _ClosedPipe(Exception):
    """stdout's reader went away (a BrokenPipeError that click would turn into exit code 1)."""


class _Group(click.Group):
    """Gives every subcommand (also ones registered later, and those of a group added whole)
    a ``-v`` for the traceback."""

    def add_command(self, cmd, name=None):
        _give_verbose(cmd)
        super().add_command(cmd, name)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            raise _ClosedPipe from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="clevr-remv")
def cli():
    """Generate CLEVR-REMV: CLEVR-style scenes rendered from a light-field camera array
    (9x9 by default) with Blender Cycles, with per-view instance masks, depth, cameras and
    referring expressions, written to sharded HDF5 files with a manifest.

    \b
    A quick look (15 s):      clevr-remv generate --scenes 8 --out preview --config preview
    The source's settings:    clevr-remv generate --scenes 2 --out clevr-remv-data
                              (about 12 minutes per scene on 2 CPU cores; 2 scenes fill train
                              and val only, 6 or more fill test too)
    """


@cli.command()
@click.option("--scenes", type=click.IntRange(1, MAX_SCENES), required=True, help="Number of scenes in the whole dataset, split 70/15/15 into train/val/test by scene index (at these shares, 6 or more scenes fill every split); at most 2,000,000 per --out.")
@click.option("--out", "out", type=click.Path(path_type=Path), required=True, help="Output folder. Re-running the same command into it resumes.")
@click.option("--seed", type=int, default=0, show_default=True, help="Global seed: a scene is a pure function of (seed, scene index, config).")
@click.option("--config", "config_spec", metavar="FILE", help=f"Settings to change: a .json or .toml file, or a shipped preset ({', '.join(shipped_config_names())}). The options below override it.  [default: default]")
@run_options
@click.option("--blender", metavar="PATH", help="Render with this blender executable instead of the bpy module (render-farm nodes).")
@click.option("--part", metavar="K/M|auto", help="Render only part K of M of the shards (one node of a farm: shards k with k % M == K-1); writes manifest.part-K-of-M.json. Join parts with 'clevr-remv merge'. 'auto': K/M from a Slurm job array or a Kubernetes Indexed Job (see 'clevr-remv submit slurm --help').")
@click.option("--overwrite", is_flag=True, help="Replace a run with other settings in --out instead of refusing.")
@click.option("--progress/--no-progress", default=None, help="A live progress bar; without it, log lines: one per finished shard and one per finished scene, at most one a minute.  [default: a bar on a terminal that reports its size]")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
@click.option("-v", "--verbose", count=True, help="More detail in the log.")
def generate(scenes, out, seed, config_spec, blender, part, overwrite, progress, quiet, verbose, **run):
    """Render a dataset into OUT: shards OUT/<split>/<split>-NNNNN.h5 and OUT/manifest.json.

    \b
    Examples:
      clevr-remv generate --scenes 10000 --out data            # the source's dataset
      clevr-remv generate --scenes 20 --out preview --config preview
      clevr-remv generate --scenes 10000 --out /shared/data --part 3/50   # farm node 3 of 50
    """
    _setup_logging(verbose, quiet)
    from ..run.job import GenerateJob

    cfg = load_config(config_spec, {**overrides(run), "workers.blender": blender})
    from ..farm.schedulers import usable_cpus
    if part == "auto":  # the part from the scheduler's array environment (docs/farms.md)
        from ..farm.parts import log_auto_part
        part = log_auto_part()
    job = GenerateJob(out, scenes, seed, cfg, overwrite=overwrite, part=part, progress=progress,
                      cpus=usable_cpus())
    manifest = job.run()
    if manifest.get("device") == "cpu" and cfg["render"]["device"] == "auto":
        from ..farm.parts import warn_unused_gpus
        warn_unused_gpus()
    if job.plan.part and not job.plan.plans_mine:
        click.echo(f"{out}: {job.plan.nothing_to_do()}; wrote the empty {job.manifest_name}", err=True)
        return
    state = "complete" if manifest["complete"] else "incomplete"
    click.echo(f"{out}: {len(manifest['shards'])} shards, {state}; manifest at "
               f"{out / job.manifest_name}", err=True)


@cli.command()
@click.argument("out", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--verify", is_flag=True, help="Recompute every shard's SHA-256 against the manifest.")
def info(out, verify):
    """Summarise a generated folder: settings, splits, shards and (with --verify) checksums."""
    from ..tools.info import describe

    ok = describe(out, verify=verify, echo=click.echo)
    if not ok:
        raise SystemExit(1)


@cli.command()
@click.argument("out", type=click.Path(path_type=Path, exists=True, file_okay=False))
def merge(out):
    """Join the manifests of farm parts (--part K/M) in OUT into OUT/manifest.json.

    Exits 1, naming each missing shard and the part that renders it, when the run is not
    complete yet (re-run those parts, or re-submit, then merge again)."""
    from ..store.manifest import merge_parts

    manifest = merge_parts(out)
    click.echo(f"{out}: {len(manifest['shards'])} shards from {manifest['parts_merged']} parts, "
               f"{'complete' if manifest['complete'] else 'incomplete'}", err=True)
    from ..farm.parts import (
        report_missing,  # name what is missing; exit 1 if anything is (docs/farms.md)
    )
    if not report_missing(out, manifest, click.echo):
        raise SystemExit(1)


def _views_checked(reader_root: Path, spec: str):
    from ..read.reader import Reader
    from ..read.views import parse_views, resolve_views

    try:
        views = parse_views(spec)
    except ValueError as exc:
        raise UsageError(f"--{exc}") from None
    try:
        resolve_views(views, tuple(Reader(reader_root).grid))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return views


def _export_out(command):
    """The output folder of an export, given as the argument OUT or as --out OUT (one of them)."""

    @functools.wraps(command)
    def run(*args, out_arg=None, out_opt=None, **kwargs):
        if (out_arg is None) == (out_opt is None):
            raise click.UsageError("give the output folder once: as OUT or as --out OUT")
        return command(*args, out=out_arg if out_arg is not None else out_opt, **kwargs)

    run = click.option("--out", "out_opt", type=click.Path(path_type=Path), metavar="OUT",
                       help="The output folder (or give it as the argument OUT): new or empty; "
                            "refused when it holds anything.")(run)
    return click.argument("out_arg", metavar="[OUT]", required=False, type=click.Path(path_type=Path))(run)


@cli.group(cls=_Group)
def export():
    """Write a generated dataset in layouts existing training code reads."""


@export.command("refcoco")
@click.argument("root", type=click.Path(path_type=Path, exists=True, file_okay=False))
@_export_out
@click.option("--views", default="center", show_default=True,
              help="center, corners, all, or views as 'u,v;u,v' (row, column from the top left).")
@click.option("--split", "splits", multiple=True, help="Only these splits (repeatable) [default: all].")
def export_refcoco_cmd(root, out, views, splits):
    """RefCOCO layout for the refer API: OUT/refcoco/refs(unc).p, OUT/refcoco/instances.json and
    OUT/images/mscoco/images/train2014/.  Load with REFER(OUT, 'refcoco', 'unc')."""
    from ..tools.export import export_refcoco

    counts = export_refcoco(root, out, _views_checked(root, views), list(splits) or None)
    click.echo(f"{out}: {counts['images']} images, {counts['refs']} refs, {counts['sentences']} sentences", err=True)
    if counts["skipped"]:
        click.echo(f"left out {counts['skipped']} expressions with several targets or none (RefCOCO names one "
                   f"object); 'clevr-remv export grefcoco' exports them", err=True)


@export.command("grefcoco")
@click.argument("root", type=click.Path(path_type=Path, exists=True, file_okay=False))
@_export_out
@click.option("--views", default="center", show_default=True,
              help="center, corners, all, or views as 'u,v;u,v' (row, column from the top left).")
@click.option("--split", "splits", multiple=True, help="Only these splits (repeatable) [default: all].")
def export_grefcoco_cmd(root, out, views, splits):
    """gRefCOCO layout (GRES: several targets or none) for the G_REFER API:
    OUT/grefcoco/grefs(unc).json, OUT/grefcoco/instances.json and OUT/images/train2014/.
    Load with G_REFER(OUT, 'grefcoco', 'unc'); a no-target ref has ann_id [-1]."""
    from ..tools.export_grefcoco import export_grefcoco

    counts = export_grefcoco(root, out, _views_checked(root, views), list(splits) or None)
    click.echo(f"{out}: {counts['images']} images, {counts['refs']} refs ({counts['no_target_refs']} without "
               f"target), {counts['sentences']} sentences", err=True)


@export.command("coco")
@click.argument("root", type=click.Path(path_type=Path, exists=True, file_okay=False))
@_export_out
@click.option("--views", default="center", show_default=True, help="center, corners, all, or 'u,v;u,v'.")
@click.option("--split", "splits", multiple=True, help="Only these splits (repeatable) [default: all].")
@click.option("--amodal", is_flag=True, help="COCO-Amodal style: each annotation also gets amodal_segmentation "
              "(the whole silhouette, RLE) and occlude_rate; objects hidden in a view are annotated too "
              "(datasets of format 1.4 on).")
def export_coco_cmd(root, out, views, splits, amodal):
    """COCO instance annotations per view: OUT/annotations/instances_<split>.json, OUT/images/<split>/."""
    from ..tools.export import export_coco

    counts = export_coco(root, out, _views_checked(root, views), list(splits) or None, amodal=amodal)
    click.echo(f"{out}: {counts['images']} images, {counts['annotations']} annotations", err=True)


@export.command("hf")
@click.argument("root", type=click.Path(path_type=Path, exists=True, file_okay=False))
@_export_out
@click.option("--views", default="all", show_default=True, help="center, corners, all, or 'u,v;u,v'.")
@click.option("--split", "splits", multiple=True, help="Only these splits (repeatable) [default: all].")
@click.option("--amodal", is_flag=True, help="Also the columns amodal_mask (the targets' whole silhouettes, PNG) "
              "and occlusion (datasets of format 1.4 on).")
def export_hf_cmd(root, out, views, splits, amodal):
    """Hugging Face layout: OUT/data/<split>-*.parquet (one row per expression and valid view),
    OUT/README.md (dataset card) and OUT/croissant.json.  Load with
    datasets.load_dataset(OUT) or mlcroissant.Dataset(OUT/croissant.json)."""
    from ..tools.export_hf import export_hf

    rows = export_hf(root, out, _views_checked(root, views), list(splits) or None, amodal=amodal)
    click.echo(f"{out}: " + ", ".join(f"{split} {n} rows" for split, n in rows.items()), err=True)


@export.command("lightfield")
@click.argument("root", type=click.Path(path_type=Path, exists=True, file_okay=False))
@_export_out
@click.option("--split", "splits", multiple=True, help="Only these splits (repeatable) [default: all].")
@click.option("--all-disparities", is_flag=True,
              help="Also every view's disparity as gt_disp_lowres_CamNNN.pfm.")
def export_lightfield_cmd(root, out, splits, all_disparities):
    """4D Light Field Benchmark layout, one folder per scene: OUT/<split>/<scene, 7 digits>/ with
    input_CamNNN.png, parameters.cfg, gt_depth_lowres.pfm and gt_disp_lowres.pfm, as the
    benchmark of Honauer and others (2016) and its lightfield-analysis tools read them; the
    disparity's sign convention is in docs/format.md."""
    from ..tools.export_lightfield import export_lightfield

    n = export_lightfield(root, out, list(splits) or None, all_disparities)
    click.echo(f"{out}: {n} scenes", err=True)


@cli.command()
@click.argument("root", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--predictions", "pred", type=click.Path(path_type=Path), required=True,
              help="HDF5 file with masks at '<expression>/<u>_<v>', or a folder of '<expression>_<u>_<v>.png'.")
@click.option("--split", default="test", show_default=True, help="Split to score.")
@click.option("--views", default="all", show_default=True, help="center, corners, all, or 'u,v;u,v'.")
@click.option("--report", "report", type=click.Path(path_type=Path), help="Folder for evaluation.json and iou_heatmap.png [default: next to the predictions].")
def evaluate(root, pred, split, views, report):
    """Score predicted masks: the source's tables in percent (central view P@K/mIoU/oIoU, four
    corners with average and SD, MVR), a JSON report and a heat map of per-view IoU.

    \b
    Expression ids are "<scene>-<k>" (k-th expression of the scene, 0-based), as in
    clevr_remv.data.RefexpDataset items' "expression" field.  Masks are H x W at the image's
    resolution; nonzero = the referred object.  A missing mask scores as empty.  Exits 1,
    naming a few keys and the expected form, when no prediction matches an expression of the
    split (another split's predictions, or keys in another form); warns when some do not.
    """
    from ..store.files import writable_folder
    from ..tools.evaluate import NoMatch, tables, write_report
    from ..tools.evaluate import evaluate as run_eval

    out = report or (pred.parent if pred.is_file() else pred) / "evaluation"
    writable_folder(out, "--report folder")  # before the work, not after the tables
    try:
        res = run_eval(root, pred, split, _views_checked(root, views))
    except NoMatch as exc:
        click.echo(f"clevr-remv: error: {exc}", err=True)
        raise SystemExit(1) from None
    click.echo(tables(res))
    js, png = write_report(res, out)
    click.echo(f"\nreport: {js}\nheat map: {png}", err=True)


@cli.command()
@click.argument("root", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.argument("out", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--split", default="test", show_default=True)
@click.option("--views", default="all", show_default=True, help="center, corners, all, or 'u,v;u,v'.")
def baseline(root, out, split, views):
    """Write predictions of the attribute oracle (no model; see clevr_remv.tools.baseline) to OUT (HDF5),
    ready for 'clevr-remv evaluate ROOT --predictions OUT'."""
    from ..tools.baseline import predict

    n = predict(root, out, split, _views_checked(root, views))
    click.echo(f"{out}: {n} predicted masks", err=True)


# Dataset tools: stats, preview, browse, validate (their modules load on use).
from .dataset import COMMANDS as _DATASET_COMMANDS  # noqa: E402

for _command in _DATASET_COMMANDS:
    cli.add_command(_command)

from .doctor import doctor as _doctor  # noqa: E402 - devices, kernels, libraries (README, GPU section)

cli.add_command(_doctor)

from .farm import submit  # noqa: E402 - render farms (submit slurm, submit kubernetes)

cli.add_command(submit)


def _terminate(signum, frame):  # noqa: ARG001
    raise Terminated  # SIGTERM (scancel, preemption) ends like Ctrl-C, resumable, but exit 143


@contextlib.contextmanager
def interrupts():
    """SIGTERM raises :class:`Terminated` in the main thread, as Ctrl-C raises KeyboardInterrupt.
    Python drops an exception raised while a finalizer or a weakref callback runs (it only
    prints it), so a signal that lands there would be lost and the command run on to its end:
    such an interrupt is delivered again, and ends the command a moment later."""
    import os
    import signal
    import threading

    restore = signal.signal(signal.SIGTERM, _terminate)
    hook = sys.unraisablehook
    timers: list[threading.Timer] = []

    def deliver_again(unraisable):
        exc = unraisable.exc_value
        if isinstance(exc, KeyboardInterrupt):  # sent again a moment later, once the callback is left
            signum = signal.SIGTERM if isinstance(exc, Terminated) else signal.SIGINT
            again = threading.Timer(0.05, os.kill, (os.getpid(), signum))
            again.daemon = True
            timers.append(again)
            again.start()
        else:
            hook(unraisable)

    sys.unraisablehook = deliver_again
    try:
        yield
    finally:
        for again in timers:
            again.cancel()
        sys.unraisablehook = hook
        signal.signal(signal.SIGTERM, restore)


def main(argv=None, pending_signals=None) -> int:
    """Entry point: click in non-standalone mode so every error is one line."""
    import threading

    interrupted = bool(pending_signals)  # SIGTERM while importing (see __main__.py)
    if threading.current_thread() is not threading.main_thread():
        return _main(argv, interrupted)
    with interrupts():
        return _main(argv, interrupted)


def _interrupted_line(argv, sigterm: bool) -> str:
    """What an interrupted command says: only ``generate`` has finished work to keep and resume."""
    args = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in args if not a.startswith("-")), None)
    line = "clevr-remv: interrupted (SIGTERM)" if sigterm else "clevr-remv: interrupted"
    if command == "generate":
        line += "; finished scenes and shards are kept, re-run the same command to resume"
    return line


def _main(argv=None, interrupted: bool = False) -> int:
    try:
        if interrupted:
            raise Terminated
        cli.main(args=argv, prog_name="clevr-remv", standalone_mode=False)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's last flush
        return 0
    except (BrokenPipeError, _ClosedPipe):
        return _closed_pipe()
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.ctx.get_help() if exc.ctx else str(exc))
        return 2
    except click.exceptions.UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx else ""
        click.echo(f"clevr-remv: error: {exc.format_message()}{hint}", err=True)
        return 2
    except Terminated:
        click.echo(_interrupted_line(argv, sigterm=True), err=True)
        return 143
    except (click.exceptions.Abort, KeyboardInterrupt) as exc:  # click turns Ctrl-C into Abort
        sigterm = isinstance(exc.__cause__ or exc.__context__, Terminated)  # click's Abort from a SIGTERM
        click.echo(_interrupted_line(argv, sigterm), err=True)
        return 143 if sigterm else 130
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except UsageError as exc:
        click.echo(f"clevr-remv: error: {exc}", err=True)
        return 2
    except WorkerError as exc:
        click.echo(f"clevr-remv: Blender failed: {exc}", err=True)
        return 1
    except (CorruptShardError, DiskFullError) as exc:
        log.debug("details", exc_info=True)
        click.echo(f"clevr-remv: error: {exc}", err=True)
        return 1
    except SystemExit as exc:
        if type(sys.stdout).__name__ == "_PacifyFlushWrapper":  # click met a closed pipe (--help)
            return _closed_pipe()
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            return _closed_pipe()
        return int(exc.code or 0) if isinstance(exc.code, int) else 1
    except Exception as exc:  # noqa: BLE001 - a bug: one line, the traceback with -v
        log.debug("internal error", exc_info=True)
        click.echo(f"clevr-remv: internal error: {type(exc).__name__}: {exc} "
                   f"(run with -v for the traceback and report it)", err=True)
        return 1


EXIT_CLOSED_PIPE = 141  # 128 + SIGPIPE


def _closed_pipe() -> int:
    """stdout's reader went away: nothing more can be said there; point stdout at /dev/null so
    that the interpreter's last flush does not fail again."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
    return EXIT_CLOSED_PIPE


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    run()
