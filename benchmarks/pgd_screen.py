"""Does the critic attack find the minimum? Screened PGD against brute force, restarts and the Ledge cliff.

    python benchmarks/pgd_screen.py mlp       # random MLP critics: 2-D vs a grid, 6-D vs 20 restarts
    python benchmarks/pgd_screen.py ledge     # TD3 Ledge policies: share of 400 episodes pushed over the ledge
    python benchmarks/pgd_screen.py speed     # Hopper-v5 attacked evaluation at 32 envs, env steps per second

Settings compared (steps x starts): the attacks' earlier default "fgsm 5x2" (the FGSM corner and one
random start), and "screen SxR" (score the clean action, the FGSM corner, the box corners and 256
uniform samples in one batched call, then S steps of PGD with a decaying step from the best R).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from robustbench_rl.attacks.pgd import pgd_minimize
from robustbench_rl.networks import TwinCritic

SETTINGS = {"fgsm 5x2": dict(steps=5, restarts=2, start="fgsm"),
            "screen 5x2": dict(steps=5, restarts=2, start="screen"),
            "screen 8x2": dict(steps=8, restarts=2, start="screen"),
            "screen 5x2 /32": dict(steps=5, restarts=2, start="screen", screen=32),
            "screen 5x2 /8": dict(steps=5, restarts=2, start="screen", screen=8)}


def random_critic(obs_dim: int, act_dim: int, seed: int) -> TwinCritic:
    """A random twin critic with large first-layer weights: non-convex in the action, several minima."""
    torch.manual_seed(seed)
    critic = TwinCritic(obs_dim, act_dim, [64, 64])
    with torch.no_grad():
        for p in critic.parameters():
            p.mul_(3.0)
    return critic.requires_grad_(False)


def mlp(rows: int = 256, critics: int = 6, eps: float = 0.3) -> None:
    print(f"## random MLP critics ({critics} critics x {rows} states, eps {eps})")
    gen = torch.Generator().manual_seed(0)
    for d in (2, 6):
        shares, vs_restarts = {k: [] for k in SETTINGS}, {k: [] for k in SETTINGS}
        for c in range(critics):
            critic = random_critic(8, d, c)
            obs = torch.randn(rows, 8, generator=gen)
            a = torch.rand(rows, d, generator=gen) * 2 - 1
            f = critic.action_objective(obs)
            clean = f(a)
            if d == 2:  # brute force: a 101 x 101 grid of the feasible box
                lo, hi = (a - eps).clamp(-1, 1), (a + eps).clamp(-1, 1)
                t = torch.linspace(0, 1, 101)
                g = torch.stack(torch.meshgrid(t, t, indexing="ij"), -1).reshape(-1, 2)  # (G, 2)
                pts = lo[None] + (hi - lo)[None] * g[:, None]  # (G, B, 2)
                ref = torch.stack([f.tile(len(chunk))(chunk.reshape(-1, 2)).reshape(len(chunk), rows).min(0).values
                                   for chunk in pts.split(500)]).min(0).values
            else:  # 20 random restarts x 5 steps
                _, ref = pgd_minimize(f, a, eps, 5, restarts=20, generator=gen, return_value=True)
            for name, kw in SETTINGS.items():
                _, v = pgd_minimize(f, a, eps, generator=gen, return_value=True, **kw)
                drop = (clean - ref).clamp(min=1e-6)
                shares[name].append(((v - ref) <= 0.01 * drop).float().mean().item())
                vs_restarts[name].append((v.mean() - ref.mean()).item())
        for name in SETTINGS:
            if d == 2:
                print(f"d=2 {name:12s}: rows within 1% of the grid minimum's drop: "
                      f"mean {100 * np.mean(shares[name]):.1f}%, worst critic {100 * np.min(shares[name]):.1f}%")
            else:
                print(f"d=6 {name:12s}: mean value minus 20-restart mean, per critic: worst "
                      f"{np.max(vs_restarts[name]):+.4f} (<= 0: never worse), mean {np.mean(vs_restarts[name]):+.4f}")


def ledge(episodes: int = 400, steps: int = 3000) -> None:
    from robustbench_rl.attacks.registry import make_attack
    from robustbench_rl.policy import load_policy
    from robustbench_rl.rollout import evaluate

    print(f"## TD3 Ledge policy ({steps} steps: 3000 is the README's), min-q (own critic) at eps 0.2, {episodes} episodes")
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "robustbench_rl.cli", "train", "--algo", "td3", "--env", "rbrl/Ledge-v0",
                        "--steps", str(steps), "--learning-starts", "500", "--hidden", "64,64", "--out", f"{tmp}/run",
                        "--no-progress"], check=True, stdout=subprocess.DEVNULL)
        policy = load_policy(str(Path(tmp) / "run" / "policy.safetensors"))
        nominal = evaluate(policy, "none", 0.0, episodes=1, seed=0, num_envs=1).returns[0]
        print(f"nominal return {nominal:.3f}")
        for name, kw in SETTINGS.items():
            attack = make_attack("min-q", critic=policy.critics["q"], **kw)
            res = evaluate(policy, attack, 0.2, episodes=episodes, seed=0, num_envs=64)
            print(f"{name:12s}: over the ledge in {100 * np.mean(res.returns < 0):.2f}% of {episodes} episodes")


def speed(episodes: int = 32, reps: int = 3) -> None:
    from robustbench_rl.attacks.registry import make_attack
    from robustbench_rl.policy import load_policy
    from robustbench_rl.rollout import evaluate

    torch.set_num_threads(1)
    print("## Hopper-v5, 32 envs, min-q on a 256x256 TD3-shaped checkpoint, 1 thread, 100-step episodes")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from conftest import write_random_checkpoint  # the tests' random checkpoint writer

    with tempfile.TemporaryDirectory() as tmp:
        path = write_random_checkpoint(Path(tmp) / "p.safetensors", "Hopper-v5", "td3", hidden=(256, 256), seed=0)
        policy = load_policy(str(path))
        attacks = {name: make_attack("min-q", critic=policy.critics["q"], **kw) for name, kw in SETTINGS.items()}
        best = dict.fromkeys(attacks, 0.0)
        for _ in range(reps):  # interleaved, so that a change of load hits every setting alike
            for name, attack in attacks.items():
                res = evaluate(policy, attack, 0.1, episodes=episodes, seed=0, num_envs=32, max_episode_steps=100)
                best[name] = max(best[name], res.steps_per_s)
        base = best["fgsm 5x2"]
        for name, sps in best.items():
            print(f"{name:12s}: {sps:.0f} env steps/s (best of {reps}), {sps / base:.2f}x fgsm 5x2")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["mlp", "ledge", "speed", "all"])
    ap.add_argument("--ledge-steps", type=int, nargs="+", default=[3000, 2500],
                    help="training steps of the TD3 Ledge policies attacked (3000: the README's)")
    args = ap.parse_args()
    start = time.perf_counter()
    for what in (["mlp", "ledge", "speed"] if args.what == "all" else [args.what]):
        if what == "ledge":
            for steps in args.ledge_steps:
                ledge(steps=steps)
        else:
            {"mlp": mlp, "speed": speed}[what]()
    print(f"({time.perf_counter() - start:.0f}s)")
