"""Fitted critics at the default budget: what they cost, how well Q^pi predicts returns, how strong they attack.

For each policy: fit Q^pi and Q_adv^pi with the default FitConfig (timed; the cache is bypassed with
--force semantics via a private cache dir), compare Q^pi(s0, pi(s0)) with Monte-Carlo discounted
returns of noise-free episodes, then evaluate the policy under random, biggest, min-q (own critic
where the checkpoint has one, and fitted) and min-oa-q (fitted) at each eps.

    python benchmarks/fitted_critics.py --policy a.safetensors --policy b.safetensors --eps 0.1,0.2 \\
        --episodes 10 --threads 1
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from robustbench_rl.attacks.critic_cache import get_fitted_critic
from robustbench_rl.attacks.fit import FitConfig, monte_carlo_returns
from robustbench_rl.attacks.registry import make_policy_attack
from robustbench_rl.policy import load_policy
from robustbench_rl.rollout import evaluate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", action="append", required=True)
    ap.add_argument("--eps", default="0.1,0.2")
    ap.add_argument("--episodes", type=int, default=10)
    ap.add_argument("--mc-episodes", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache-dir", default=None, help="default: a fresh temporary dir (every fit is timed)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cache = args.cache_dir or tempfile.mkdtemp(prefix="rbrl-fit-bench-")
    eps_list = [float(e) for e in args.eps.split(",")]
    config = FitConfig()
    print(f"# default FitConfig: {config}; torch {torch.__version__}, {args.threads} thread(s)")
    for spec in args.policy:
        policy = load_policy(spec)
        print(f"\n## {policy.name} ({policy.algo}, {policy.env_id}); own critics: {sorted(policy.critics) or 'none'}")
        for kind in ("q", "oa-q"):
            t = time.perf_counter()
            critic = get_fitted_critic(policy, kind, config=config, cache_dir=cache)
            st = critic.meta["stats"]
            print(f"fit {kind}: {time.perf_counter() - t:.1f} s (gathering {st['collect_s']} s, TD {st['fit_s']} s), "
                  f"final TD loss {st['td_loss_final']:.4g}")
        obs0, mc = monte_carlo_returns(policy, config.gamma, args.mc_episodes, seed=args.seed)
        q = get_fitted_critic(policy, "q", config=config, cache_dir=cache)
        q_adv = get_fitted_critic(policy, "oa-q", config=config, cache_dir=cache)
        act0 = policy.act(obs0)
        pred, pred_adv = q(obs0, act0), q_adv(obs0, act0)
        line = (f"Monte-Carlo check over {args.mc_episodes} episodes: discounted return {mc.mean():.2f} ± {mc.std():.2f}; "
                f"fitted Q^pi(s0, pi(s0)) {pred.mean():.2f}; mean abs error {(pred - mc).abs().mean():.2f}; "
                f"fitted Q_adv^pi {pred_adv.mean():.2f}")
        if "q" in policy.critics:
            line += f"; the checkpoint's own Q {policy.critics['q'](obs0, act0).mean():.2f}"
        print(line)
        kw = {"episodes": args.episodes, "seed": args.seed, "num_envs": min(8, args.episodes)}
        nominal = evaluate(policy, "none", 0.0, **kw)
        print("\n| attack | critic | " + " | ".join(f"eps {e:g}" for e in eps_list) + " |")
        print("| --- | --- |" + " ---: |" * len(eps_list))
        print(f"| none | - | {nominal.mean:.1f} ± {nominal.std:.1f} (nominal) |" + " |" * (len(eps_list) - 1))
        rows = [("random", "auto"), ("biggest", "auto"), ("min-q", "own"), ("min-q", "fitted"), ("min-oa-q", "fitted")]
        if "q_adv" in policy.critics:
            rows.append(("min-oa-q", "own"))
        for name, source in rows:
            if source == "own" and {"min-q": "q", "min-oa-q": "q_adv"}[name] not in policy.critics:
                continue
            attack, used = make_policy_attack(policy, name, critic=source, cache_dir=cache)
            cells = [evaluate(policy, attack, e, **kw) for e in eps_list]
            print(f"| {name} | {used} | " + " | ".join(f"{c.mean:.1f} ± {c.std:.1f}" for c in cells) + " |",
                  flush=True)


if __name__ == "__main__":
    main()
