"""How far OA-TD3 can get to TD3's speed on this CPU: its matmul work per env step, counted (not run in CI).

Can OA-TD3 run at 1.5x TD3's wall time per env step? This script counts the
dense matmul FLOPs one env step's update actually runs (torch's FlopCounterMode, over whole cycles of
policy_delay, oa_every and the pgd_q_drop monitor), for TD3 and for OA-TD3 variants, and turns them into
a floor: the time those FLOPs take at the best float32 matmul rate this CPU reaches on the update's
shapes. It also times each learner's real env steps (learning included), so the table gives, per learner:

- its matmul work and its floor,
- its measured time per step, and that as a multiple of TD3's,
- the lowest ratio it could reach: TD3's measured step plus only the *extra* FLOPs at the floor rate,
  with zero overhead. Above 1.5 there, no implementation of that variant runs at 1.5x TD3 in float32
  on this machine.

    python benchmarks/oa_floor.py --threads 1 --variants default,min,oa-batch-size=32

Variants are td3_speed.py's (`default`, `min`, `cold20`, `oa-every=K`, `oa-batch-size=N`, ...).
"""

from __future__ import annotations

import argparse
import math
import platform
import time

import torch
from td3_speed import ENV, oa_variant  # same folder: run as python benchmarks/oa_floor.py
from torch.utils.flop_counter import FlopCounterMode

from robustbench_rl.agents.oa_td3 import PGD_METRIC_EVERY, OATD3Config
from robustbench_rl.agents.registry import make_trainer
from robustbench_rl.agents.td3 import TD3Config, TD3Trainer


def best_matmul_rate(reps: int) -> tuple[float, str]:
    """The highest float32 matmul rate (FLOP/s) over the shapes an update is made of, and that shape."""
    shapes = {
        "mm 256x256 @ 256x256": (lambda: torch.randn(256, 256), lambda: torch.randn(256, 256), torch.mm, 256 ** 3),
        "mm 512x256 @ 256x256": (lambda: torch.randn(512, 256), lambda: torch.randn(256, 256), torch.mm,
                                 512 * 256 ** 2),
        "bmm 2x(512x256 @ 256x256)": (lambda: torch.randn(2, 512, 256), lambda: torch.randn(2, 256, 256), torch.bmm,
                                      2 * 512 * 256 ** 2),
    }
    rates = {}
    for name, (make_a, make_b, op, macs) in shapes.items():
        a, b = make_a(), make_b()
        for _ in range(20):
            op(a, b)
        best = math.inf
        for _ in range(5):  # best of 5 batches: the rate the hardware reaches, not the noise around it
            t0 = time.perf_counter()
            for _ in range(reps):
                op(a, b)
            best = min(best, (time.perf_counter() - t0) / reps)
        rates[name] = 2 * macs / best
    name = max(rates, key=rates.get)
    return rates[name], name


def flops_per_update(trainer: TD3Trainer) -> float:
    """Matmul FLOPs of one update, averaged over a whole cycle of actor steps, OA updates and monitors."""
    cfg = trainer.config
    cycle = math.lcm(cfg.policy_delay, getattr(cfg, "oa_every", 1) * PGD_METRIC_EVERY)
    counter = FlopCounterMode(display=False)
    with counter:
        for _ in range(cycle):
            trainer.update()
    return counter.get_total_flops() / cycle


def seconds_per_step(trainer: TD3Trainer, steps: int) -> float:
    """Wall time per env step with learning (env step, action, buffer, one update)."""
    start = trainer.global_step
    t0 = time.perf_counter()
    trainer.advance(start + steps)
    dt = time.perf_counter() - t0
    trainer.pop_metrics()
    return dt / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--variants", default="default,min", help="OA-TD3 variants, as in td3_speed.py")
    ap.add_argument("--steps", type=int, default=600, help="timed learning steps per learner")
    ap.add_argument("--learning-starts", type=int, default=1000)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rate, shape = best_matmul_rate(reps=200)

    learners = {"TD3": TD3Config(learning_starts=args.learning_starts)}
    for name in args.variants.split(","):
        label, overrides = oa_variant(name)
        learners[f"OA-TD3 {name} ({label})"] = OATD3Config(learning_starts=args.learning_starts, **overrides)
    rows = {}
    for name, config in learners.items():
        trainer = make_trainer(config, ENV, 0, args.learning_starts + args.steps + 200, torch.device("cpu"))
        trainer.advance(args.learning_starts + 50)
        flops = flops_per_update(trainer)
        rows[name] = (flops, seconds_per_step(trainer, args.steps))
        trainer.close()

    td3_flops, td3_step = rows["TD3"]
    print(f"torch {torch.__version__}, {args.threads} thread(s), {platform.processor() or platform.machine()}; "
          f"best float32 matmul rate {rate / 1e9:.0f} GFLOP/s ({shape}); Hopper-v5, batch 256, 256x256 nets\n")
    print("| learner | matmul GFLOP per step | floor ms | measured ms per step | measured / TD3 | "
          "lowest possible / TD3 |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, (flops, step) in rows.items():
        lowest = 1.0 + (flops - td3_flops) / rate / td3_step
        print(f"| {name} | {flops / 1e9:.3f} | {1e3 * flops / rate:.2f} | {1e3 * step:.2f} | "
              f"{step / td3_step:.2f}x | {lowest:.2f}x |")


if __name__ == "__main__":
    main()
