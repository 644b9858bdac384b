"""`clevr-remv submit slurm` on a REAL Slurm: the one-node cluster of .ci/slurm-up.sh (Debian's
slurm-wlm and munge).  If no Slurm answers, the fixture starts it with that script; if it cannot
start, every test here FAILS with the script's reason (never skips).

The run: 8 scenes, shard size 2 (5 shards: train 0-5, val 6, test 7), 48x32, 3x3 views,
1 sample, denoiser off (a config file), compared with a local run of the same arguments.
"""

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from conftest import assert_same_shard, run_cli

from clevr_remv.store import files

pytestmark = [pytest.mark.slurm, pytest.mark.render]

ROOT = Path(__file__).resolve().parents[2]
RUN = ["--scenes", 8, "--shard-size", 2, "--width", 48, "--height", 32, "--grid", 3, "--samples", 1]
SHARDS = ["train/train-00000.h5", "train/train-00001.h5", "train/train-00002.h5", "val/val-00000.h5",
          "test/test-00000.h5"]
WAIT_S = 900


def _slurm_answers() -> tuple[bool, str]:
    if shutil.which("sinfo") is None:
        return False, "sinfo not on PATH"
    r = subprocess.run(["sinfo", "-h", "-N", "-o", "%t"], capture_output=True, text=True, timeout=30)
    state = r.stdout.strip().splitlines()[0] if r.stdout.strip() else ""
    return state in ("idle", "mix", "alloc", "comp"), (r.stderr.strip() or f"node state '{state}'")


