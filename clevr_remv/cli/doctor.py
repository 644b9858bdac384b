"""``clevr-remv doctor``: the command line of clevr_remv.tools.doctor (checks and --prepare)."""

from __future__ import annotations

import json
import sys

import click

from ..tools.doctor import collect, parse_sm_list, prepare, render_text


@click.command()
@click.option("--prepare", "do_prepare", is_flag=True, help="Build the missing GPU kernels with ptxas now and install them into "
              "Blender's Cycles add-on (for a container image: run it at build time; no GPU needed).")
@click.option("--sm", "sm_spec", metavar="LIST", help="Compute capabilities to check/prepare instead of this "
              "machine's GPUs, e.g. 80,90 [default: the GPUs here; without any, 80,90 (A100, H100)].")
@click.option("--jobs", type=int, help="ptxas threads for --prepare [default: all cores].")
@click.option("--blender", metavar="PATH", help="Check this blender executable instead of the bpy module.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (for scripts).")
def doctor(do_prepare, sm_spec, jobs, blender, as_json):
    """Check this machine for rendering: system libraries, Blender and its devices, NVIDIA GPUs
    (compute capability, driver), each GPU's Cycles kernel, ptxas, the denoiser's device.

    \b
    Kernel states: shipped (a cubin comes with Blender); built (by clevr-remv, installed in the
    add-on); cached (built, but the add-on's folder is read-only: generate loads it through a
    linked copy of the folder); jit (only PTX: the NVIDIA driver compiles it on the first
    render, 9+ minutes, once per machine); missing.  generate builds what is missing itself
    before its first GPU render when ptxas is there; --prepare does it now.
    Exit code 0 when Blender can render here (with or without a GPU), 1 when not.

    \b
    Examples:
      clevr-remv doctor
      clevr-remv doctor --prepare            # build kernels for this machine's GPUs
      clevr-remv doctor --prepare --sm 80,90 # in a Dockerfile: for A100 and H100
    """
    try:
        sm = parse_sm_list(sm_spec)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--sm") from None
    report = collect(blender, sm)
    say = (lambda s: click.echo(s, err=True)) if as_json else click.echo
    if not as_json:
        for line in render_text(report):
            click.echo(line)
    ok = report["blender"]["ok"] and not report["libraries"]["missing"]
    if do_prepare:
        ok = prepare(report, jobs, say) and ok
    if as_json:
        click.echo(json.dumps(report, indent=1, default=str))
    sys.stdout.flush()
    if not ok:
        raise SystemExit(1)
