"""Attacked-evaluation scaling: env steps/s vs num_envs and vs PGD steps, against the raw simulator.

Four measurements, each a median over `--reps` interleaved repetitions (the order rotates every
repetition so that load from other processes hits every variant alike):

1. **raw**: `num_envs` plain `gymnasium.make(env)` copies stepped in a Python loop with pre-sampled
   uniform random actions (resets included): the simulator's own speed, the ceiling of evaluation.
2. **nominal**: `rollout.evaluate(policy, "none")` at the same num_envs (policy batched over envs).
3. **attacks**: min-q and min-oa-q with the default PGD (2 starts: FGSM corner + random, 5 steps each) and with the
   reference PGD (20 steps from a uniform random start, the textbook cold start), by num_envs and,
   at `--sweep-envs`, by PGD steps.
4. **strength** (`--strength-episodes`): mean return under each attack on the *same* episodes (the
   same eval seeds) for the default and the reference PGD, with a paired bootstrap 95% CI of the
   difference (default minus reference; negative = the default attack hurts more).

Usage (from the repo root):

    python benchmarks/eval_scaling.py --policy td3.safetensors --oa-policy oa-td3.safetensors \\
        --num-envs 1,2,4,8,16,32,64 --sweep-steps 1,2,5,10,20,40 --threads 1 --plot benchmarks/figures/eval_scaling.png

`--policy` is attacked with min-q on its own critic; `--oa-policy` (optional) with min-oa-q on its own
OA critic. Prints markdown tables; `--plot` also writes a two-panel PNG (and SVG).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import gymnasium as gym
import numpy as np
import torch
from attack_throughput import episodes_for  # same folder: run as python benchmarks/eval_scaling.py

from robustbench_rl.attacks.registry import make_policy_attack
from robustbench_rl.policy import load_policy
from robustbench_rl.rollout import evaluate

DEFAULT = {"pgd_steps": 5, "restarts": 2, "pgd_start": "fgsm"}
REFERENCE = {"pgd_steps": 20, "restarts": 1, "pgd_start": "random"}


def raw_sim_sps(env_id: str, num_envs: int, steps: int, seed: int) -> float:
    """Env steps/s of num_envs plain gymnasium envs under pre-sampled random actions (resets included)."""
    envs = [gym.make(env_id) for _ in range(num_envs)]
    for j, env in enumerate(envs):
        env.reset(seed=seed + j)
        env.action_space.seed(seed + j)
    rounds = max(1, steps // num_envs)
    actions = [[env.action_space.sample() for env in envs] for _ in range(rounds)]
    start = time.perf_counter()
    for t in range(rounds):
        for j, env in enumerate(envs):
            _, _, terminated, truncated, _ = env.step(actions[t][j])
            if terminated or truncated:
                env.reset()
    wall = time.perf_counter() - start
    for env in envs:
        env.close()
    return rounds * num_envs / wall


def timed(variants: dict, num_envs: int, eps: float, steps: int, reps: int, seed: int, env_id: str) -> dict:
    """Median [min, max] steps/s of each variant (name -> (policy, attack) or "raw"), interleaved."""
    episodes = {n: episodes_for(v[0], v[1], 0.0 if v[1] == "none" else eps, num_envs, steps, seed)
                for n, v in variants.items() if n != "raw"}
    sps: dict[str, list[float]] = {n: [] for n in variants}
    names = list(variants)
    for rep in range(reps):
        for n in names[rep % len(names):] + names[:rep % len(names)]:
            if n == "raw":
                sps[n].append(raw_sim_sps(env_id, num_envs, steps, seed))
                continue
            policy, attack = variants[n]
            res = evaluate(policy, attack, 0.0 if attack == "none" else eps, episodes=episodes[n], seed=seed,
                           num_envs=num_envs, progress=False)
            sps[n].append(res.steps_per_s)
    return {n: (statistics.median(v), min(v), max(v)) for n, v in sps.items()}


def paired_diff_ci(a: np.ndarray, b: np.ndarray, n_boot: int = 4000, seed: int = 0) -> tuple[float, float, float]:
    """Mean of a - b over paired episodes and its bootstrap 95% CI."""
    d = a - b
    rng = np.random.default_rng(seed)
    boots = d[rng.integers(0, len(d), (n_boot, len(d)))].mean(1)
    return float(d.mean()), float(np.quantile(boots, 0.025)), float(np.quantile(boots, 0.975))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", required=True, help="checkpoint with its own q critic (min-q)")
    ap.add_argument("--oa-policy", default=None, help="checkpoint with its own q_adv critic (min-oa-q)")
    ap.add_argument("--num-envs", default="1,2,4,8,16,32,64")
    ap.add_argument("--sweep-envs", type=int, default=32, help="num_envs of the PGD-steps sweep")
    ap.add_argument("--sweep-steps", default="1,2,5,10,20,40")
    ap.add_argument("--eps", type=float, default=0.1)
    ap.add_argument("--steps-per-cell", type=int, default=3000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--strength-episodes", type=int, default=64, help="0: skip the strength part")
    ap.add_argument("--strength-eps", default="0.1,0.2")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--plot", default=None, help="write the scaling plot here (.png; an .svg is written too)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    policy = load_policy(args.policy)
    targets = [("min-q", policy)]
    if args.oa_policy:
        targets.append(("min-oa-q", load_policy(args.oa_policy)))
    env_id = policy.env_id

    def attacks(pgd: dict) -> dict:
        return {f"{name} {label}": (pol, make_policy_attack(pol, name, critic="own", **kw)[0])
                for name, pol in targets for label, kw in pgd.items()}

    print(f"# {env_id}; policy {policy.name}{'; OA policy ' + targets[-1][1].name if args.oa_policy else ''}; "
          f"eps {args.eps}; torch {torch.__version__}, {args.threads} thread(s); {platform.machine()}, "
          f"{__import__('os').cpu_count()} cores; median [min-max] of {args.reps} interleaved reps\n")

    # 1-3: throughput by num_envs.
    by_envs = {}
    print("| num_envs | raw sim | nominal (% of raw) | " + " | ".join(
        f"{n} {lab} (% of nominal)" for n, _ in targets for lab in ("default", "reference")) + " |")
    print("| ---: | ---: | ---: |" + " ---: |" * (2 * len(targets)))
    for n_envs in [int(x) for x in args.num_envs.split(",")]:
        variants = {"raw": None, "nominal": (policy, "none"), **attacks({"default": DEFAULT, "reference": REFERENCE})}
        res = timed(variants, n_envs, args.eps, args.steps_per_cell, args.reps, args.seed, env_id)
        by_envs[n_envs] = res
        nominal = res["nominal"][0]
        cells = [f"{res['raw'][0]:,.0f}", f"{nominal:,.0f} ({100 * nominal / res['raw'][0]:.0f}%)"]
        cells += [f"{res[k][0]:,.0f} ({100 * res[k][0] / nominal:.0f}%)" for k in res if k.startswith("min-")]
        print(f"| {n_envs} | " + " | ".join(cells) + " |", flush=True)

    # PGD-steps sweep at one num_envs.
    by_steps = {}
    print(f"\nPGD steps sweep at num_envs {args.sweep_envs} (steps/s, % of nominal):\n")
    print("| PGD steps per start | " + " | ".join(f"{n} {s}" for n, _ in targets
                                               for s in ("fgsm+random x2", "random x1")) + " |")
    print("| ---: |" + " ---: |" * (2 * len(targets)))
    nominal = by_envs.get(args.sweep_envs, {}).get("nominal", (None,))[0]
    for k in [int(x) for x in args.sweep_steps.split(",")]:
        variants = {"nominal": (policy, "none"),
                    **attacks({"fgsm+random x2": {"pgd_steps": k, "restarts": 2, "pgd_start": "fgsm"},
                               "random x1": {"pgd_steps": k, "restarts": 1, "pgd_start": "random"}})}
        res = timed(variants, args.sweep_envs, args.eps, args.steps_per_cell, args.reps, args.seed, env_id)
        by_steps[k] = res
        nom = res["nominal"][0]
        print(f"| {k} | " + " | ".join(f"{res[n][0]:,.0f} ({100 * res[n][0] / nom:.0f}%)"
                                       for n in res if n != "nominal") + " |", flush=True)
    del nominal

    # 4: strength on the same episodes (--strength-episodes 0: throughput only).
    if args.strength_episodes > 0:
        print(f"\nReturn under attack, {args.strength_episodes} paired episodes (same seeds), num_envs {args.sweep_envs}:\n")
        print("| attack | eps | default (fgsm + random, 5 steps each) | reference (20 steps, random) | default - reference [95% CI] |")
        print("| --- | ---: | ---: | ---: | --- |")
        for eps in [float(x) for x in args.strength_eps.split(",")]:
            for name, pol in targets:
                out = {}
                for label, kw in (("default", DEFAULT), ("reference", REFERENCE)):
                    att = make_policy_attack(pol, name, critic="own", **kw)[0]
                    out[label] = evaluate(pol, att, eps, episodes=args.strength_episodes, seed=1000 + args.seed,
                                          num_envs=args.sweep_envs, progress=False).returns
                mean, lo, hi = paired_diff_ci(out["default"], out["reference"])
                print(f"| {name} | {eps:g} | {out['default'].mean():.1f} | {out['reference'].mean():.1f} | "
                      f"{mean:+.1f} [{lo:+.1f}, {hi:+.1f}] |", flush=True)

    if args.plot:
        plot(by_envs, by_steps, args)


def plot(by_envs: dict, by_steps: dict, args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    envs = sorted(by_envs)
    for key in by_envs[envs[0]]:
        ax1.plot(envs, [by_envs[n][key][0] for n in envs], marker="o", label=key,
                 linestyle="--" if "reference" in key else "-")
    ax1.set(xscale="log", yscale="log", xlabel="num_envs", ylabel="env steps/s",
            title=f"Evaluation throughput (eps {args.eps})")
    ax1.set_xticks(envs, [str(n) for n in envs])
    ax1.legend(fontsize=7)
    steps = sorted(by_steps)
    for key in by_steps[steps[0]]:
        if key == "nominal":
            continue
        ax2.plot(steps, [by_steps[k][key][0] / by_steps[k]["nominal"][0] for k in steps], marker="o", label=key,
                 linestyle="--" if key.endswith("random") else "-")
    ax2.axhline(0.4, color="grey", lw=0.8, ls=":")
    ax2.set(xscale="log", xlabel="PGD steps", ylabel="share of nominal steps/s",
            title=f"Attack cost vs PGD steps (num_envs {args.sweep_envs})")
    ax2.set_xticks(steps, [str(k) for k in steps])
    ax2.legend(fontsize=7)
    fig.tight_layout()
    from pathlib import Path

    out = Path(args.plot)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    fig.savefig(out.with_suffix(".svg"))
    print(f"\nplot: {out} (+ .svg)")


if __name__ == "__main__":
    main()
