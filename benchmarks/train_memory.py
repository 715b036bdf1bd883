"""Peak memory (RSS) of `rbrl train` with a large replay buffer, and whether it grows while training.

Starts the real CLI in a subprocess, e.g. `rbrl train --algo oa-td3 --env Humanoid-v5 --steps 1000000
--buffer-size 1000000` (so the buffer really holds 1M transitions: it is sized min(buffer_size, steps)),
samples the child's resident set size (VmRSS) every `--interval` seconds, and stops the run with
SIGTERM once `--stop-after` env steps have been logged, after at least one periodic checkpoint (which
writes the replay buffer beside the resume state). Reports the peak (VmHWM, the kernel's high-water
mark), the RSS right after start-up (buffer allocated) and at the end: a preallocated, zero-filled
buffer shows no growth between the two.

    python benchmarks/train_memory.py --algo oa-td3 --env Humanoid-v5 --buffer-size 1000000 \\
        --stop-after 3000 --checkpoint-every 2000
"""

from __future__ import annotations

import argparse
import csv
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def status_kb(pid: int, key: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def logged_steps(run_dir: Path) -> int:
    path = run_dir / "progress.csv"
    if not path.is_file():
        return 0
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return int(rows[-1]["step"]) if rows else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--algo", default="oa-td3")
    ap.add_argument("--env", default="Humanoid-v5")
    ap.add_argument("--buffer-size", type=int, default=1_000_000)
    ap.add_argument("--stop-after", type=int, default=3000, help="stop once this many env steps are logged")
    ap.add_argument("--checkpoint-every", type=int, default=2000)
    ap.add_argument("--interval", type=float, default=0.5)
    ap.add_argument("--out", default=None, help="run directory (default: a temp folder, removed afterwards)")
    args = ap.parse_args()

    tmp = None if args.out else tempfile.TemporaryDirectory()
    run_dir = Path(args.out or tmp.name) / "run"
    cmd = [sys.executable, "-m", "robustbench_rl.cli", "train", "--algo", args.algo, "--env", args.env,
           "--steps", str(args.buffer_size), "--buffer-size", str(args.buffer_size), "--out", str(run_dir),
           "--checkpoint-every", str(args.checkpoint_every), "--log-every", "500", "--eval-every", "0"]
    print("$", " ".join(cmd[1:]), flush=True)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    samples: list[tuple[float, int, int]] = []  # (seconds, logged steps, rss kB)
    peak = 0
    checkpointed = False
    while proc.poll() is None:
        rss = status_kb(proc.pid, "VmRSS")
        hwm = status_kb(proc.pid, "VmHWM")
        if rss is not None:
            samples.append((time.perf_counter() - t0, logged_steps(run_dir), rss))
            peak = max(peak, hwm or rss)
        checkpointed = checkpointed or any(run_dir.glob("replay_*.bin"))
        if samples and samples[-1][1] >= args.stop_after and checkpointed:
            peak = max(peak, status_kb(proc.pid, "VmHWM") or 0)
            proc.send_signal(signal.SIGTERM)
            break
        time.sleep(args.interval)
    _, err = proc.communicate(timeout=120)
    if not samples or samples[-1][1] < args.stop_after:
        print(f"run ended early (exit {proc.returncode}): {err.strip()[-500:]}")
        sys.exit(1)
    # "After start-up": the first sample at which training has begun (a step was logged).
    started = next((s for s in samples if s[1] > 0), samples[-1])
    gib = 1024 * 1024
    replay = sorted(run_dir.glob("replay_*.bin"))
    print(f"machine: {os.cpu_count()} cores; {len(samples)} samples every {args.interval}s")
    print("| run | peak RSS (VmHWM) | RSS at first logged step | RSS at the end | growth | replay file |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    print(f"| {args.algo} {args.env}, buffer {args.buffer_size:,}, {samples[-1][1]:,} steps | {peak / gib:.2f} GiB | "
          f"{started[2] / gib:.2f} GiB (step {started[1]}) | {samples[-1][2] / gib:.2f} GiB | "
          f"{(samples[-1][2] - started[2]) / 1024:+.0f} MiB | "
          f"{replay[-1].stat().st_size / 2**20:.0f} MiB |" if replay else "-")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
