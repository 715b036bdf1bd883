"""Is the fast default OA-TD3 as robust as OA-TD3 with cold-start 20-step PGD?

Two parts:

* `ledge`: trains OA-TD3 on rbrl/Ledge-v0 (64x64 nets, 3,000 steps, eps_train 0.2, like the tests) for
  `--seeds` seeds in each `--variants` (by default: the defaults, 2 PGD starts x 2 steps from fgsm, and the
  reference, 20 steps from 1 random start; also `every-update`, and the defaults with integer
  hyperparameters changed, e.g. `oa-every=4` or `oa-batch-size=32+oa-every=2`),
  at omega 0.5 (the default) and omega 0 (robust objective only), and reports the learned action,
  the exact worst-case return at eps_train (brute force over the box: Ledge has one step) and the return
  under min-oa-q at eps_train (own critic, a strong fixed PGD: 8 starts x 20 steps, whatever the defaults).
* `runs`: evaluates trained run directories (e.g. InvertedPendulum-v5 OA-TD3 seeds trained both ways)
  nominally and under min-oa-q, min-q (own critics) and random at `--eps`, on the same episodes.

    python benchmarks/oa_robustness.py ledge --seeds 0,1,2,3,4
    python benchmarks/oa_robustness.py ledge --variants every-update,oa-every=4,oa-batch-size=32,reference
    python benchmarks/oa_robustness.py runs --default ip/default/seed_* --reference ip/reference*/seed_* \\
        --eps 0.1 --episodes 20
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from td3_speed import int_overrides  # same folder: run as python benchmarks/oa_robustness.py

from robustbench_rl.agents.oa_td3 import OATD3Config
from robustbench_rl.agents.td3 import TD3Trainer
from robustbench_rl.attacks.registry import make_policy_attack
from robustbench_rl.envs import ledge_reward
from robustbench_rl.policy import load_policy
from robustbench_rl.rollout import evaluate

VARIANTS = {
    "default": {},
    "every-update": {"oa_every": 1},  # the default PGD with an OA update on every update (the paper's schedule)
    "reference": {"pgd_steps": 20, "pgd_start": "random", "pgd_restarts": 1, "oa_every": 1},
}


def variant(name: str) -> dict:
    """A named variant, or OA-TD3's defaults with some integer hyperparameters changed (`int_overrides`)."""
    return int_overrides(name) if "=" in name else VARIANTS[name]


def ledge(seeds: list[int], eps: float, variants: list[str], omegas: list[float]) -> None:
    torch.set_num_threads(1)
    print(f"Ledge, OA-TD3 64x64, 3,000 steps, eps_train {eps}; per seed: learned action a / exact worst-case "
          "return / return under min-oa-q (own critic, 8 starts x 20 steps)\n")
    print("| omega | OA-TD3 variant | a (per seed) | worst-case return, mean [min, max] | min-oa-q return, mean | train s/run |")
    print("| ---: | --- | --- | --- | ---: | ---: |")
    for omega in omegas:
        for label in variants:
            pgd = variant(label)
            acts, worst, attacked, secs = [], [], [], []
            for seed in seeds:
                cfg = OATD3Config(hidden=[64, 64], learning_starts=500, eps_train=eps, omega=omega, **pgd)
                t0 = time.perf_counter()
                trainer = TD3Trainer(cfg, "rbrl/Ledge-v0", seed, 3000, torch.device("cpu"))
                trainer.advance(3000)
                secs.append(time.perf_counter() - t0)
                with torch.no_grad():
                    a = float(trainer.actor(torch.zeros(1, 1))[0, 0])
                acts.append(a)
                worst.append(float(ledge_reward(np.clip(a + np.linspace(-eps, eps, 2001), -1, 1)).min()))
                policy = _as_policy(trainer)
                attack, _ = make_policy_attack(policy, "min-oa-q", critic="own", pgd_steps=20, restarts=8)
                attacked.append(evaluate(policy, attack, eps, episodes=64, seed=seed, num_envs=64).mean)
            print(f"| {omega:g} | {label} | {', '.join(f'{a:.3f}' for a in acts)} | {np.mean(worst):+.3f} "
                  f"[{min(worst):+.3f}, {max(worst):+.3f}] | {np.mean(attacked):+.3f} | {statistics.median(secs):.1f} |",
                  flush=True)


