"""The commands that look at a finished dataset: ``stats``, ``preview``, ``browse``,
``validate``.  Import-light (click only), so that registering them costs the command line
nothing; the work is in :mod:`.stats`, :mod:`.preview`, :mod:`.browse` and :mod:`.validate`.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..errors import UsageError

_ROOT = click.Path(path_type=Path, exists=True, file_okay=False)


@click.command("stats")
@click.argument("root", type=_ROOT)
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON (for scripts) instead of tables.")
@click.option("--plots", "plots", type=click.Path(path_type=Path), metavar="DIR",
              help="Also write histograms as PNGs into DIR: stats-<split>.png (objects per pair, words per expression).")
def stats(root, as_json, plots):
    """Statistics of a generated dataset per split, beside the source's numbers (thesis 6.4):
    (expression, scene) pairs and their count extrapolated to 10,000 scenes, objects per pair,
    words per expression, family mix, share with a relation, (expression, view) pairs not
    valid (by reason), expressions dropped by the generator, and bytes per scene."""
    from ..store.files import writable_folder
    from ..tools.stats import collect, format_table, summarise, write_plots

    if plots is not None:  # before the pass over every shard, not after it
        writable_folder(plots, "--plots")
    s = summarise(collect(root))
    if as_json:
        click.echo(json.dumps(s, indent=2))
    else:
        click.echo(format_table(s), nl=False)
    if plots is not None:
        for p in write_plots(s, plots):
            click.echo(f"plot: {p}", err=True)


@click.command("preview")
@click.argument("root", type=_ROOT)
@click.option("--scene", "scene", type=int, required=True, help="Global scene index (as in the manifest's scene ranges).")
@click.option("--out", "out", type=click.Path(path_type=Path), help="PNG to write [default: scene-K.png here]; "
              "the animation goes beside it with .gif.")
def preview(root, scene, out):
    """Pictures of one scene: a PNG of all U x V views with instance masks overlaid and each
    expression's target highlighted with the views it is valid in; an animated GIF sweeping
    the views so the parallax shows."""
    from ..tools.common import check_output_file
    from ..tools.preview import write_preview

    out = check_output_file(out or Path(f"scene-{scene}.png"), (".png",))
    if out.with_suffix(".gif").is_dir():
        raise UsageError(f"'{out.with_suffix('.gif')}' is a folder; the animation needs that name")
    png, anim = write_preview(root, scene, out)
    click.echo(f"{png}\n{anim}", err=True)


@click.command("browse")
@click.argument("root", type=_ROOT)
@click.option("--out", "out", type=click.Path(path_type=Path), required=True,
              help="Folder for the site (new, empty, or a site browse wrote before, which is replaced).")
@click.option("--scenes", "scenes", metavar="LIST",
              help="Scenes to include: 'all', or a list like '0-19,40' [default: the first 100].")
def browse(root, out, scenes):
    """Write a static site to look at a dataset: a scene list; each scene's U x V views with a
    control to move across them (arrow keys too); instance masks on/off; the expressions with
    the views each is valid in; clicking one highlights its target.  Open OUT/index.html in a
    browser; no server, no network."""
    from ..tools.browse import build_site

    res = build_site(root, out, scenes, echo=lambda s: click.echo(s, err=True))
    click.echo(f"{res['index']}: {res['scenes']} scenes", err=True)


@click.command("validate")
@click.argument("root", type=_ROOT)
def validate(root):
    """Read every shard in full and check it: programs re-execute to their targets,
    visible_pixels and valid_views against the instance maps and each view's directions,
    cameras against the rig formulas, ids only where depth is finite, shapes and dtypes,
    split sizes against the manifest, checksums.  Prints every violation with its place
    (shard, scene, view, expression) and a progress line per shard on stderr; exits 1 when it
    finds any, 0 when the dataset is sound."""
    from ..tools.validate import Validator

    v = Validator(root, report=lambda x: click.echo(x.line()), progress=lambda s: click.echo(s, err=True))
    found = v.run()
    c = v.counts
    summary = (f"{c['shards']} shards, {c['scenes']} scenes, {c['views']} views, "
               f"{c['expressions']} expressions read")
    if found:
        kinds: dict[str, int] = {}
        for x in found:
            kinds[x.kind] = kinds.get(x.kind, 0) + 1
        hit = sorted({x.shard for x in found})
        click.echo(f"validate: {len(found)} violation(s) ({', '.join(f'{k} {n}' for k, n in sorted(kinds.items()))}) "
                   f"in {', '.join(hit)}; {summary}", err=True)
        raise SystemExit(1)
    click.echo(f"validate: no violations; {summary}", err=True)


COMMANDS = (stats, preview, browse, validate)
