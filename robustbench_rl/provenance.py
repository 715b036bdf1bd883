"""Provenance of a bench run: its manifest (suite, policy hashes, versions, git commit, machine,
timings, sessions) and the lock that keeps two runs out of one directory.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import socket
import subprocess
from pathlib import Path

from robustbench_rl.cells import BENCH_FORMAT, Cell
from robustbench_rl.checkpoint import package_versions
from robustbench_rl.executors import _pid_alive, default_workers
from robustbench_rl.files import atomic_write_bytes
from robustbench_rl.results import (
    BENCH_COLUMNS,
)


def now_iso() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def write_json(path: Path, obj: dict) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, default=str) + "\n").encode())


def git_info() -> dict | None:
    """Commit and dirty flag of the rbrl source checkout, or None when it is not a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": bool(dirty)}


def machine_info() -> dict:
    """Where the numbers were made (CPU, cores, OS, Python)."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"hostname": socket.gethostname(), "platform": platform.platform(), "python": platform.python_version(),
            "cpu": cpu, "cpu_count": os.cpu_count(), "usable_cores": default_workers()}


def run_manifest(suite, policies, identity, ident_hash, old, n_cells, workers, threads) -> dict:
    return {
        "format": BENCH_FORMAT,
        "suite": suite.to_dict(),
        "identity": identity,
        "suite_hash": ident_hash,
        "policies": [p.__dict__ for p in policies],
        "cells": n_cells,
        "columns": BENCH_COLUMNS,
        "versions": package_versions(),
        "git": git_info(),
        "machine": machine_info(),
        "executor": {"kind": "local", "workers": workers, "threads_per_worker": threads},
        "created": old.get("created", now_iso()),
        "sessions": list(old.get("sessions", [])),
        "critic_gradients": list(old.get("critic_gradients", [])),
        "status": "running",
    }


def cell_timings(cells_dir: Path, cells: list[Cell], sessions: list[dict]) -> dict:
    per_attack: dict[str, float] = {}
    steps: dict[str, int] = {}
    for c in cells:
        rec = json.loads((cells_dir / c.filename).read_text())
        per_attack[c.attack] = per_attack.get(c.attack, 0.0) + rec["wall_s"]
        steps[c.attack] = steps.get(c.attack, 0) + rec["env_steps"]
    return {
        "wall_s": round(sum(s.get("cells_wall_s", 0.0) + s.get("fit_s", 0.0) for s in sessions), 3),
        "critic_fit_s": round(sum(s.get("fit_s", 0.0) for s in sessions), 3),
        "cell_s_by_attack": {k: round(v, 3) for k, v in per_attack.items()},
        "env_steps_per_s_by_attack": {k: round(steps[k] / v, 1) if v > 0 else None for k, v in per_attack.items()},
    }


class RunLock:
    """DIR/.lock holding host:pid:start time: two benches writing one directory would race on its cells.

    The process start time tells a live bench from a lock left by a killed one whose pid the system
    has since given to another process.
    """

    def __init__(self, out: Path) -> None:
        self.path = out / ".lock"

    def __enter__(self) -> RunLock:
        host = socket.gethostname()
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            pid = "?"
            try:
                other_host, pid, *rest = self.path.read_text().split(":")
                started = rest[0] if rest and rest[0] else None
                alive = other_host == host and _pid_alive(int(pid)) and (
                    started is None or process_start(int(pid)) in (None, started))
            except (OSError, ValueError):
                alive = False
            if alive:
                raise ValueError(f"another rbrl bench (pid {pid}) is writing {self.path.parent}: wait for it or stop "
                                 f"it first (if no bench runs there, delete the lock file {self.path})") from None
            self.path.unlink(missing_ok=True)  # left by a killed run
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        with os.fdopen(fd, "w") as fh:
            fh.write(f"{host}:{os.getpid()}:{process_start(os.getpid()) or ''}")
        return self

    def __exit__(self, *exc) -> None:
        self.path.unlink(missing_ok=True)


def process_start(pid: int) -> str | None:
    """A process's start time (clock ticks since boot, /proc/PID/stat field 22); None where unknown."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None
