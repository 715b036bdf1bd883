"""Cost and damage of the lookahead attack next to random noise and min-q, on the same episodes.

For each policy and eps, runs the nominal policy, `random`, `min-q` (the policy's own critic) and
`lookahead` (default options unless given) on the same reset seeds, and prints one markdown row per
attack: mean return, the per-episode returns and lengths, seconds per episode and milliseconds per env
step (wall time of the whole evaluation, the lookahead's simulator copies included).

    python benchmarks/lookahead_cost.py --policy zoo:hopper-td3-s0 --policy zoo:invpend-td3-s0 \\
        --eps 0.1,0.2 --episodes 3 --seed 0
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from robustbench_rl.attacks import lookahead as _lookahead  # noqa: F401  (registers lookahead)
from robustbench_rl.attacks.registry import make_policy_attack
from robustbench_rl.policy import load_policy
from robustbench_rl.rollout import evaluate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", action="append", default=None, help="policy spec (repeatable)")
    ap.add_argument("--eps", default="0.1,0.2")
    ap.add_argument("--episodes", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--attacks", default="none,random,min-q,lookahead")
    ap.add_argument("--options", default="{}", help='lookahead options as JSON, e.g. \'{"horizon": 5}\'')
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    options = json.loads(args.options)
    print("| policy | eps | attack | mean return | returns | lengths | s / episode | ms / env step |")
    print("| --- | ---: | --- | ---: | --- | --- | ---: | ---: |")
    for spec in args.policy or ["zoo:hopper-td3-s0", "zoo:invpend-td3-s0"]:
        policy = load_policy(spec)
        for eps in [float(e) for e in args.eps.split(",")]:
            for name in args.attacks.split(","):
                if name == "none" and eps != float(args.eps.split(",")[0]):
                    continue  # the nominal policy does not depend on eps
                opts = options if name == "lookahead" else None
                attack, _ = make_policy_attack(policy, name, options=opts)
                start = time.perf_counter()
                res = evaluate(policy, attack, 0.0 if name == "none" else eps, episodes=args.episodes,
                               seed=args.seed, num_envs=args.episodes)
                wall = time.perf_counter() - start
                returns = ", ".join(f"{r:.0f}" for r in res.returns)
                lengths = ", ".join(str(n) for n in res.lengths)
                print(f"| {spec} | {0 if name == 'none' else eps:g} | {name} | {res.mean:.1f} | {returns} | {lengths} | "
                      f"{wall / args.episodes:.1f} | {1000 * wall / res.env_steps:.2f} |", flush=True)


if __name__ == "__main__":
    main()
