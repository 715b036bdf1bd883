"""Learning proof for PPO / OA-PPO (not run in CI): deterministic eval return along real `rbrl train` runs.

The claim: PPO and OA-PPO reach an eval return of 1000 on InvertedPendulum-v5 within 100k steps
(3 seeds), with the default (CleanRL) hyperparameters; OA-PPO with its defaults (omega 0.5,
eps_train 0.1). Every run is a normal run directory under --out, resumable: re-running the script
continues unfinished runs from their last checkpoint, so it can run niced in the background and survive
a kill. Prints one line per run and a markdown table (first step with eval >= target, best, final).

    nice -n 5 python benchmarks/ppo_learning.py --algos ppo,oa-ppo --seeds 0,1,2 --out runs/ppo_learning
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

from robustbench_rl.config import STATE_FILE, resolve_config
from robustbench_rl.training import train

SUITES = {  # env, steps, target return, eval every
    "inverted-pendulum": ("InvertedPendulum-v5", 100_000, 1000.0, 10_240),
}


def _evals(run_dir: Path) -> list[tuple[int, float]]:
    if not (run_dir / "progress.csv").exists():
        return []
    with open(run_dir / "progress.csv", newline="") as fh:
        return [(int(r["step"]), float(r["eval_return"])) for r in csv.DictReader(fh) if r["eval_return"]]


def _wall(run_dir: Path) -> float:
    with open(run_dir / "progress.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return float(rows[-1]["wall_s"]) if rows else float("nan")


def run_one(algo: str, suite: str, seed: int, out: Path, threads: int, full: bool) -> dict:
    env, steps, target, every = SUITES[suite]
    run_dir = out / f"{suite}-{algo}-s{seed}"
    done = (run_dir / "policy.safetensors").exists()
    reached = not full and any(r >= target for _, r in _evals(run_dir))
    if not done and not reached:
        resume = (run_dir / STATE_FILE).exists()
        run_vals = {"algo": algo, "env": env, "steps": steps, "seed": seed, "eval_every": every,
                    "eval_episodes": 10, "checkpoint_every": every, "log_every": 2048, "threads": threads}
        run, hp = resolve_config(run_dir, {} if resume else run_vals, {}, resume=resume)
        stop = None if full else (lambda row: row["eval_return"] >= target)
        train(run, hp, run_dir, resume=resume, progress=False, stop_when=stop)
    evals = _evals(run_dir)
    first = next((s for s, r in evals if r >= target), None)
    return {"algo": algo, "env": env, "seed": seed, "target": target, "steps": steps, "first_step_at_target": first,
            "best_eval": max(r for _, r in evals), "final_eval": evals[-1][1], "final_step": evals[-1][0],
            "train_wall_s": _wall(run_dir), "evals": evals}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", choices=sorted(SUITES), default="inverted-pendulum")
    ap.add_argument("--algos", default="ppo,oa-ppo")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--out", default="runs/ppo_learning")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--full", action="store_true", help="train every seed to its full budget (default: stop a seed "
                    "at the first evaluation that reaches the target)")
    args = ap.parse_args()
    rows = []
    for algo in args.algos.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            t0 = time.perf_counter()
            row = run_one(algo, args.suite, seed, Path(args.out), args.threads, args.full)
            rows.append(row)
            print(f"{algo} {row['env']} seed {seed}: first eval >= {row['target']:g} at step {row['first_step_at_target']}, "
                  f"best {row['best_eval']:.1f}, last eval {row['final_eval']:.1f} at step {row['final_step']} "
                  f"(training wall {row['train_wall_s']:.0f} s, this call {time.perf_counter() - t0:.0f} s); "
                  f"evals {[(s, round(r, 1)) for s, r in row['evals']]}", flush=True)
    print("\n| algo | env | seed | first step with eval >= target | best eval | last eval (step) | train wall s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['algo']} | {r['env']} | {r['seed']} | {r['first_step_at_target']} (target {r['target']:g}, "
              f"budget {r['steps']}) | {r['best_eval']:.1f} | {r['final_eval']:.1f} ({r['final_step']}) | "
              f"{r['train_wall_s']:.0f} |")


if __name__ == "__main__":
    main()
