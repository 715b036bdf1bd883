"""Wall time of `rbrl bench` on a 2-policy x 5-attack x 4-eps x 10-episode Hopper-v5 suite, 1 vs N workers.

Usage (from the repo root; takes a few minutes on a 2-core CPU):

    python benchmarks/bench_walltime.py                       # two random 256x256 checkpoints
    python benchmarks/bench_walltime.py --policies a.safetensors b.safetensors --workers 1,2 --repeats 2

The five attacks are none (eps 0 only), random, biggest, min-q and min-oa-q, with `--critic auto`:
each checkpoint's own critic where it has the one an attack needs (random checkpoints are written with
a twin critic and a twin OA critic), else a fitted one. Fitting happens once, before the timed runs,
and its time is printed separately. Every worker count runs the same suite into a fresh
directory; rounds are interleaved (1, N, 1, N, ...) so that load from other processes hits both
alike, and the tables of all runs are checked to be identical. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from robustbench_rl.attacks.fit import FitConfig
from robustbench_rl.attacks.registry import make_policy_attack
from robustbench_rl.bench import run_bench
from robustbench_rl.checkpoint import save_checkpoint, state_tensors
from robustbench_rl.envs import env_spec
from robustbench_rl.networks import build_network
from robustbench_rl.policy import load_policy
from robustbench_rl.suite import parse_suite


def random_checkpoint(path: Path, env_id: str, seed: int, algo: str) -> Path:
    """An untrained policy with the standard 256x256 actor, twin critic and twin OA critic."""
    torch.manual_seed(seed)
    spec = env_spec(env_id)
    nets = {"actor": {"type": "actor", "hidden": [256, 256], "activation": "relu"},
            "critic": {"type": "twin_critic", "hidden": [256, 256], "activation": "relu"},
            "critic_adv": {"type": "twin_critic", "hidden": [256, 256], "activation": "relu"}}
    mods = {k: build_network(v, spec["obs_dim"], spec["act_dim"]) for k, v in nets.items()}
    meta = {**spec, "algo": algo, "networks": nets, "seed": seed, "steps": 0, "config": {}, "obs_norm": False}
    return save_checkpoint(path, state_tensors(mods), meta)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policies", nargs="*", default=None, help="checkpoints (default: two random ones)")
    ap.add_argument("--env", default="Hopper-v5")
    ap.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--episodes", type=int, default=10)
    ap.add_argument("--eps", default="0.05,0.1,0.2,0.3")
    ap.add_argument("--num-envs", type=int, default=10)
    ap.add_argument("--pgd-steps", type=int, default=20)
    ap.add_argument("--critic", default="auto", help="critic source for min-q / min-oa-q: own, fitted, auto")
    ap.add_argument("--fit-steps", type=int, default=None, help="TD steps of fitted critics (default: standard)")
    ap.add_argument("--fit-transitions", type=int, default=None, help="transitions for fitted critics")
    ap.add_argument("--keep", default=None, help="keep the run directories under this folder")
    args = ap.parse_args()

    root = Path(args.keep or tempfile.mkdtemp(prefix="rbrl-bench-walltime-"))
    root.mkdir(parents=True, exist_ok=True)
    if args.policies:
        policies = [str(Path(p).resolve()) for p in args.policies]
        kind = "given checkpoints"
    else:
        policies = [str(random_checkpoint(root / f"random{i}.safetensors", args.env, i, algo))
                    for i, algo in enumerate(("td3", "oa-td3"))]
        kind = "random (untrained) 256x256 checkpoints"
    cache = root / "critic-cache"
    fit = {k: v for k, v in (("steps", args.fit_steps), ("transitions", args.fit_transitions)) if v is not None}
    fit_config = FitConfig(**fit) if fit else None
    suite = parse_suite({
        "name": "walltime", "policies": policies, "attacks": ["random", "biggest", "min-q", "min-oa-q"],
        "eps": [float(e) for e in args.eps.split(",")], "episodes": args.episodes, "num_envs": args.num_envs,
        "pgd_steps": args.pgd_steps, "critic": args.critic, "critic_cache": str(cache), "fit": fit,
    })
    # Critics that must be fitted are fitted (and cached) once here, outside the timed runs: the
    # runner does the same once per policy before its first run, and never again.
    for spec in policies:
        policy = load_policy(spec)
        policy.name = Path(spec).parent.name if Path(spec).stem == "policy" else policy.name
        for attack in ("min-q", "min-oa-q"):
            t0 = time.perf_counter()
            _, source = make_policy_attack(policy, attack, critic=args.critic, cache_dir=cache, progress=False,
                                           fit_config=fit_config)
            print(f"critic for {policy.name} {attack}: {source} ({time.perf_counter() - t0:.1f} s)", flush=True)
    counts = [int(w) for w in args.workers.split(",")]
    results: dict[int, list[dict]] = {w: [] for w in counts}
    reference = None
    for r in range(args.repeats):
        for w in counts:
            out = root / f"run-w{w}-r{r}"
            shutil.rmtree(out, ignore_errors=True)
            load = os.getloadavg()[0]
            t0 = time.perf_counter()
            run = run_bench(suite, out, workers=w, threads=1, progress=False)
            wall = time.perf_counter() - t0
            steps = int(run.table["length"].sum())
            results[w].append({"wall": wall, "steps": steps, "load": load, "cells": run.cells_total})
            print(f"round {r} workers {w}: {wall:.1f} s, {run.cells_total} cells, {steps} env steps, "
                  f"load before {load:.2f}", flush=True)
            if reference is None:
                reference = run.table
            else:
                pd.testing.assert_frame_equal(reference, run.table)
            if r == 0 and w == counts[0]:
                by_attack = run.manifest["timings"]["cell_s_by_attack"]
                print("cell seconds by attack (1st run): " + json.dumps(by_attack), flush=True)
    lengths = reference.groupby("attack")["length"].mean().round(0).to_dict()
    base = min(x["wall"] for x in results[counts[0]])
    print()
    print(f"suite: 2 policies ({kind}) x (none + random, biggest, min-q, min-oa-q at eps {args.eps}) x "
          f"{args.episodes} episodes, num_envs {args.num_envs}, PGD {args.pgd_steps} steps, critic {args.critic}"
          f"{' (fit ' + json.dumps(fit) + ')' if fit else ''}; "
          f"{reference.shape[0]} rows, mean episode length by attack {lengths}")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
          f"{torch.__version__}, threads per worker 1")
    print()
    print("| workers | wall time (s), best of runs | all runs (s) | env steps/s | speed-up vs 1st |")
    print("| --: | --: | :-- | --: | --: |")
    for w in counts:
        walls = [x["wall"] for x in results[w]]
        best = min(walls)
        print(f"| {w} | {best:.1f} | {', '.join(f'{x:.1f}' for x in walls)} | "
              f"{results[w][0]['steps'] / best:,.0f} | {base / best:.2f}x |")
    print(f"\nrun directories: {root}" if args.keep else "")
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