@pytest.fixture(scope="session")
def slurm():
    """A running Slurm; started (and afterwards stopped) here when none answers."""
    ok, why = _slurm_answers()
    started = False
    if not ok:
        r = subprocess.run([str(ROOT / ".ci" / "slurm-up.sh")], capture_output=True, text=True, timeout=900)
        if r.returncode != 0:
            pytest.fail(f"Slurm could not start ({why}); .ci/slurm-up.sh said:\n{r.stdout}{r.stderr}", pytrace=False)
        started = True
    yield
    if started:
        subprocess.run([str(ROOT / ".ci" / "slurm-down.sh")], capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def cfg_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("slurmcfg") / "nodenoise.json"
    path.write_text(json.dumps({"render": {"denoise": False}, "scene": {"max_objects": 6}}))
    return path


@pytest.fixture(scope="module")
def local_run(tmp_path_factory, cfg_file) -> Path:
    out = tmp_path_factory.mktemp("local") / "run"
    r = run_cli("generate", "--out", out, "--config", cfg_file, *RUN)
    assert r.returncode == 0, r.stderr
    return out


def _submit(out, cfg_file, *extra):
    r = run_cli("submit", "slurm", "--out", out, "--config", cfg_file, *RUN, *extra)
    assert r.returncode == 0, r.stdout + r.stderr
    return r


def _ids(stdout: str) -> tuple[str, str]:
    array = re.search(r"submitted render array (\d+)", stdout)
    merge = re.search(r"submitted merge job (\d+)", stdout)
    assert array and merge, stdout
    return array.group(1), merge.group(1)


def _jobs_of(out: Path) -> list[str]:
    r = subprocess.run(["squeue", "-h", "-r", "-o", "%i|%k|%T"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return [line for line in r.stdout.splitlines() if line.split("|")[1:2] == [f"clevr-remv:{out}"]]


def _wait_all(out: Path) -> None:
    deadline = time.time() + WAIT_S
    while _jobs_of(out):
        assert time.time() < deadline, f"Slurm jobs still there after {WAIT_S}s: {_jobs_of(out)}"
        time.sleep(1)


def _exit_code(job: str) -> str:
    r = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True, timeout=60)
    m = re.search(r"\bExitCode=(\S+)", r.stdout)
    assert m, r.stdout + r.stderr
    return m.group(1)


def assert_same_dataset(farm: Path, local: Path) -> None:
    """All datasets identical; RGB within the README's tolerance (one 8-bit level in a few pixels),
    normals within one 2^-10 step (tests/conftest.py assert_same_shard)."""
    mf, ml = files.read_json(farm / "manifest.json"), files.read_json(local / "manifest.json")
    assert mf["complete"], mf
    assert [e["path"] for e in mf["shards"]] == [e["path"] for e in ml["shards"]] == SHARDS
    assert mf["config_digest"] == ml["config_digest"]
    assert mf["stats"]["expressions"] == ml["stats"]["expressions"]
    for path in SHARDS:
        assert_same_shard(farm / path, local / path, rgb_share=1e-3)
    r = run_cli("info", farm, "--verify")
    assert r.returncode == 0 and "all match" in r.stdout, r.stdout + r.stderr


def test_array_renders_merges_and_matches_a_local_run(slurm, local_run, cfg_file, tmp_path):
    out = tmp_path / "farm"
    r = _submit(out, cfg_file, "--parallel", 2)
    array, merge = _ids(r.stdout)
    assert "5 of 5 tasks (0-4), 1 shard each, at most 2 at once" in r.stdout
    assert f"squeue -j {array},{merge}" in r.stdout and f"scancel {array} {merge}" in r.stdout
    # The same command while the array is queued or running: nothing is submitted twice.
    again = _submit(out, cfg_file, "--parallel", 2)
    assert "nothing to submit" in again.stdout and "queued or running" in again.stdout, again.stdout
    assert "submitted" not in again.stdout
    _wait_all(out)
    assert _exit_code(merge) == "0:0", (out / "logs" / "slurm" / f"merge-{merge}.out").read_text()
    assert_same_dataset(out, local_run)
    logs = sorted(p.name for p in (out / "logs" / "slurm").glob("render-*.out"))
    assert logs == [f"render-{array}_{t}.out" for t in range(5)]
    for t in range(5):
        assert f"-> part {t + 1}/5" in (out / "logs" / "slurm" / f"render-{array}_{t}.out").read_text()
    # The same command again: nothing left to render.
    r = _submit(out, cfg_file, "--parallel", 2)
    assert "nothing to submit: all 5 tasks" in r.stdout and "complete" in r.stdout
    assert not _jobs_of(out)


def test_cancelled_task_is_finished_by_submitting_again(slurm, local_run, cfg_file, tmp_path):
    """Three tasks of two shards (task 0: train-00000 and val-00000); task 0 is cancelled
    (scancel JOB_0) after its first scene; the same command again renders only task 0."""
    out = tmp_path / "cancel"
    r = _submit(out, cfg_file, "--shards-per-task", 2, "--parallel", 1)
    array, merge = _ids(r.stdout)
    scenes_log = out / "logs" / "part-001-of-003" / "scenes.jsonl"
    deadline = time.time() + WAIT_S
    while not (scenes_log.exists() and scenes_log.read_text().strip()):
        assert time.time() < deadline, "task 0 never finished a scene"
        time.sleep(0.02)
    subprocess.run(["scancel", f"{array}_0"], check=True, timeout=60)
    _wait_all(out)
    part1 = files.read_json(out / "manifest.part-001-of-003.json")
    assert not part1["complete"], "task 0 finished before scancel reached it"
    assert _exit_code(merge) == "1:0"
    merge_log = (out / "logs" / "slurm" / f"merge-{merge}.out").read_text()
    assert "INCOMPLETE" in merge_log and "(part 1/3)" in merge_log, merge_log
    assert "from parts 1 of 3" in merge_log, merge_log

    r = _submit(out, cfg_file, "--shards-per-task", 2, "--parallel", 1)
    array2, merge2 = _ids(r.stdout)
    assert "1 of 3 tasks (0)" in r.stdout and "2 tasks already finished" in r.stdout
    _wait_all(out)
    assert _exit_code(merge2) == "0:0"
    task_log = (out / "logs" / "slurm" / f"render-{array2}_0.out").read_text()
    assert "resuming" in task_log, task_log
    assert_same_dataset(out, local_run)
    rendered = [json.loads(line)["scene"] for line in scenes_log.read_text().splitlines()]
    assert sorted(rendered) == [0, 1, 6], "each scene rendered once: finished scenes were kept"


def test_two_parts_at_once_into_one_folder_lose_nothing(slurm, local_run, cfg_file, tmp_path):
    """Two tasks (three and two shards) that run at the same time on the node."""
    out = tmp_path / "two"
    r = _submit(out, cfg_file, "--shards-per-task", 3)
    array, merge = _ids(r.stdout)
    assert "2 of 2 tasks (0-1)" in r.stdout
    _wait_all(out)
    spans = []
    for t in (0, 1):
        text = (out / "logs" / "slurm" / f"render-{array}_{t}.out").read_text()
        stamps = re.findall(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d) INFO", text, re.M)
        assert "finished: " in text, text
        spans.append((stamps[0], stamps[-1]))
    assert spans[0][0] <= spans[1][1] and spans[1][0] <= spans[0][1], f"the tasks did not overlap: {spans}"
    assert _exit_code(merge) == "0:0"
    assert_same_dataset(out, local_run)
    assert not (out / ".work").exists() or not list((out / ".work").iterdir())


def test_an_array_larger_than_the_cluster_allows_is_refused_before_anything_is_written(slurm, cfg_file, tmp_path):
    """MaxArraySize is 100001 on the test cluster (1001 by default elsewhere): 100,002 one-scene
    shards need 100,002 array indices."""
    out = tmp_path / "big"
    r = run_cli("submit", "slurm", "--out", out, "--config", cfg_file, "--scenes", 100002, "--shard-size", 1)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "MaxArraySize" in r.stderr and "--shards-per-task 2 or more" in r.stderr and r.stderr.count("\n") == 1
    assert not out.exists() and not _jobs_of(out)


def test_options_slurm_refuses_are_one_line_and_write_nothing(slurm, cfg_file, tmp_path):
    out = tmp_path / "bad"
    r = run_cli("submit", "slurm", "--out", out, "--config", cfg_file, *RUN, "--partition", "no-such-partition")
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.count("\n") == 1 and "sbatch refused the render array" in r.stderr, r.stderr
    assert "partition" in r.stderr
    assert not out.exists() and not _jobs_of(out)
