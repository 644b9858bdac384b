"""The parts of the GPU acceptance kit: split one archive into numbered parts, write their
SHA-256 sums and the manifest; on the GPU node, check every part and unpack the archive.

Standard library only, and Python 3.8 or newer: on the GPU node it runs under the node's own
``python3`` (3.12 there), before the kit's Python 3.11 is unpacked.  build.py imports it; the
device script runs it as a program:

    python3 kitparts.py check KIT              # every part: present, size, SHA-256; then the whole archive
    python3 kitparts.py check-part KIT NAME    # one part (after it has travelled), against the manifest
    python3 kitparts.py extract KIT DEST       # check, then unpack the archive into DEST
    python3 kitparts.py split ARCHIVE KIT [--part-mib 60]

A missing, short or damaged part ends the program with one line on stderr and exit code 1,
before anything is unpacked.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

PART_PREFIX = "part-"
SUMS = "SHA256SUMS"
MANIFEST = "manifest.json"
MIB = 1 << 20
CHUNK = 4 * MIB


class KitError(Exception):
    """A kit that cannot be used; the message is one line saying why and what to do."""


def part_name(i: int) -> str:
    return f"{PART_PREFIX}{i:03d}"


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


# -- building ---------------------------------------------------------------------------------------
def split_file(src, kit_dir, part_bytes: int) -> list:
    """Cut ``src`` into ``kit_dir/part-000``, ``part-001``, ... of at most ``part_bytes`` each
    (stale parts of an earlier kit are removed first).  Returns [{name, bytes, sha256}]."""
    if part_bytes < 1:
        raise ValueError("part_bytes must be positive")
    src, kit_dir = Path(src), Path(kit_dir)
    kit_dir.mkdir(parents=True, exist_ok=True)
    for old in kit_dir.glob(PART_PREFIX + "*"):
        old.unlink()
    parts = []
    with open(src, "rb") as fi:
        i = 0
        while True:
            h = hashlib.sha256()
            written = 0
            path = kit_dir / part_name(i)
            with open(path, "wb") as fo:
                while written < part_bytes:
                    block = fi.read(min(CHUNK, part_bytes - written))
                    if not block:
                        break
                    fo.write(block)
                    h.update(block)
                    written += len(block)
            if written == 0:
                path.unlink()
                break
            parts.append({"name": path.name, "bytes": written, "sha256": h.hexdigest()})
            i += 1
    if not parts:  # an empty archive still makes one (empty) part, so the kit is never partless
        (kit_dir / part_name(0)).write_bytes(b"")
        parts.append({"name": part_name(0), "bytes": 0, "sha256": hashlib.sha256(b"").hexdigest()})
    return parts


def write_sums(kit_dir, entries) -> Path:
    """``SHA256SUMS`` in the format of ``sha256sum`` (``sha256sum -c SHA256SUMS`` checks it)."""
    path = Path(kit_dir) / SUMS
    path.write_text("".join(f"{e['sha256']}  {e['name']}\n" for e in entries))
    return path


def read_sums(path) -> dict:
    out = {}
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64:
            raise KitError(f"{path}: line {n} is not '<sha256>  <name>'; rebuild the kit (bench/gpu_kit/build.py)")
        out[name.lstrip("*")] = digest
    return out


def write_manifest(kit_dir, manifest: dict) -> Path:
    path = Path(kit_dir) / MANIFEST
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=False) + "\n")
    os.replace(tmp, path)
    return path


def describe_parts(parts: list, archive_sha256: str, archive_bytes: int) -> dict:
    """The manifest's ``archive`` and ``parts`` entries for parts made by :func:`split_file`."""
    return {"archive": {"bytes": archive_bytes, "sha256": archive_sha256}, "parts": parts}


# -- on the node --------------------------------------------------------------------------------------
def load_manifest(kit_dir) -> dict:
    path = Path(kit_dir) / MANIFEST
    if not path.is_file():
        raise KitError(f"{path} is missing: carry it with the first part (see docs/benchmarks.md, 'GPU acceptance kit')")
    try:
        manifest = json.loads(path.read_text())
        manifest["parts"], manifest["archive"]["sha256"]
    except (ValueError, KeyError, TypeError) as exc:
        raise KitError(f"{path} is damaged ({exc.__class__.__name__}): carry it again") from None
    return manifest


