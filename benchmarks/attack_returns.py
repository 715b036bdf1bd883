"""Attack strength measured in return: the default critic-attack PGD vs 20 cold steps, on the same episodes.

For each policy and eps, runs min-q (or `--attack`) with the policy's own critic twice on the same
episodes (same eval seeds): with the default PGD (2 starts, FGSM corner + random, 5 steps each) and
with the reference (20 steps from one random start, the textbook cold start), and prints the mean
returns and the paired bootstrap 95% CI of default minus reference (negative = the default hurts more).

    python benchmarks/attack_returns.py --policy ip-td3/seed_0/policy.safetensors --policy ... \\
        --eps 0.2,0.3,0.5 --episodes 32
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from robustbench_rl.attacks.registry import make_policy_attack
from robustbench_rl.policy import load_policy
from robustbench_rl.rollout import evaluate

CONFIGS = {"reference (random 20x1)": {"pgd_steps": 20, "restarts": 1, "pgd_start": "random"},
           "default (fgsm 5x2)": {}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", action="append", required=True)
    ap.add_argument("--attack", default="min-q", choices=["min-q", "min-oa-q"])
    ap.add_argument("--eps", default="0.2,0.3,0.5")
    ap.add_argument("--episodes", type=int, default=32)
    ap.add_argument("--num-envs", type=int, default=32)
    ap.add_argument("--seed", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{args.attack}, own critic, {args.episodes} paired episodes (seeds {args.seed}..)\n")
    print("| policy | eps | " + " | ".join(CONFIGS) + " | default - reference [95% CI] |")
    print("| --- | ---: | ---: | ---: | --- |")
    for path in args.policy:
        policy = load_policy(path)
        for eps in [float(e) for e in args.eps.split(",")]:
            out = {}
            for name, kw in CONFIGS.items():
                attack, _ = make_policy_attack(policy, args.attack, critic="own", **kw)
                out[name] = evaluate(policy, attack, eps, episodes=args.episodes, seed=args.seed,
                                     num_envs=args.num_envs).returns
            ref, dflt = out.values()
            diff = dflt - ref
            boots = diff[np.random.default_rng(0).integers(0, len(diff), (4000, len(diff)))].mean(1)
            print(f"| {path} | {eps:g} | {ref.mean():.1f} | {dflt.mean():.1f} | {diff.mean():+.1f} "
                  f"[{np.quantile(boots, 0.025):+.1f}, {np.quantile(boots, 0.975):+.1f}] |", flush=True)


if __name__ == "__main__":
    main()
