"""Helpers shared by the benchmark scripts."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def generate(args: list[str], config: dict | None = None) -> tuple[Path, float]:
    """Run `clevr-remv generate` into a fresh folder; returns (folder, wall seconds)."""
    tmp = Path(tempfile.mkdtemp(prefix="clevr-remv-bench-"))
    out = tmp / "out"
    cmd = [sys.executable, "-m", "clevr_remv", "generate", "--out", str(out), "-q", *map(str, args)]
    if config is not None:
        cfg = tmp / "config.json"
        cfg.write_text(json.dumps(config))
        cmd += ["--config", str(cfg)]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    return out, time.perf_counter() - t0


def scene_log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "logs" / "scenes.jsonl").read_text().splitlines()]


def cleanup(out: Path) -> None:
    shutil.rmtree(out.parent, ignore_errors=True)


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) a live process has used so far, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as fh:
        f = fh.read().split(")")[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
