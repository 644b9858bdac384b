"""A reader that closes stdout early (``| head -1``) ends the command with 141 (128 + SIGPIPE),
never with 1, which means violations / failure, and without a traceback."""

import os
import shutil
import subprocess
import sys

import h5py
import pytest

from clevr_remv.cli import EXIT_CLOSED_PIPE


def _closed_stdout(*args):
    r, w = os.pipe()
    os.close(r)  # the reader is gone before the first line
    try:
        p = subprocess.run([sys.executable, "-m", "clevr_remv", *map(str, args)], stdout=w,
                           stderr=subprocess.PIPE, text=True, timeout=300, check=False)
    finally:
        os.close(w)
    return p


def test_help_into_a_closed_pipe():
    p = _closed_stdout("--help")
    assert p.returncode == EXIT_CLOSED_PIPE == 141 and "Traceback" not in p.stderr and "Error" not in p.stderr


@pytest.mark.render
@pytest.mark.parametrize("args", [["info"], ["info", "--verify"], ["stats"], ["stats", "--json"]])
def test_printing_commands_into_a_closed_pipe(generated, args):
    p = _closed_stdout(args[0], generated, *args[1:])
    assert p.returncode == 141 and "Traceback" not in p.stderr and "internal error" not in p.stderr, p.stderr


@pytest.mark.render
def test_validate_with_violations_into_a_closed_pipe(generated, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(generated, bad)
    with h5py.File(bad / "train" / "train-00001.h5", "r+") as f:
        vp = f["visible_pixels"][...]
        vp[0] += 5
        f["visible_pixels"][...] = vp
    p = _closed_stdout("validate", bad)
    assert p.returncode == 141, p.stderr
    r = subprocess.run([sys.executable, "-m", "clevr_remv", "validate", bad], capture_output=True, timeout=300, check=False)
    assert r.returncode == 1  # with a reader, violations still exit 1
