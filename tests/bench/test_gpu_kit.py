"""The GPU acceptance kit's pure logic (bench/gpu_kit): splitting into parts, the checksum file
and manifest, and the check-and-unpack that must refuse a missing or damaged part, in Python
and in the generated device script.  Tiny fake payloads only: nothing is downloaded."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

GPU_KIT = Path(__file__).resolve().parents[2] / "bench" / "gpu_kit"


def _load(name):
    sys.path.insert(0, str(GPU_KIT))
    try:
        spec = importlib.util.spec_from_file_location(f"gpu_kit_{name}", GPU_KIT / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(str(GPU_KIT))


kitparts = _load("kitparts")
build = _load("build")


def _tar_xz(files: dict) -> bytes:
    """A .tar.xz of {name: bytes or ('link', target)}, made in Python."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:xz") as tf:
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            if isinstance(data, tuple):
                ti.type, ti.linkname = tarfile.SYMTYPE, data[1]
                tf.addfile(ti)
            else:
                ti.size, ti.mode = len(data), 0o755
                tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def make_kit(tmp: Path, part_bytes: int = 1000) -> tuple[Path, dict]:
    """A kit as build.py lays it out: a tar of component .tar.xz files, split into parts, with
    SHA256SUMS, manifest.json, kitparts.py and the device script.  Returns (kit, manifest)."""
    rnd = os.urandom(2500)  # incompressible, so that the archive spans several parts
    comps = {
        "python.tar.xz": _tar_xz({"bin/python3.11": b"#!/bin/sh\necho fake\n", "lib/libfake.so.1": rnd[:1200],
                                  "lib/libfake.so": ("link", "libfake.so.1")}),
        "wheels.tar.xz": _tar_xz({"wheels/fake-1.0-py3-none-any.whl": rnd[1200:]}),
    }
    archive = tmp / "kit.tar"
    with tarfile.open(archive, "w", format=tarfile.GNU_FORMAT) as tf:
        for name, data in comps.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    kit = tmp / ".gpukit"
    parts = kitparts.split_file(archive, kit, part_bytes)
    manifest = {"kit": "test", "python": {"version": "3.11.7"}, "download": {"project_wheel": "fake.whl"},
                "project": {"commit": "0" * 40}, **kitparts.describe_parts(parts, hashlib.sha256(archive.read_bytes()).hexdigest(),
                                                         archive.stat().st_size)}
    kitparts.write_sums(kit, parts)
    kitparts.write_manifest(kit, manifest)
    shutil.copyfile(GPU_KIT / "kitparts.py", kit / "kitparts.py")
    build.render_runner(GPU_KIT / "run_on_gpu.sh.in", kit / "run_on_gpu.sh", {
        "KIT_FORMAT": 1, "BPY_VERSION": "4.5.15", "PYTHON_VERSION": "3.11.7", "PROJECT_WHEEL": "fake.whl",
        "PROJECT_COMMIT": "0" * 40, "ARCHIVE_SHA256": manifest["archive"]["sha256"], "NPARTS": len(parts)})
    archive.unlink()
    return kit, manifest


def _flip(path: Path, offset: int = 10) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