def _as_policy(trainer: TD3Trainer):
    """The trainer's networks as a loaded policy (through a real checkpoint file, as a user would)."""
    import tempfile

    from robustbench_rl.checkpoint import save_checkpoint, state_tensors
    from robustbench_rl.config import RunConfig
    from robustbench_rl.training import policy_metadata

    modules, networks, extra_t, extra_m = trainer.policy_state()
    run = RunConfig(algo="oa-td3", env="rbrl/Ledge-v0", steps=trainer.global_step)
    path = Path(tempfile.mkdtemp()) / "ledge.safetensors"
    save_checkpoint(path, {**state_tensors(modules), **extra_t},
                    policy_metadata(run, trainer.config, networks, extra_m, trainer.global_step))
    return load_policy(str(path))


def runs(groups: dict[str, list[str]], eps: float, episodes: int) -> None:
    torch.set_num_threads(1)
    print(f"Same {episodes} episodes (seeds 0..{episodes - 1}) for every policy; own critics; eps {eps}\n")
    print("| training PGD | run | nominal | random | min-q | min-oa-q |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    summary: dict[str, dict[str, list[float]]] = {}
    for label, paths in groups.items():
        for run_dir in paths:
            policy = load_policy(str(Path(run_dir) / "policy.safetensors"))
            row = {"nominal": evaluate(policy, "none", 0.0, episodes=episodes, seed=0, num_envs=episodes).mean}
            for name in ("random", "min-q", "min-oa-q"):
                attack, _ = make_policy_attack(policy, name, critic="own")
                row[name] = evaluate(policy, attack, eps, episodes=episodes, seed=0, num_envs=episodes).mean
            for k, v in row.items():
                summary.setdefault(label, {}).setdefault(k, []).append(v)
            print(f"| {label} | {run_dir} | " + " | ".join(f"{row[k]:.1f}" for k in ("nominal", "random", "min-q", "min-oa-q"))
                  + " |", flush=True)
    for label, cols in summary.items():
        print(f"| **{label}, mean of {len(cols['nominal'])}** | | " + " | ".join(
            f"{np.mean(cols[k]):.1f}" for k in ("nominal", "random", "min-q", "min-oa-q")) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="part", required=True)
    p1 = sub.add_parser("ledge")
    p1.add_argument("--seeds", default="0,1,2,3,4")
    p1.add_argument("--eps", type=float, default=0.2)
    p1.add_argument("--variants", default="default,reference",
                    help=f"comma-separated: {', '.join(VARIANTS)}, or e.g. oa-every=4, oa-batch-size=32+oa-every=2")
    p1.add_argument("--omegas", default="0.5,0")
    p2 = sub.add_parser("runs")
    p2.add_argument("--default", nargs="+", default=[], help="run dirs trained with the default PGD")
    p2.add_argument("--reference", nargs="+", default=[], help="run dirs trained with 20-step cold PGD")
    p2.add_argument("--group", nargs="+", action="append", default=[], metavar="LABEL DIR",
                    help="another group: its label, then its run dirs (repeatable)")
    p2.add_argument("--eps", type=float, default=0.1)
    p2.add_argument("--episodes", type=int, default=20)
    args = ap.parse_args()
    if args.part == "ledge":
        ledge([int(s) for s in args.seeds.split(",")], args.eps, args.variants.split(","),
              [float(w) for w in args.omegas.split(",")])
    else:
        groups = {"default (fgsm 2x2)": args.default, "reference (random 20x1)": args.reference}
        groups |= {g[0]: g[1:] for g in args.group}
        runs({k: v for k, v in groups.items() if v}, args.eps, args.episodes)


if __name__ == "__main__":
    main()
