"""Reliability trials (docs/reliability.md): abuse a tiny run the way a tester or a farm would and count
what happens.  Prints a markdown table for docs/reliability.md.

    python bench/reliability_trials.py --trials 5 [--tmpfs]   # --tmpfs needs root (mount)

Each trial uses the real command line on a 6-scene run (48x32, 3x3 views, 2 samples, shard
size 2) and compares the result with an uninterrupted reference run (shard SHA-256s).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import h5py

TINY = {"rig": {"grid": 3, "baseline": 1.0}, "render": {"width": 48, "height": 32, "samples": 2, "denoise": False},
        "scene": {"max_objects": 6}, "output": {"shard_size": 2}}
ARGS = ["--scenes", "6"]


def cmd(out, cfg, *extra):
    return [sys.executable, "-m", "clevr_remv", "generate", "--out", str(out), "--config", str(cfg), *ARGS, *map(str, extra)]


def run(out, cfg, *extra, timeout=600):
    return subprocess.run(cmd(out, cfg, *extra), capture_output=True, text=True, timeout=timeout)


def digests(out, name="manifest.json"):
    try:
        return {e["path"]: e["sha256"] for e in json.loads((out / name).read_text())["shards"]}
    except (OSError, ValueError, KeyError):
        return None


def verify(out):
    return subprocess.run([sys.executable, "-m", "clevr_remv", "info", str(out), "--verify"],
                          capture_output=True, text=True).returncode == 0


def leftovers(out):
    work = out / ".work"
    return len(list(out.rglob("*.tmp"))) + (len(list(work.rglob("*.h5"))) if work.exists() else 0)


def trial_kill(tmp, cfg, ref, rng):
    out = tmp / "kill"
    p = subprocess.Popen(cmd(out, cfg), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(rng.uniform(0.2, 6.0))
    p.send_signal(signal.SIGKILL)
    p.wait()
    r = run(out, cfg)
    ok = r.returncode == 0 and digests(out) == ref and verify(out) and leftovers(out) == 0
    return "resumed, identical" if ok else f"BAD (exit {r.returncode}: {r.stderr.strip()[-200:]})"


def trial_term(tmp, cfg, ref, rng):
    out = tmp / "term"
    p = subprocess.Popen(cmd(out, cfg), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(rng.uniform(0.1, 1.5))
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate()
    r = run(out, cfg)
    ok = r.returncode == 0 and digests(out) == ref and verify(out)
    return f"exit {p.returncode}, " + ("resumed, identical" if ok else "BAD")


def trial_two_writers(tmp, cfg, ref, rng, other_seed=None):
    out = tmp / "two"
    extra = ("--seed", other_seed) if other_seed is not None else ()
    a = subprocess.Popen(cmd(out, cfg), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(rng.uniform(0, 1.0))
    b = subprocess.Popen(cmd(out, cfg, *extra), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    codes = sorted([a.wait(), b.wait()])
    m = json.loads((out / "manifest.json").read_text())
    mixed = False
    for e in m["shards"]:
        with h5py.File(out / e["path"], "r") as f:
            mixed |= f.attrs["config_digest"] != m["config_digest"]
    good = verify(out) and not mixed and (digests(out) == ref or other_seed is not None)
    return f"exits {codes}, " + ("verified, not mixed" if good else "BAD")


def trial_flip(tmp, cfg, ref, rng):
    out = tmp / "flip"
    shutil.copytree(tmp / "ref", out)
    shard = out / rng.choice(sorted(ref))
    size = shard.stat().st_size
    with open(shard, "r+b") as fh:
        at = rng.randrange(size // 4, size)
        fh.seek(at)
        b = fh.read(1)
        fh.seek(at)
        fh.write(bytes([b[0] ^ 0xFF]))
    r = run(out, cfg)
    repaired = digests(out) == ref and verify(out)
    said = "SHA-256" in r.stderr
    return ("re-rendered, said so" if repaired and said else
            f"BAD (exit {r.returncode}, repaired {repaired}, said {said})")


def trial_stop(tmp, cfg, ref, rng):
    out = tmp / "stop"
    c = json.loads(Path(cfg).read_text())
    c.setdefault("workers", {})["view_timeout_min"] = 3
    cfg2 = tmp / "stop.json"
    cfg2.write_text(json.dumps(c))
    p = subprocess.Popen(cmd(out, cfg2), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    jsonl = out / "logs" / "scenes.jsonl"
    while not (jsonl.exists() and jsonl.read_text().strip()):
        time.sleep(0.05)
    os.kill(json.loads(jsonl.read_text().splitlines()[0])["worker_pid"], signal.SIGSTOP)
    t0 = time.time()
    _, err = p.communicate(timeout=600)
    ok = p.returncode == 0 and digests(out) == ref
    return f"exit {p.returncode} after {time.time() - t0:.0f} s, " + ("identical" if ok else "BAD")


def trial_tmpfs(tmp, cfg, ref, rng, size):
    mnt = tmp / "disk"
    mnt.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)], check=True)
    try:
        out = mnt / "out"
        r = run(out, cfg)
        one_line = r.returncode in (1, 2) and "Traceback" not in r.stderr and "Exception ignored" not in r.stderr \
            and "disk full" in r.stderr.strip().splitlines()[-1]
        subprocess.run(["mount", "-o", "remount,size=16m", str(mnt)], check=True)
        r2 = run(out, cfg)
        ok = r2.returncode == 0 and digests(out) == ref and leftovers(out) == 0
        return f"{size}: exit {r.returncode}" + (", one line" if one_line else ", NOT one line") + \
            (", resumed identical" if ok else ", resume BAD")
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--tmpfs", action="store_true")
    ap.add_argument("--only", help="run only the trials whose name contains this text")
    a = ap.parse_args()
    rng = random.Random(a.seed)
    tmp = Path(tempfile.mkdtemp(prefix="clevr-remv-trials-"))
    cfg = tmp / "tiny.json"
    cfg.write_text(json.dumps(TINY))
    assert run(tmp / "ref", cfg).returncode == 0
    ref = digests(tmp / "ref")
    kinds = {
        "SIGKILL at a random moment (0.2-6 s), then re-run": trial_kill,
        "SIGTERM at 0.1-1.5 s, then re-run": trial_term,
        "two identical generate at once": trial_two_writers,
        "two generate at once, other seed": lambda *x: trial_two_writers(*x, other_seed=5),
        "one flipped byte in a shard, then generate": trial_flip,
        "kill -STOP on the worker after its first scene": trial_stop,
    }
    rows = []
    for name, fn in kinds.items():
        if a.only and a.only not in name:
            continue
        seen = Counter()
        for _ in range(a.trials):
            for d in ("kill", "term", "two", "flip", "stop"):
                shutil.rmtree(tmp / d, ignore_errors=True)
            seen[fn(tmp, cfg, ref, rng)] += 1
        rows.append((name, a.trials, "; ".join(f"{k} ({v})" for k, v in seen.items())))
    if a.tmpfs and not a.only:
        results = [trial_tmpfs(tmp, cfg, ref, rng, s) for s in ("40k", "100k", "200k", "300k", "500k")]
        rows.append(("tmpfs of 40 KB to 500 KB, then a bigger one and re-run", len(results), "; ".join(results)))
    print("| trial | times | what happened (count) |\n|---|---|---|")
    for name, n, what in rows:
        print(f"| {name} | {n} | {what} |")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