# -- splitting ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("size,part", [(0, 7), (1, 7), (7, 7), (8, 7), (20, 7), (21, 7), (5000, 1024)])
def test_split_sizes_and_rejoin(tmp_path, size, part):
    data = os.urandom(size)
    src = tmp_path / "a.bin"
    src.write_bytes(data)
    parts = kitparts.split_file(src, tmp_path / "kit", part)
    assert len(parts) == max(1, -(-size // part))  # no empty trailing part, one part for an empty file
    assert all(p["bytes"] <= part for p in parts)
    assert [p["name"] for p in parts] == [f"part-{i:03d}" for i in range(len(parts))]
    joined = b"".join((tmp_path / "kit" / p["name"]).read_bytes() for p in parts)
    assert joined == data
    for p in parts:
        assert hashlib.sha256((tmp_path / "kit" / p["name"]).read_bytes()).hexdigest() == p["sha256"]


def test_split_removes_stale_parts(tmp_path):
    src = tmp_path / "a.bin"
    src.write_bytes(os.urandom(50))
    kitparts.split_file(src, tmp_path / "kit", 10)
    src.write_bytes(os.urandom(15))
    parts = kitparts.split_file(src, tmp_path / "kit", 10)
    assert sorted(p.name for p in (tmp_path / "kit").glob("part-*")) == ["part-000", "part-001"] == [p["name"] for p in parts]


def test_sums_file_is_sha256sum_format(tmp_path):
    kit, manifest = make_kit(tmp_path)
    assert kitparts.read_sums(kit / "SHA256SUMS") == {p["name"]: p["sha256"] for p in manifest["parts"]}
    if shutil.which("sha256sum"):
        assert subprocess.run(["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=kit).returncode == 0
    (kit / "SHA256SUMS").write_text("not a sum line\n")
    with pytest.raises(kitparts.KitError, match="line 1"):
        kitparts.read_sums(kit / "SHA256SUMS")


def test_scripts_only_rewrites_small_files_and_keeps_parts(tmp_path):
    kit, manifest = make_kit(tmp_path)
    before = {p["name"]: (kit / p["name"]).read_bytes() for p in manifest["parts"]}
    (kit / "run_on_gpu.sh").write_text("stale\n")
    assert build.main(["--kit", str(kit), "--scripts-only"]) == 0
    after = kitparts.check(kit)
    assert {p["name"]: (kit / p["name"]).read_bytes() for p in after["parts"]} == before
    assert after["archive"] == manifest["archive"]
    script = (kit / "run_on_gpu.sh").read_text()
    assert manifest["archive"]["sha256"] in script and "@" + "ARCHIVE_SHA256@" not in script
    for name in ("kitparts.py", "gpu_bench.py", "run_on_gpu.sh"):
        assert after["helpers"][name] == hashlib.sha256((kit / name).read_bytes()).hexdigest()
    assert len(after["travel"]["calls"]) == len(after["parts"]) and "scripts_refreshed" in after


def test_scripts_only_cuts_the_archive_again(tmp_path):
    kit, manifest = make_kit(tmp_path)  # parts of 1000 bytes
    joined = b"".join((kit / p["name"]).read_bytes() for p in manifest["parts"])
    assert build.main(["--kit", str(kit), "--scripts-only", "--part-mib", str(700 / build.MIB)]) == 0
    after = kitparts.check(kit)
    assert len(after["parts"]) == -(-len(joined) // 700) > len(manifest["parts"])
    assert b"".join((kit / p["name"]).read_bytes() for p in after["parts"]) == joined
    assert sorted(p.name for p in kit.glob("part-*")) == [p["name"] for p in after["parts"]]
    assert after["part_bytes_max"] == 700 and len(after["travel"]["calls"]) == len(after["parts"])


def test_scripts_only_refuses_a_damaged_kit(tmp_path, capsys):
    kit, _ = make_kit(tmp_path)
    _flip(kit / "part-000")
    with pytest.raises(SystemExit) as exc:
        build.main(["--kit", str(kit), "--scripts-only"])
    assert exc.value.code == 2 and "part-000" in capsys.readouterr().err


def test_tree_digest_sees_bytes_modes_and_links(tmp_path):
    """A component is reused only when its tree is the same: any byte, mode or link target counts."""
    def tree(root):
        (root / "lib").mkdir(parents=True)
        (root / "lib/a.so.1").write_bytes(b"abc")
        (root / "lib/a.so").symlink_to("a.so.1")
        (root / "bin").mkdir()
        (root / "bin/x").write_bytes(b"#!/bin/sh\n")
        (root / "bin/x").chmod(0o755)
        return build.tree_digest(root)
    base = tree(tmp_path / "a")
    assert tree(tmp_path / "b") == base
    (tmp_path / "b/lib/a.so.1").write_bytes(b"abd")
    (tmp_path / "c").mkdir()
    assert build.tree_digest(tmp_path / "b") != base
    tree(tmp_path / "d")
    (tmp_path / "d/bin/x").chmod(0o644)
    assert build.tree_digest(tmp_path / "d") != base
    tree(tmp_path / "e")
    (tmp_path / "e/lib/a.so").unlink()
    (tmp_path / "e/lib/a.so").symlink_to("a.so.2")
    assert build.tree_digest(tmp_path / "e") != base


def test_travel_plan_one_part_per_call():
    parts = [{"name": f"part-{i:03d}", "bytes": 1, "sha256": "0" * 64} for i in range(4)]
    calls = build.travel_plan(".gpukit", parts)
    assert [c["carry"][0] for c in calls] == [f".gpukit/part-{i:03d}" for i in range(4)]
    assert all(sum("part-" in x for x in c["carry"]) == 1 and len(c["carry"]) <= 8 for c in calls)
    assert ".gpukit/run_on_gpu.sh" in calls[0]["carry"] and ".gpukit/manifest.json" in calls[0]["carry"]
    assert calls[-1]["command"] == "bash .gpukit/run_on_gpu.sh"
    assert all("check-part" in c["command"] for c in calls[:-1])


# -- checking and unpacking -----------------------------------------------------------------------------
def test_check_and_extract_intact_kit(tmp_path):
    kit, manifest = make_kit(tmp_path)
    assert len(manifest["parts"]) >= 3
    assert kitparts.check(kit)["archive"] == manifest["archive"]
    for use_tools in (False, True):
        if use_tools and not (shutil.which("xz") and shutil.which("tar")):
            continue
        dest = tmp_path / f"payload-{use_tools}"
        kitparts.extract(kit, dest, use_tools=use_tools)
        assert (dest / "python/bin/python3.11").read_bytes().startswith(b"#!/bin/sh")
        assert os.readlink(dest / "python/lib/libfake.so") == "libfake.so.1"
        assert (dest / "wheels/wheels/fake-1.0-py3-none-any.whl").stat().st_size == 1300
        assert not list(dest.glob("*.tar.xz"))
        assert (dest / ".kit-archive-sha256").read_text().strip() == manifest["archive"]["sha256"]


def test_missing_part_refused(tmp_path):
    kit, _ = make_kit(tmp_path)
    (kit / "part-001").unlink()
    with pytest.raises(kitparts.KitError, match=r"parts missing .*part-001; carry each"):
        kitparts.check(kit)
    dest = tmp_path / "payload"
    with pytest.raises(kitparts.KitError):
        kitparts.extract(kit, dest)
    assert not dest.exists()  # nothing unpacked


def test_damaged_part_refused(tmp_path):
    kit, _ = make_kit(tmp_path)
    _flip(kit / "part-002")
    with pytest.raises(kitparts.KitError, match=r"part-002 \(of \d+\) is damaged: SHA-256"):
        kitparts.check(kit)


def test_short_part_refused(tmp_path):
    kit, _ = make_kit(tmp_path)
    (kit / "part-000").write_bytes((kit / "part-000").read_bytes()[:-1])
    with pytest.raises(kitparts.KitError, match=r"part-000 .* has 999 bytes, expected 1000"):
        kitparts.check(kit)


def test_sums_and_manifest_from_different_builds_refused(tmp_path):
    kit, manifest = make_kit(tmp_path)
    sums = (kit / "SHA256SUMS").read_text().replace(manifest["parts"][1]["sha256"], "f" * 64)
    (kit / "SHA256SUMS").write_text(sums)
    with pytest.raises(kitparts.KitError, match="disagree on part-001"):
        kitparts.check(kit)


def test_parts_that_do_not_join_to_the_archive_refused(tmp_path):
    # Each part intact against manifest and sums, but the whole is not the archive named.
    kit, manifest = make_kit(tmp_path)
    _flip(kit / "part-001")
    digest = hashlib.sha256((kit / "part-001").read_bytes()).hexdigest()
    manifest["parts"][1]["sha256"] = digest
    kitparts.write_manifest(kit, manifest)
    kitparts.write_sums(kit, manifest["parts"])
    with pytest.raises(kitparts.KitError, match="do not join"):
        kitparts.check(kit)


def test_check_part_cli(tmp_path):
    kit, _ = make_kit(tmp_path)
    cli = [sys.executable, str(kit / "kitparts.py")]
    ok = subprocess.run(cli + ["check-part", str(kit), "part-001"], capture_output=True, text=True)
    assert ok.returncode == 0 and "part-001 ok" in ok.stdout
    _flip(kit / "part-001")
    bad = subprocess.run(cli + ["check-part", str(kit), "part-001"], capture_output=True, text=True)
    assert bad.returncode == 1
    assert bad.stderr.strip().count("\n") == 0 and "part-001" in bad.stderr and "damaged" in bad.stderr
    missing = subprocess.run(cli + ["check", str(tmp_path / "nowhere")], capture_output=True, text=True)
    assert missing.returncode == 1 and "manifest.json is missing" in missing.stderr


# -- the generated device script ----------------------------------------------------------------------------
def _run_script(kit: Path, tmp: Path, path: str | None = None):
    env = {"HOME": str(tmp), "PATH": path or os.environ.get("PATH", "/usr/bin:/bin")}
    return subprocess.run(["bash", str(kit / "run_on_gpu.sh"), "--cpu-dry-run", "--work", str(tmp / "work"),
                           "--report", str(tmp / "report")], capture_output=True, text=True, env=env, cwd=tmp,
                          timeout=60)


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
@pytest.mark.parametrize("damage", ["missing", "flipped"])
def test_device_script_refuses_bad_part(tmp_path, damage):
    kit, _ = make_kit(tmp_path)
    if damage == "missing":
        (kit / "part-002").unlink()
    else:
        _flip(kit / "part-002")
    r = _run_script(kit, tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    out = r.stdout + r.stderr
    line = [x for x in out.splitlines() if "part-002" in x]
    assert len(line) == 1 and ("missing" in line[0] if damage == "missing" else "damaged" in line[0])
    assert "2. installing" not in out and not (tmp_path / "work" / "payload").exists()


@pytest.mark.skipif(not all(shutil.which(t) for t in ("bash", "sha256sum", "xz", "tar", "awk")),
                    reason="needs bash and coreutils")
def test_device_script_without_python_refuses_bad_part(tmp_path):
    """No python3 on the node: the script checks with sha256sum and still refuses."""
    kit, _ = make_kit(tmp_path)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "sha256sum", "awk", "cat", "tar", "xz", "date", "dirname", "mkdir", "tee", "nproc", "uname",
                 "df", "getconf", "ls", "wc", "rm", "head", "basename", "sed", "env", "printf"):
        if shutil.which(tool):
            (bin_dir / tool).symlink_to(shutil.which(tool))
    _flip(kit / "part-001")
    r = _run_script(kit, tmp_path, path=str(bin_dir))
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert "bootstrap python: none" in out and "part-001: FAILED" in out and "a part is damaged" in out
    assert "2. installing" not in out
