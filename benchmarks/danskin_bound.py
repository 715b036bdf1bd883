"""Does the OA actor gradient need Danskin's correction where the worst action sits on the [-1, 1] bound?

OA-TD3's OA actor gradient is g_adv = -d/dtheta Q_adv(s, a~) with a~ = clip(mu(s) + d*) and d* held
fixed: it passes dQ_adv/da~ to mu as if d a~ / d mu = I. By Danskin's theorem the derivative of
V(mu) = min over the feasible set {a~ : |a~ - mu| <= eps, a~ in [-1, 1]} of Q_adv is dQ/da~ only in the
coordinates where the minimiser sits on the eps edge (or inside); a coordinate clipped at the fixed
bound +-1 (mu_i + eps > 1 with a~_i = 1, or mu_i - eps < -1 with a~_i = -1) does not move with mu, so
its true derivative is 0. This script measures, on states a trained OA policy visits, how many
coordinates are in that case and how much masking them changes g_adv (cosine between the two actor
gradients, and the relative norm of the difference).

    python benchmarks/danskin_bound.py zoo:invpend-oa-td3-s0 runs/zoo/hopper-oa-td3/seed_0/checkpoints/step_000050000.safetensors
"""

from __future__ import annotations

import argparse

import torch

from robustbench_rl.attacks.fit import collect_transitions
from robustbench_rl.attacks.pgd import worst_case
from robustbench_rl.policy import load_policy

BOUND_TOL = 1e-6


def measure(spec: str, eps: float, states: int, seed: int) -> dict:
    """Share of clipped-at-bound coordinates and the effect of masking them on g_adv for one policy."""
    torch.manual_seed(seed)
    policy = load_policy(spec)
    if "q_adv" not in policy.critics:
        raise SystemExit(f"{spec} has no OA critic (q_adv): give an OA-TD3 checkpoint")
    obs = collect_transitions(policy, states, num_envs=8, explore_noise=0.0, seed=seed).obs
    actor = policy.actor.requires_grad_(True)
    params = list(actor.parameters())
    norm_obs = policy.normalize(obs)
    mu = actor(norm_obs).clamp(-1.0, 1.0)
    critic = policy.modules["critic_adv"]
    q_adv = critic.action_objective(norm_obs, heads=("q1",))
    gen = torch.Generator().manual_seed(seed)
    worst, _ = worst_case(q_adv, mu.detach(), eps, 2, restarts=2, start="fgsm", generator=gen)
    _, dq = q_adv.value_and_grad(worst)
    m = mu.detach()
    at_bound = ((worst >= 1.0 - BOUND_TOL) & (m + eps > 1.0 + BOUND_TOL)) | \
               ((worst <= -1.0 + BOUND_TOL) & (m - eps < -1.0 - BOUND_TOL))
    n = len(obs)
    g_now = torch.cat([g.reshape(-1) for g in torch.autograd.grad(mu, params, (-1.0 / n) * dq, retain_graph=True)])
    dq_fixed = torch.where(at_bound, 0.0, dq)
    g_fix = torch.cat([g.reshape(-1) for g in torch.autograd.grad(mu, params, (-1.0 / n) * dq_fixed)])
    cos = torch.nn.functional.cosine_similarity(g_now, g_fix, dim=0).item()
    return {
        "policy": spec, "env": policy.env_id, "states": n, "act_dim": policy.act_dim,
        "coords_at_bound": at_bound.float().mean().item(), "rows_with_any": at_bound.any(1).float().mean().item(),
        "mu_saturated": (m.abs() > 1.0 - eps).float().mean().item(),
        "cosine": cos, "rel_diff": ((g_now - g_fix).norm() / g_now.norm().clamp_min(1e-12)).item(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("policies", nargs="+", help="OA-TD3 checkpoints (paths or zoo:NAME)")
    parser.add_argument("--eps", type=float, default=0.1, help="eps_train of the OA gradient (default 0.1)")
    parser.add_argument("--states", type=int, default=4096)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print("| policy | env | states | coords at +-1 bound | rows with one | |mu| > 1 - eps | cosine(g_adv, Danskin) | rel. diff |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for spec in args.policies:
        r = measure(spec, args.eps, args.states, args.seed)
        print(f"| {r['policy']} | {r['env']} | {r['states']} | {r['coords_at_bound']:.1%} | {r['rows_with_any']:.1%} "
              f"| {r['mu_saturated']:.1%} | {r['cosine']:.4f} | {r['rel_diff']:.3f} |")


if __name__ == "__main__":
    main()
