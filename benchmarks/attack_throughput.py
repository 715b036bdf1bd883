"""Attacked evaluation throughput: env steps/s of `evaluate` under each attack vs nominal, by num_envs.

For every num_envs, every attack (none first: the nominal baseline) runs `--reps` times, interleaved
(attack order rotates each repetition) so that load from other processes on a shared machine hits all
attacks alike; the median steps/s is reported with its range. Each attack's cost is reported as its
share of the attacked step, 1 - sps_attacked / sps_nominal (0 = free; 0.9 = 90% of the wall time of an
attacked step is the attack), and as the slowdown sps_nominal / sps_attacked. Critics are built
before timing (a missing fitted critic is fitted and cached first, untimed).

    python benchmarks/attack_throughput.py --policy runs/hopper/policy.safetensors \\
        --num-envs 1,8,32 --steps-per-cell 3000 --reps 3 --threads 1
"""

from __future__ import annotations

import argparse
import statistics

import torch

from robustbench_rl.attacks.registry import make_policy_attack
from robustbench_rl.policy import load_policy
from robustbench_rl.rollout import evaluate

ATTACKS = ["none", "random", "biggest", "min-q", "min-oa-q"]


def episodes_for(policy, attack, eps: float, num_envs: int, steps_per_cell: int, seed: int) -> int:
    """Episodes giving at least `steps_per_cell` env steps (found by doubling; these runs double as warm-up)."""
    episodes = num_envs
    while True:
        res = evaluate(policy, attack, eps, episodes=episodes, seed=seed, num_envs=num_envs, progress=False)
        if res.env_steps >= steps_per_cell or episodes >= 4096:
            return episodes
        episodes *= 2


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", required=True)
    ap.add_argument("--num-envs", default="1,8,32")
    ap.add_argument("--attacks", default=",".join(ATTACKS))
    ap.add_argument("--eps", type=float, default=0.1)
    ap.add_argument("--critic", default="auto", choices=["auto", "own", "fitted"])
    ap.add_argument("--pgd-steps", type=int, default=20)
    ap.add_argument("--steps-per-cell", type=int, default=3000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: stable on a shared machine)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache-dir", default=None, help="fitted-critic cache (default: rbrl's user cache)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    policy = load_policy(args.policy)
    names = [a.strip() for a in args.attacks.split(",") if a.strip()]
    if "none" not in names:
        names.insert(0, "none")
    built = {n: make_policy_attack(policy, n, critic=args.critic, pgd_steps=args.pgd_steps,
                                    cache_dir=args.cache_dir, progress=True)
             for n in names}
    print(f"# policy {policy.name} ({policy.algo}, {policy.env_id}); eps {args.eps}; PGD steps {args.pgd_steps}; "
          f"torch {torch.__version__}, {args.threads} thread(s); median [min-max] of {args.reps} interleaved reps")
    print("| num_envs | attack | critic | steps/s | attack share of the step | slowdown vs nominal | mean return |")
    print("| ---: | --- | --- | ---: | ---: | ---: | ---: |")
    for n_envs in [int(x) for x in args.num_envs.split(",")]:
        sps: dict[str, list[float]] = {n: [] for n in names}
        ret: dict[str, float] = {}
        eps_of = {n: 0.0 if n == "none" else args.eps for n in names}
        episodes = {n: episodes_for(policy, built[n][0], eps_of[n], n_envs, args.steps_per_cell, args.seed)
                    for n in names}
        for rep in range(args.reps):
            order = names[rep % len(names):] + names[:rep % len(names)]
            for n in order:
                res = evaluate(policy, built[n][0], eps_of[n], episodes=episodes[n], seed=args.seed,
                               num_envs=n_envs, progress=False)
                sps[n].append(res.steps_per_s)
                ret[n] = res.mean
        nominal = statistics.median(sps["none"])
        for n in names:
            med = statistics.median(sps[n])
            share = "-" if n == "none" else f"{1 - med / nominal:.2f}"
            slow = "-" if n == "none" else f"{nominal / med:.2f}x"
            print(f"| {n_envs} | {n} | {built[n][1]} | {med:,.0f} [{min(sps[n]):,.0f}-{max(sps[n]):,.0f}] | "
                  f"{share} | {slow} | {ret[n]:.1f} |", flush=True)


if __name__ == "__main__":
    main()
