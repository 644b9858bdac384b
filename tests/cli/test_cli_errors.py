"""Bad input: one line on stderr, exit code 2, no traceback, nothing written."""

import json

import pytest
from conftest import listing, run_cli


def _assert_clean_failure(result, out, must_mention):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert must_mention in lines[0]
    assert lines[0].startswith("clevr-remv: error:")
    assert not out.exists() or listing(out) == []


@pytest.mark.parametrize("args, mention", [
    (["--device", "vulkan"], "--device"),
    (["--grid", "4"], "rig.grid"),
    (["--samples", "0"], "render.samples"),
    (["--scenes", "0"], "--scenes"),
    (["--seed", "-3"], "--seed"),
    (["--width", "abc"], "--width"),
    (["--config", "no-such-config.json"], "does not exist"),
    (["--part", "5/4"], "--part"),
    (["--bogus"], "--bogus"),
])
def test_bad_options(tmp_path, args, mention):
    out = tmp_path / "out"
    base = ["generate", "--out", out]
    if "--scenes" not in args:
        base += ["--scenes", "3"]
    _assert_clean_failure(run_cli(*base, *args), out, mention)


def test_impossible_layout(tmp_path):
    cfg = tmp_path / "crowded.json"
    cfg.write_text(json.dumps({"scene": {"min_objects": 60, "max_objects": 60, "max_layout_restarts": 3}}))
    out = tmp_path / "out"
    _assert_clean_failure(run_cli("generate", "--scenes", "2", "--out", out, "--config", cfg), out,
                          "could not place 60 objects")


def test_unwritable_folder(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    out = blocker / "data"
    r = run_cli("generate", "--scenes", "2", "--out", out)
    _assert_clean_failure(r, out, "cannot write")
    r = run_cli("generate", "--scenes", "2", "--out", "/proc/clevr-remv-test")
    assert r.returncode == 2 and "cannot write" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_out_is_a_file(tmp_path):
    f = tmp_path / "f"
    f.write_text("x")
    r = run_cli("generate", "--scenes", "2", "--out", f)
    assert r.returncode == 2 and "is a file" in r.stderr


def _absent_backend() -> str:
    """A GPU backend this host's Blender really lacks, from a real worker's hello (the bpy
    wheel ships CUDA and OptiX: on a GPU host those are present)."""
    from clevr_remv.render.blender import BlenderWorker

    w = BlenderWorker(name="probe")
    try:
        devices = w.hello()["devices"]
    finally:
        w.kill()
    absent = [b for b in ("cuda", "optix", "hip", "metal") if not devices.get(b)]
    assert absent, f"this host has every GPU backend ({devices}); no device is missing"
    return absent[0]


def test_missing_device(tmp_path):
    out = tmp_path / "out"
    backend = _absent_backend()
    _assert_clean_failure(run_cli("generate", "--scenes", "2", "--out", out, "--device", backend), out,
                          f"device '{backend}' is not available")


def test_foreign_folder_is_refused(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "thesis.pdf").write_text("mine")
    r = run_cli("generate", "--scenes", "2", "--out", out)
    assert r.returncode == 2 and "holds no clevr-remv run" in r.stderr
    assert listing(out) == ["thesis.pdf"]


def test_help_explains():
    r = run_cli("generate", "--help")
    assert r.returncode == 0
    for opt in ("--scenes", "--out", "--seed", "--config", "--shard-size", "--workers", "--device",
                "--samples", "--width", "--height", "--grid"):
        assert opt in r.stdout
    assert "resume" in r.stdout.lower()


@pytest.mark.parametrize("blender, mention", [
    ("/nonexistent/blender", "not found"),
    ("/bin/false", "Blender did not start"),
])
def test_unusable_blender_executable(tmp_path, blender, mention):
    out = tmp_path / "out"
    _assert_clean_failure(run_cli("generate", "--scenes", "2", "--out", out, "--blender", blender), out, mention)
