"""``clevr-remv info``: a summary of a generated folder, and with --verify its checksums and contents."""

from __future__ import annotations

from pathlib import Path

from ..store import shards
from ..store.manifest import load_manifest


def human_bytes(n: float) -> str:
    """Bytes in a unit that fits: 512 B, 3.4 KB, 12.1 MB, 1.53 GB (powers of 1000)."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            value = n / scale
            return f"{value:.3g} {unit}" if value < 100 else f"{value:.0f} {unit}"
    return f"{int(n)} B"


def _plural(n: int, word: str) -> str:
    return word if n == 1 else word + "s"


def storage_line(m: dict) -> str:
    """The storage settings of a run: profile, codecs, depth precision, compression."""
    oc = (m.get("config") or {}).get("output") or {}
    try:
        from ..store.schema import codec_descriptions
        named = codec_descriptions(m["config"], str(m.get("format_version")))
        codecs = ", ".join(f"{k} {v['codec']} {v['dtype']}" for k, v in named.items())
    except Exception:  # noqa: BLE001  (a manifest of another version: show what it says)
        codecs = "?"
    return (f"profile {oc.get('profile', 'standard')} ({codecs}); {oc.get('compression', 'gzip')} "
            f"level {oc.get('compression_level', 4)}")


def describe(out: Path, verify: bool, echo) -> bool:
    m = load_manifest(out)
    echo(f"CLEVR-REMV run in {out}")
    echo(f"  generator {m['generator']['version']}, format {m['format_version']}, digest {m['config_digest']}")
    echo(f"  {m['scenes']} scenes, seed {m['seed']}, grid {m['grid'][0]}x{m['grid'][1]}, "
         f"{m['resolution'][0]}x{m['resolution'][1]}, {'complete' if m['complete'] else 'INCOMPLETE'}")
    echo(f"  storage: {storage_line(m)}")
    for name, split in m["splits"].items():
        done = [e for e in m["shards"] if e["split"] == name]
        scenes = sum(e["num_scenes"] for e in done)
        a, b = split["scene_range"]
        if b <= a:
            echo(f"  {name:>6}: no scenes (0 of {m['scenes']})")
            continue
        planned = f"scene {a}" if b - a == 1 else f"scenes {a}-{b - 1} ({b - a})"
        echo(f"  {name:>6}: {planned}; {len(done)} {_plural(len(done), 'shard')} finished "
             f"({scenes} {_plural(scenes, 'scene')}), {sum(e['refexps'] for e in done)} expressions, "
             f"{human_bytes(sum(e['bytes'] for e in done))}")
    ok = True
    if verify:
        from ..errors import CorruptShardError
        from ..read.reader import Reader, check_shard_readable

        reader = Reader(out)
        mismatched = False
        for si, e in enumerate(m["shards"]):
            path = Path(out) / e["path"]
            if not path.exists():
                echo(f"  MISSING {e['path']}")
                ok = False
            elif shards.sha256_file(path) != e["sha256"]:
                echo(f"  CHECKSUM MISMATCH {e['path']}")
                ok = False
            else:
                # A matching checksum proves the bytes did not change since they were
                # written, not that they were written right: read every chunk too.
                problem = check_shard_readable(path)
                if problem:
                    echo(f"  UNREADABLE {e['path']}: {problem}")
                    ok = False
                    continue
                try:  # the file is the one its entry names (settings, scene count and indices);
                    # its bounds were just checked by check_shard_readable
                    reader._check_entry(si, reader._files.get(path))
                except CorruptShardError as exc:
                    echo(f"  MISMATCH {e['path']}: {str(exc).split('(', 1)[-1].split(');')[0]}")
                    ok, mismatched = False, True
        reader.close()
        if mismatched:
            from ..read.reader import MISMATCH_REPAIR

            echo("  manifest entries that do not match their shards: " + MISMATCH_REPAIR.format(root=out))
        echo("  checksums and contents: " + ("all match and read" if ok else
                                              "problems found; re-run the same 'clevr-remv generate' "
                                              "command to re-render the damaged shards"))
    return ok
