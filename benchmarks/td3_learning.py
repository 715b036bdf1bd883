"""Learning proof for TD3 / OA-TD3 (not run in CI): deterministic eval return along real `rbrl train` runs.

The claim: TD3 and OA-TD3 reach an eval return of 1000 on InvertedPendulum-v5 within 30k steps
(3 seeds); TD3 reaches > -200 on Pendulum-v1 within 20k steps. Every run is a normal run directory
under --out (resumable: re-running the script continues unfinished runs), so the progress.csv of each
seed can be inspected afterwards. Prints one line per run and a markdown table.

    python benchmarks/td3_learning.py --suite inverted-pendulum --algos td3,oa-td3 --seeds 0,1,2
    python benchmarks/td3_learning.py --suite pendulum --algos td3 --seeds 0
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

from robustbench_rl.config import STATE_FILE, resolve_config
from robustbench_rl.training import train

SUITES = {  # env, steps, target return, eval every
    "inverted-pendulum": ("InvertedPendulum-v5", 30_000, 1000.0, 2_500),
    "pendulum": ("Pendulum-v1", 20_000, -200.0, 2_000),
}


def _evals(run_dir: Path) -> list[tuple[int, float]]:
    if not (run_dir / "progress.csv").exists():
        return []
    with open(run_dir / "progress.csv", newline="") as fh:
        return [(int(r["step"]), float(r["eval_return"])) for r in csv.DictReader(fh) if r["eval_return"]]


def run_one(algo: str, suite: str, seed: int, out: Path, threads: int, full: bool) -> dict:
    env, steps, target, every = SUITES[suite]
    run_dir = out / f"{suite}-{algo}-s{seed}"
    done = (run_dir / "policy.safetensors").exists()
    reached = not full and any(r >= target for _, r in _evals(run_dir))  # killed after reaching it
    t0 = time.perf_counter()
    if not done and not reached:
        resume = (run_dir / STATE_FILE).exists()
        run_vals = {"algo": algo, "env": env, "steps": steps, "seed": seed, "eval_every": every,
                    "eval_episodes": 10, "checkpoint_every": every, "threads": threads}
        run, hp = resolve_config(run_dir, {} if resume else run_vals, {}, resume=resume)
        # Stop a seed once an evaluation reaches the target: the claim is "reaches it within the budget",
        # and OA-TD3 is slow on a shared 2-core CPU. --full trains every seed to the end of its budget.
        stop = None if full else (lambda row: row["eval_return"] >= target)
        train(run, hp, run_dir, resume=resume, progress=False, stop_when=stop)
    evals = _evals(run_dir)
    first = next((s for s, r in evals if r >= target), None)
    return {"algo": algo, "env": env, "seed": seed, "target": target, "steps": steps, "first_step_at_target": first,
            "best_eval": max(r for _, r in evals), "final_eval": evals[-1][1], "wall_s": time.perf_counter() - t0,
            "evals": evals}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", choices=sorted(SUITES), required=True)
    ap.add_argument("--algos", default="td3,oa-td3")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--out", default="runs/td3_learning")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--full", action="store_true", help="train every seed to its full budget (no early stop)")
    args = ap.parse_args()
    rows = []
    for algo in args.algos.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            row = run_one(algo, args.suite, seed, Path(args.out), args.threads, args.full)
            rows.append(row)
            print(f"{algo} {row['env']} seed {seed}: first eval >= {row['target']:g} at step {row['first_step_at_target']}, "
                  f"best {row['best_eval']:.1f}, final {row['final_eval']:.1f} ({row['wall_s']:.0f} s); "
                  f"evals {[(s, round(r, 1)) for s, r in row['evals']]}", flush=True)
    print("\n| algo | env | seed | first step with eval >= target | best eval | final eval |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['algo']} | {r['env']} | {r['seed']} | {r['first_step_at_target']} (target {r['target']:g}, "
              f"budget {r['steps']}) | {r['best_eval']:.1f} | {r['final_eval']:.1f} |")


if __name__ == "__main__":
    main()
