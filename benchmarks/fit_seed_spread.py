"""How much does a critic attack depend on the seed of its fitted critic?

    python benchmarks/fit_seed_spread.py --policy zoo:invpend-oa-ppo-s0 --policy zoo:invpend-td3-s0 \
        --attack min-oa-q --seeds 0,1,2 --eps 0.1,0.2,0.3 --episodes 10

For each policy and fitting seed, fits (or reads from the cache) the critic the attack needs with the
default settings at that seed, then evaluates the attack at every eps (eval seed 0, the same start
states for every fitting seed). Seed 0 is the default fit, the one bundled with the zoo. Prints one
markdown row per policy and fitting seed: mean return per eps and the fit's wall time.
"""

from __future__ import annotations

import argparse
import time

import torch

from robustbench_rl.attacks.fit import FitConfig
from robustbench_rl.attacks.registry import make_policy_attack
from robustbench_rl.policy import load_policy
from robustbench_rl.rollout import evaluate


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", action="append", required=True, help="Policy spec (repeatable).")
    parser.add_argument("--attack", default="min-oa-q", choices=["min-q", "min-oa-q"])
    parser.add_argument("--seeds", default="0,1,2", help="Fitting seeds (comma-separated).")
    parser.add_argument("--eps", default="0.1,0.2,0.3")
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--cache-dir", default=None, help="Critic cache (default: rbrl's, then the zoo's).")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    eps = [float(e) for e in args.eps.split(",")]
    print(f"| policy | fit seed | {' | '.join(f'{args.attack} eps {e:g}' for e in eps)} | fit + eval s |")
    print(f"| --- | ---: | {' | '.join('---:' for _ in eps)} | ---: |")
    for spec in args.policy:
        policy = load_policy(spec)
        for seed in (int(s) for s in args.seeds.split(",")):
            t0 = time.perf_counter()
            attack, _ = make_policy_attack(policy, args.attack, critic="fitted", cache_dir=args.cache_dir,
                                           fit_config=FitConfig(seed=seed))
            means = [evaluate(policy, attack, e, episodes=args.episodes, seed=0, num_envs=args.episodes,
                              progress=False).mean for e in eps]
            print(f"| {spec} | {seed} | {' | '.join(f'{m:.1f}' for m in means)} | {time.perf_counter() - t0:.0f} |",
                  flush=True)


if __name__ == "__main__":
    main()
