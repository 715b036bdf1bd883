"""The learned adversary (rl-adversary): what a fit costs, and how much damage it does against random and min-q.

cost:   train one adversary per policy with the default AdversaryConfig (or --steps) in a fresh cache
        and print the wall time, per 1,000 training transitions, and the victim's return at the end of training.
damage: train (or take from --cache-dir) the adversary of each eps with the default settings, then
        evaluate the policy nominally and under random, min-q (own and fitted critic) and rl-adversary
        on the same episodes.

    python benchmarks/adversary_cost.py cost --policy zoo:invpend-td3-s0 --policy zoo:hopper-td3-s0
    python benchmarks/adversary_cost.py damage --policy zoo:invpend-td3-s0 --eps 0.1,0.2,0.3 --episodes 10
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time

import torch

from robustbench_rl.attacks.adversary import RLAdversaryAttack, get_adversary
from robustbench_rl.attacks.adversary_fit import AdversaryConfig
from robustbench_rl.attacks.registry import make_policy_attack
from robustbench_rl.policy import load_policy
from robustbench_rl.rollout import evaluate


def cost(args: argparse.Namespace) -> None:
    config = AdversaryConfig(**({"steps": args.steps} if args.steps else {}), seed=args.seed)
    print(f"# {config}; torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    print("| policy | env | steps | fit wall s | s per 1k steps | victim return, last tenth of training |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for spec in args.policy:
        policy = load_policy(spec)
        with tempfile.TemporaryDirectory(prefix="rbrl-adv-cost-") as cache:
            t = time.perf_counter()
            adv = get_adversary(policy, args.eps, config=config, cache_dir=cache)
            wall = time.perf_counter() - t
        st = adv.meta["stats"]
        last = st["victim_return_last_tenth"]
        print(f"| {spec} | {policy.env_id} | {config.steps} | {wall:.1f} | {1000 * wall / config.steps:.2f} | "
              f"{'n/a' if last is None else f'{last:.1f}'} |", flush=True)


def damage(args: argparse.Namespace) -> None:
    eps_list = [float(e) for e in args.eps.split(",")]
    cache = args.cache_dir or tempfile.mkdtemp(prefix="rbrl-adv-damage-")
    config = AdversaryConfig(**({"steps": args.steps} if args.steps else {}), seed=args.seed)
    options = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)
               if f.name in ("steps", "seed")}
    print(f"# {config}; cache {cache}; {args.episodes} episodes, eval seed {args.eval_seed}")
    for spec in args.policy:
        policy = load_policy(spec)
        kw = {"episodes": args.episodes, "seed": args.eval_seed, "num_envs": min(args.episodes, 10)}
        nominal = evaluate(policy, None, 0.0, **kw)
        print(f"\n## {spec} ({policy.env_id}): nominal {nominal.mean:.1f} ± {nominal.std:.1f}")
        attacks = {"random": make_policy_attack(policy, "random")[0]}
        for source in ("own", "fitted"):
            if source == "own" and "q" not in policy.critics:
                continue
            attacks[f"min-q ({source})"] = make_policy_attack(policy, "min-q", critic=source, cache_dir=cache)[0]
        adversary = RLAdversaryAttack(policy, cache_dir=cache, **options)
        for eps in eps_list:  # fit first, timed, so that the table below is evaluation only
            t = time.perf_counter()
            fresh = not adversary.cached(eps)
            adversary.prepare([eps])
            st = get_adversary(policy, eps, config=config, cache_dir=cache).meta["stats"]
            print(f"adversary eps {eps:g}: {'trained' if fresh else 'cached'} in {time.perf_counter() - t:.1f} s "
                  f"(fit {st['wall_s']} s; victim return over the last tenth of training "
                  f"{st['victim_return_last_tenth']})", flush=True)
        attacks["rl-adversary"] = adversary
        print("\n| attack | " + " | ".join(f"eps {e:g}" for e in eps_list) + " |")
        print("| --- | " + " | ".join("---:" for _ in eps_list) + " |")
        for name, attack in attacks.items():
            cells = []
            for eps in eps_list:
                r = evaluate(policy, attack, eps, **kw)
                cells.append(f"{r.mean:.1f} ± {r.std:.1f}")
            print(f"| {name} | " + " | ".join(cells) + " |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="what", required=True)
    for name in ("cost", "damage"):
        p = sub.add_parser(name)
        p.add_argument("--policy", action="append", required=True)
        p.add_argument("--steps", type=int, default=None, help="training transitions (default: AdversaryConfig's)")
        p.add_argument("--seed", type=int, default=0, help="training seed")
        p.add_argument("--threads", type=int, default=1)
    sub.choices["cost"].add_argument("--eps", type=float, default=0.2)
    sub.choices["damage"].add_argument("--eps", default="0.1,0.2,0.3")
    sub.choices["damage"].add_argument("--episodes", type=int, default=10)
    sub.choices["damage"].add_argument("--eval-seed", type=int, default=0)
    sub.choices["damage"].add_argument("--cache-dir", default=None, help="default: a fresh temporary dir")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    (cost if args.what == "cost" else damage)(args)


if __name__ == "__main__":
    main()
