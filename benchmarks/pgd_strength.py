"""PGD strength per unit of cost: how much of the achievable Q drop each PGD setting finds, on real critics.

For each (checkpoint, critic key) pair, states are collected by running the policy with N(0, 0.1)
exploration noise; at every eps, an "oracle" (50 steps x 16 starts, the first from the FGSM corner)
estimates the minimum of the critic over the box, and each PGD setting reports

* **drop found**: mean over states of (Q(clean) - Q(found)) / (Q(clean) - Q(oracle)) (1 = the oracle's);
* **rows short**: share of states where the setting stops short of the oracle by more than 1% of the
  oracle's drop;
* **grads**: critic gradient evaluations per state (the cost: one forward and one backward each).

    python benchmarks/pgd_strength.py --policy td3.safetensors:q --policy oa.safetensors:q_adv \\
        --policy oa.safetensors:q --eps 0.05,0.1,0.3 --states 1024
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from robustbench_rl.attacks.pgd import pgd_minimize
from robustbench_rl.envs import make_env
from robustbench_rl.policy import load_policy, resolve_env_id

SETTINGS = {  # name -> (steps, restarts, start)
    "random 20x1 (old attack default)": (20, 1, "random"),
    "random 10x1 (old OA-TD3 default)": (10, 1, "random"),
    "random 5x2": (5, 2, "random"),
    "fgsm 10x1": (10, 1, "fgsm"),
    "fgsm 2x2 (OA-TD3 default)": (2, 2, "fgsm"),
    "fgsm 3x2": (3, 2, "fgsm"),
    "fgsm 5x2 (attack default)": (5, 2, "fgsm"),
}


def policy_states(policy, n: int, seed: int = 0) -> torch.Tensor:
    env = make_env(resolve_env_id(policy))
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    out = []
    while len(out) < n:
        out.append(obs)
        act = policy.act(torch.as_tensor(obs, dtype=torch.float32)[None])[0].numpy()
        obs, _, terminated, truncated, _ = env.step(np.clip(act + rng.normal(0, 0.1, act.shape), -1, 1))
        if terminated or truncated:
            obs, _ = env.reset()
    env.close()
    return torch.as_tensor(np.array(out), dtype=torch.float32)


class Counting:
    """Wraps an objective and counts gradient evaluations."""

    def __init__(self, objective) -> None:
        self.objective, self.grads = objective, 0

    def __call__(self, x):
        return self.objective(x)

    def value_and_grad(self, x):
        self.grads += 1
        return self.objective.value_and_grad(x)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", action="append", required=True, help="CHECKPOINT:CRITIC_KEY (repeatable)")
    ap.add_argument("--eps", default="0.05,0.1,0.3")
    ap.add_argument("--states", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print("| critic | eps | oracle drop | " + " | ".join(SETTINGS) + " |")
    print("| --- | ---: | ---: |" + " ---: |" * len(SETTINGS))
    grads_row = {}
    for spec in args.policy:
        path, key = spec.rsplit(":", 1)
        policy = load_policy(path)
        states = policy_states(policy, args.states)
        actions = policy.act(states)
        objective = policy.critics[key].objective(states)
        for eps in [float(e) for e in args.eps.split(",")]:
            gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731 - a fresh, equal stream per setting
            _, oracle = pgd_minimize(objective, actions, eps, 50, restarts=16, start="fgsm", generator=gen(),
                                     return_value=True)
            clean = objective(actions)
            span = (clean - oracle).clamp(min=1e-6)
            cells = []
            for name, (steps, restarts, start) in SETTINGS.items():
                counting = Counting(objective)
                _, v = pgd_minimize(counting, actions, eps, steps, restarts=restarts, start=start, generator=gen(),
                                    return_value=True)
                gap = (v - oracle) / span
                cells.append(f"{float(1 - gap.mean()):.3f} / {float((gap > 0.01).float().mean()):.2f}")
                grads_row[name] = counting.grads
            print(f"| {policy.name}:{key} | {eps:g} | {float((clean - oracle).mean()):.3f} | " + " | ".join(cells) + " |",
                  flush=True)
    print("| gradient evaluations per state | | | " + " | ".join(str(grads_row[n]) for n in SETTINGS) + " |")
    print("\ncells: drop found (1 = oracle) / share of states short of the oracle by > 1% of its drop")


if __name__ == "__main__":
    main()