def _check_sums_file(kit_dir, manifest: dict) -> None:
    path = Path(kit_dir) / SUMS
    if not path.is_file():
        raise KitError(f"{path} is missing: carry it with the first part")
    sums = read_sums(path)
    for p in manifest["parts"]:
        if sums.get(p["name"]) != p["sha256"]:
            raise KitError(f"{SUMS} and {MANIFEST} disagree on {p['name']}: they come from different "
                           f"builds; carry both again from the same build")


def check_part(kit_dir, entry: dict, total: int | None = None) -> str:
    """Check one part against its manifest entry; returns its SHA-256.  Raises KitError."""
    path = Path(kit_dir) / entry["name"]
    of = f" (of {total})" if total else ""
    if not path.is_file():
        raise KitError(f"{entry['name']}{of} is missing from {kit_dir}: carry it (one call per part), then run again")
    size = path.stat().st_size
    if size != entry["bytes"]:
        raise KitError(f"{entry['name']}{of} has {size} bytes, expected {entry['bytes']}: cut short or damaged "
                       f"in transfer; carry it again")
    digest = _sha256_file(path)
    if digest != entry["sha256"]:
        raise KitError(f"{entry['name']}{of} is damaged: SHA-256 {digest[:16]}..., expected "
                       f"{entry['sha256'][:16]}...; carry it again")
    return digest


def check(kit_dir, say=None) -> dict:
    """Check the whole kit: manifest and sums agree, every part is there with its size and
    SHA-256, and the parts joined give the archive's SHA-256.  Returns the manifest."""
    kit_dir = Path(kit_dir)
    manifest = load_manifest(kit_dir)
    _check_sums_file(kit_dir, manifest)
    parts = manifest["parts"]
    missing = [p["name"] for p in parts if not (kit_dir / p["name"]).is_file()]
    if missing:  # name them all at once: the fix is one call per missing part
        raise KitError(f"{len(missing)} of {len(parts)} parts missing from {kit_dir}: {', '.join(missing)}; "
                       f"carry each (one call per part), then run again")
    whole = hashlib.sha256()
    for p in parts:
        check_part(kit_dir, p, len(parts))
        with open(kit_dir / p["name"], "rb") as fh:
            for block in iter(lambda: fh.read(CHUNK), b""):
                whole.update(block)
    if whole.hexdigest() != manifest["archive"]["sha256"]:
        raise KitError("the parts are each intact but do not join to the archive the manifest names "
                       "(parts from different builds?): carry all parts of one build")
    known = {p["name"] for p in parts}
    stale = sorted(p.name for p in kit_dir.glob(PART_PREFIX + "*") if p.name not in known)
    if stale and say:
        say(f"ignoring {len(stale)} file(s) that this kit's manifest does not list: {', '.join(stale)}")
    return manifest


class _Joined:
    """A read-only stream over the parts, in order (what ``cat part-*`` gives)."""

    def __init__(self, paths):
        self._paths = list(paths)
        self._fh = None

    def read(self, n: int = -1) -> bytes:
        out = b""
        while n < 0 or len(out) < n:
            if self._fh is None:
                if not self._paths:
                    break
                self._fh = open(self._paths.pop(0), "rb")
            block = self._fh.read(-1 if n < 0 else n - len(out))
            if not block:
                self._fh.close()
                self._fh = None
                continue
            out += block
        return out

    def close(self):
        if self._fh is not None:
            self._fh.close()


def _unpack_component(archive: Path, dest: Path, use_tools: bool) -> str:
    """Unpack one ``NAME.tar.xz`` into ``dest``: ``xz -dc -T0 | tar -x`` where both tools are
    there (multi-threaded), else Python's lzma and tarfile.  Returns which was used."""
    dest.mkdir(parents=True, exist_ok=True)
    xz, tar = shutil.which("xz"), shutil.which("tar")
    if use_tools and xz and tar:
        with open(archive, "rb") as fi:
            xzp = subprocess.Popen([xz, "-dc", "-T0"], stdin=fi, stdout=subprocess.PIPE)
            tarp = subprocess.Popen([tar, "-x", "--no-same-owner", "-C", str(dest)], stdin=xzp.stdout)
            xzp.stdout.close()
            rx, rt = xzp.wait(), tarp.wait()
        if rx or rt:
            raise KitError(f"unpacking {archive.name} failed (xz exit {rx}, tar exit {rt}) although every part "
                           f"checked out: is the disk full? ({dest})")
        return "xz+tar"
    with tarfile.open(archive, mode="r:xz") as tf:
        _extractall(tf, dest)
    return "python"


