"""Where TD3's time per step goes on the CPU, against its floor (not run in CI).

Times, at batch 256 on Hopper-v5's dimensions after 1,000 random steps: one 256x256x256 float32
matmul (the unit a TD3 step is made of: 9 in the critic update with its target, 5 in each actor step,
so 11.5 per env step with policy_delay 2), the pieces of rbrl's TD3 update, and one alternative we measured and did
not adopt: the twin critic's TD loss and parameter gradients written out by hand, both heads in
batched matmuls, no autograd (checked equal to autograd first).

    python benchmarks/td3_floor.py --threads 1
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
import torch.nn.functional as F

from robustbench_rl.agents.td3 import TD3Config, TD3Trainer

MATMULS_PER_STEP = 9 + 5 / 2  # critic update + half an actor step


def timed(fn, reps: int) -> float:
    for _ in range(10):
        fn()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t0) / reps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=300)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    trainer = TD3Trainer(TD3Config(learning_starts=1000), "Hopper-v5", 0, 3000, torch.device("cpu"))
    trainer.advance(1100)
    cfg, critic = trainer.config, trainer.critic
    b = trainer.buffer.sample(256, trainer.gen)
    with torch.no_grad():
        y = b.rew + cfg.gamma * (1.0 - b.done) * trainer.critic_target.min_q(b.next_obs, trainer.actor_target(b.next_obs))

    def autograd_critic():
        q1, q2 = critic(b.obs, b.act)
        loss = F.mse_loss(q1, y) + F.mse_loss(q2, y)
        critic.zero_grad(set_to_none=True)
        loss.backward()

    heads = [critic.q1, critic.q2]

    @torch.no_grad()
    def manual_critic():
        x = torch.cat([b.obs, b.act], -1)
        w = [torch.stack([h[i].weight for h in heads]) for i in (0, 2, 4)]
        bias = [torch.stack([h[i].bias for h in heads]).unsqueeze(1) for i in (0, 2, 4)]
        xs = x.expand(2, *x.shape)
        h1 = torch.baddbmm(bias[0], xs, w[0].transpose(1, 2)).relu_()
        h2 = torch.baddbmm(bias[1], h1, w[1].transpose(1, 2)).relu_()
        err = torch.baddbmm(bias[2], h2, w[2].transpose(1, 2)).squeeze(-1) - y
        dq = (2.0 / len(x)) * err.unsqueeze(-1)
        dz2 = torch.ops.aten.threshold_backward(torch.bmm(dq, w[2]), h2, 0)
        dz1 = torch.ops.aten.threshold_backward(torch.bmm(dz2, w[1]), h1, 0)
        grads = [(torch.bmm(dz1.transpose(1, 2), xs), dz1.sum(1)), (torch.bmm(dz2.transpose(1, 2), h1), dz2.sum(1)),
                 (torch.bmm(dq.transpose(1, 2), h2), dq.sum(1))]
        for k, h in enumerate(heads):
            for (dw, db), i in zip(grads, (0, 2, 4), strict=True):
                h[i].weight.grad, h[i].bias.grad = dw[k], db[k]

    autograd_critic()
    ref = [p.grad.clone() for p in critic.parameters()]
    manual_critic()
    worst = max(float((p.grad - r).abs().max()) for p, r in zip(critic.parameters(), ref, strict=True))
    assert worst < 1e-4, f"hand-written critic gradient differs from autograd by {worst}"

    a, m = torch.randn(256, 256), torch.randn(256, 256)
    unit = timed(lambda: torch.mm(a, m), args.reps)
    rows = {
        "one 256x256x256 matmul": unit,
        f"floor: {MATMULS_PER_STEP:g} such matmuls (one env step's update)": MATMULS_PER_STEP * unit,
        "critic forward + backward (autograd, rbrl)": timed(autograd_critic, args.reps),
        "critic forward + backward (hand-written, batched heads)": timed(manual_critic, args.reps),
        "critic Adam step (fused)": timed(trainer.critic_opt.step, args.reps),
        "actor step (rbrl)": timed(lambda: trainer.actor_step(b.obs), args.reps),
        "whole update, average (rbrl)": timed(trainer.update, args.reps),
    }
    print(f"torch {torch.__version__}, {args.threads} thread(s), {platform.processor() or platform.machine()}; "
          f"matmul at {2 * 256 ** 3 / unit / 1e9:.0f} GFLOP/s\n")
    print("| piece | ms |\n| --- | ---: |")
    for name, s in rows.items():
        print(f"| {name} | {1e3 * s:.3f} |")


if __name__ == "__main__":
    main()
