"""Training speed (not run in CI): TD3 vs OA-TD3 vs stable-baselines3's TD3 on Hopper-v5, side by side.

Each round builds the three learners on the same env (rbrl's [-1, 1] Hopper-v5), takes
`--learning-starts` random steps, then times `--steps` learning steps (one env step + one gradient
update each; actor every 2nd). Rounds are interleaved so that machine load hits all three alike;
the table gives the median steps/s and the median of the per-round ratios. SB3 runs with matched
hyperparameters: 256x256 ReLU actor and critics, Adam 3e-4, batch 256, buffer 1M, gamma 0.99, tau
0.005, train_freq 1, policy_delay 2, target noise 0.2 clipped 0.5, N(0, 0.1) exploration noise.

    python benchmarks/td3_speed.py --rounds 3 --steps 2000 --threads 1 --oa default,old,cold20

OA-TD3 variants (`--oa`): `default` (the current defaults: 2 PGD starts, FGSM corner + random, 2 steps
each), `old` (10 steps from one random start, run on the current code),
`cold20` (20 steps from one random start: the textbook cold start), `min` (1 step from one random
start: what the OA critic, its target and the OA actor gradient cost with almost no PGD), `every-update`
(the default PGD with an OA update on every update, `oa_every` 1), or the defaults with integer
hyperparameters changed: `oa-every=K`, `oa-batch-size=N`, joined by '+' (`oa-batch-size=32+oa-every=2`).
`old`, `cold20` and `min` update the OA critic on every update, as before.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np
import torch

from robustbench_rl.agents.oa_td3 import OATD3Config
from robustbench_rl.agents.td3 import TD3Config, TD3Trainer
from robustbench_rl.envs import make_env

ENV = "Hopper-v5"
OA_VARIANTS = {
    "default": ("2 starts x 2 steps, fgsm", {}),
    "old": ("10 steps, 1 random start", {"pgd_steps": 10, "pgd_restarts": 1, "pgd_start": "random", "oa_every": 1}),
    "cold20": ("20 steps, 1 random start", {"pgd_steps": 20, "pgd_restarts": 1, "pgd_start": "random", "oa_every": 1}),
    "min": ("1 step, 1 random start: the least PGD there can be", {"pgd_steps": 1, "pgd_restarts": 1,
                                                                     "pgd_start": "random", "oa_every": 1}),
    "every-update": ("default PGD, OA update on every update", {"oa_every": 1}),
}


def int_overrides(spec: str) -> dict[str, int]:
    """Integer hyperparameters from `name=value` pairs joined by '+', e.g. `oa-batch-size=32+oa-every=2`."""
    return {k.replace("-", "_"): int(v) for k, v in (part.split("=", 1) for part in spec.split("+"))}


def oa_variant(name: str) -> tuple[str, dict]:
    """A named variant, or OA-TD3's defaults with some integer hyperparameters changed (`int_overrides`)."""
    return ("defaults but " + name, int_overrides(name)) if "=" in name else OA_VARIANTS[name]


def time_rbrl(config, learning_starts: int, steps: int, seed: int) -> float:
    trainer = TD3Trainer(config, ENV, seed, learning_starts + steps, torch.device("cpu"))
    trainer.advance(learning_starts)
    t0 = time.perf_counter()
    trainer.advance(learning_starts + steps)
    dt = time.perf_counter() - t0
    trainer.pop_metrics()  # the one host sync of the logged losses, as at a log boundary
    trainer.close()
    return steps / dt


def time_sb3(learning_starts: int, steps: int, seed: int) -> float:
    from stable_baselines3 import TD3
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.noise import NormalActionNoise

    class Stamp(BaseCallback):
        t0 = None

        def _on_step(self) -> bool:
            if self.num_timesteps == learning_starts:
                Stamp.t0 = time.perf_counter()
            return True

    env = make_env(ENV)
    d = env.action_space.shape[0]
    model = TD3("MlpPolicy", env, learning_rate=3e-4, buffer_size=1_000_000, learning_starts=learning_starts,
                batch_size=256, tau=0.005, gamma=0.99, train_freq=1, gradient_steps=1,
                action_noise=NormalActionNoise(np.zeros(d), 0.1 * np.ones(d)), policy_delay=2,
                target_policy_noise=0.2, target_noise_clip=0.5, policy_kwargs={"net_arch": [256, 256]},
                seed=seed, device="cpu", verbose=0)
    model.learn(total_timesteps=learning_starts + steps, callback=Stamp())
    dt = time.perf_counter() - Stamp.t0
    env.close()
    return steps / dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=2000, help="timed learning steps per learner and round")
    ap.add_argument("--learning-starts", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--oa", default="default",
                    help=f"comma-separated OA-TD3 variants: {', '.join(OA_VARIANTS)}, or e.g. oa-every=4")
    ap.add_argument("--no-sb3", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    common = {"learning_starts": args.learning_starts}
    learners = {"rbrl TD3": lambda s: time_rbrl(TD3Config(**common), args.learning_starts, args.steps, s)}
    for variant in [v.strip() for v in args.oa.split(",") if v.strip()]:
        label, pgd = oa_variant(variant)
        learners[f"rbrl OA-TD3 {variant} ({label})"] = (
            lambda s, pgd=pgd: time_rbrl(OATD3Config(**common, **pgd), args.learning_starts, args.steps, s))
    if not args.no_sb3:
        learners["SB3 TD3 (matched)"] = lambda s: time_sb3(args.learning_starts, args.steps, s)
    results: dict[str, list[float]] = {k: [] for k in learners}
    for r in range(args.rounds):
        for name, fn in learners.items():
            results[name].append(fn(r))
            print(f"round {r}: {name}: {results[name][-1]:.1f} steps/s", flush=True)
    base = results["rbrl TD3"]
    print(f"\nHopper-v5, {args.steps} learning steps after {args.learning_starts} random ones, {args.rounds} "
          f"interleaved rounds, torch {torch.__version__}, {args.threads} thread(s), {platform.processor() or platform.machine()}")
    print("| learner | steps/s median [min-max] | ratio to rbrl TD3 (median of per-round ratios) |")
    print("| --- | --- | --- |")
    for name, vals in results.items():
        ratio = statistics.median(b / v for b, v in zip(base, vals, strict=True))  # time ratio = 1 / speed ratio
        print(f"| {name} | {statistics.median(vals):.1f} [{min(vals):.1f}-{max(vals):.1f}] | "
              f"{'1.00' if name == 'rbrl TD3' else f'{ratio:.2f}x the wall time per step'} |")


if __name__ == "__main__":
    main()
