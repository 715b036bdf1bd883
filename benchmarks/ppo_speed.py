"""Training speed of PPO against stable-baselines3's PPO with the same hyperparameters, and OA-PPO's
overhead over PPO, side by side in one process (not run in CI; figures go to BENCHMARKS.md).

Each round times, one after another on the same machine state: our PPO (`PPOTrainer.advance`), SB3's
PPO (`PPO.learn`) with CleanRL's hyperparameters mirrored (64x64 tanh nets with orthogonal init,
log-std 0, 2048 steps x 1 env, 32 minibatches of 64, 10 epochs, GAE 0.95, clip 0.2 also on the value,
lr 3e-4 linearly annealed, grad-norm 0.5, Adam eps 1e-5, VecNormalize of observations and rewards with
clip 10), and our OA-PPO with its defaults. Construction is excluded, rollouts and updates included.
Rounds are interleaved so that the load of a shared machine hits all three alike; the script prints the
median [min-max] steps/s per trainer and the per-round ratios.

    nice -n 5 python benchmarks/ppo_speed.py --env Hopper-v5 --steps 8192 --rounds 3 --threads 1
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from robustbench_rl.agents.oa_ppo import OAPPOConfig
from robustbench_rl.agents.ppo import PPOConfig
from robustbench_rl.agents.registry import make_trainer
from robustbench_rl.envs import make_env


def time_ours(config, env_id: str, steps: int, seed: int) -> float:
    trainer = make_trainer(config, env_id, seed, steps, torch.device("cpu"))
    t0 = time.perf_counter()
    trainer.advance(steps)
    elapsed = time.perf_counter() - t0
    trainer.close()
    return steps / elapsed


def time_sb3(env_id: str, steps: int, seed: int) -> float:
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    venv = VecNormalize(DummyVecEnv([lambda: make_env(env_id)]), norm_obs=True, norm_reward=True, clip_obs=10.0,
                        clip_reward=10.0, gamma=0.99)
    model = PPO("MlpPolicy", venv, learning_rate=lambda progress: 3e-4 * progress, n_steps=2048, batch_size=64,
                n_epochs=10, gamma=0.99, gae_lambda=0.95, clip_range=0.2, clip_range_vf=0.2, ent_coef=0.0,
                vf_coef=0.5, max_grad_norm=0.5, seed=seed, device="cpu", verbose=0,
                policy_kwargs={"net_arch": {"pi": [64, 64], "vf": [64, 64]}, "activation_fn": torch.nn.Tanh,
                               "ortho_init": True, "log_std_init": 0.0})
    t0 = time.perf_counter()
    model.learn(total_timesteps=steps)
    elapsed = time.perf_counter() - t0
    venv.close()
    return steps / elapsed


def summary(xs: list[float]) -> str:
    return f"{statistics.median(xs):.0f} [{min(xs):.0f}-{max(xs):.0f}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--env", default="Hopper-v5")
    ap.add_argument("--steps", type=int, default=8192, help="env steps per measurement (a multiple of 2048)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import stable_baselines3

    print(f"# {args.env}, {args.steps} steps per measurement, {args.rounds} rounds, torch threads {args.threads}; "
          f"torch {torch.__version__}, sb3 {stable_baselines3.__version__}, {platform.processor() or platform.machine()}")
    res: dict[str, list[float]] = {"ppo": [], "sb3": [], "oa-ppo": []}
    for r in range(args.rounds):
        res["ppo"].append(time_ours(PPOConfig(), args.env, args.steps, seed=r))
        res["sb3"].append(time_sb3(args.env, args.steps, seed=r))
        res["oa-ppo"].append(time_ours(OAPPOConfig(), args.env, args.steps, seed=r))
        print(f"round {r}: ppo {res['ppo'][-1]:.0f}, sb3 {res['sb3'][-1]:.0f}, oa-ppo {res['oa-ppo'][-1]:.0f} steps/s",
              flush=True)
    sb3_ratio = [a / b for a, b in zip(res["ppo"], res["sb3"], strict=True)]
    oa_ratio = [a / b for a, b in zip(res["ppo"], res["oa-ppo"], strict=True)]
    print("\n| trainer | steps/s, median [range] |")
    print("| --- | --- |")
    for name, label in (("ppo", "rbrl PPO"), ("sb3", "SB3 PPO, same hyperparameters"), ("oa-ppo", "rbrl OA-PPO (defaults)")):
        print(f"| {label} | {summary(res[name])} |")
    print(f"\nrbrl PPO / SB3 PPO speed, per round: {', '.join(f'{x:.2f}' for x in sb3_ratio)} "
          f"(median {statistics.median(sb3_ratio):.2f})")
    print(f"OA-PPO overhead (time OA-PPO / time PPO), per round: {', '.join(f'{x:.2f}' for x in oa_ratio)} "
          f"(median {statistics.median(oa_ratio):.2f})")


if __name__ == "__main__":
    main()