def _extractall(tf, dest: Path) -> None:
    if hasattr(tarfile, "data_filter"):
        tf.extractall(dest, filter="fully_trusted")  # the kit's own archive: links kept as they are
    else:
        tf.extractall(dest)


def extract(kit_dir, dest, say=None, use_tools: bool = True) -> dict:
    """Check the kit, then unpack it into ``dest`` (emptied first): the parts joined are a tar
    of ``NAME.tar.xz`` components; each is unpacked into ``dest/NAME``, all at once.  Returns
    the manifest."""
    from concurrent.futures import ThreadPoolExecutor

    say = say or (lambda s: None)
    manifest = check(kit_dir, say)
    dest = Path(dest)
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    joined = _Joined(Path(kit_dir) / p["name"] for p in manifest["parts"])
    try:
        with tarfile.open(fileobj=joined, mode="r|") as tf:
            _extractall(tf, dest)
    except (tarfile.TarError, OSError) as exc:
        raise KitError(f"the joined parts are not a readable tar ({exc}) although every SHA-256 matched: "
                       f"rebuild the kit") from None
    finally:
        joined.close()
    comps = sorted(dest.glob("*.tar.xz"))
    with ThreadPoolExecutor(max_workers=max(1, len(comps))) as pool:
        how = list(pool.map(lambda c: _unpack_component(c, dest / c.name[:-len(".tar.xz")], use_tools), comps))
    for c in comps:
        c.unlink()
    say(f"unpacked {len(comps)} components ({', '.join(c.name for c in comps)}) with "
        f"{', '.join(sorted(set(how)))} into {dest}")
    (dest / ".kit-archive-sha256").write_text(manifest["archive"]["sha256"] + "\n")
    return manifest


# -- command line ------------------------------------------------------------------------------------
def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    say = lambda s: print(f"gpu kit: {s}", file=sys.stderr)  # noqa: E731
    usage = "usage: kitparts.py check KIT | check-part KIT NAME | extract KIT DEST | split ARCHIVE KIT [--part-mib N]"
    if not argv:
        print(usage, file=sys.stderr)
        return 2
    cmd, args = argv[0], argv[1:]
    try:
        if cmd == "check" and len(args) == 1:
            m = check(args[0], say)
            print(f"gpu kit: {len(m['parts'])} parts, {m['archive']['bytes']} bytes, every SHA-256 correct")
        elif cmd == "check-part" and len(args) == 2:
            m = load_manifest(args[0])
            entry = next((p for p in m["parts"] if p["name"] == args[1]), None)
            if entry is None:
                raise KitError(f"{args[1]} is not a part of this kit ({len(m['parts'])} parts: "
                               f"{m['parts'][0]['name']} to {m['parts'][-1]['name']})")
            check_part(args[0], entry, len(m["parts"]))
            have = [p["name"] for p in m["parts"] if (Path(args[0]) / p["name"]).is_file()]
            print(f"gpu kit: {args[1]} ok ({entry['bytes']} bytes); {len(have)} of {len(m['parts'])} parts here")
        elif cmd == "extract" and len(args) == 2:
            m = extract(args[0], args[1], say)
            print(f"gpu kit: checked {len(m['parts'])} parts and unpacked them into {args[1]}")
        elif cmd == "split" and len(args) in (2, 4):
            mib = 60
            if len(args) == 4:
                if args[2] != "--part-mib":
                    print(usage, file=sys.stderr)
                    return 2
                mib = float(args[3])
            parts = split_file(args[0], args[1], int(mib * MIB))
            print(json.dumps(parts, indent=1))
        else:
            print(usage, file=sys.stderr)
            return 2
    except KitError as exc:
        print(f"gpu kit: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
