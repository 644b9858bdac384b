"""Every export takes its output folder the same two ways: ``ROOT OUT`` or ``ROOT --out OUT``."""

import pytest
from conftest import listing, run_cli

EXPORTS = ("refcoco", "grefcoco", "coco", "hf", "lightfield")


@pytest.mark.parametrize("kind", EXPORTS)
def test_neither_or_both_is_one_line_and_exit_2(tmp_path, kind):
    for args in ([], [tmp_path / "a", "--out", tmp_path / "b"]):
        r = run_cli("export", kind, tmp_path, *args)
        assert r.returncode == 2, r.stderr
        assert r.stderr.count("\n") == 1 and "give the output folder once" in r.stderr
        assert listing(tmp_path) == []


@pytest.mark.render
def test_argument_and_option_write_the_same_folder(generated, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert run_cli("export", "coco", generated, a, "--split", "val").returncode == 0
    assert run_cli("export", "coco", generated, "--out", b, "--split", "val").returncode == 0
    assert listing(a) == listing(b) and listing(a)
    assert (a / "annotations" / "instances_val.json").read_bytes() == (b / "annotations" / "instances_val.json").read_bytes()
