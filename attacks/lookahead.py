"""The ``lookahead`` attack: choose each perturbation by planning on copies of the simulator.

No critic is needed: the attack asks the simulator itself which perturbations hurt. Given the live
envs E_1..E_N of the batch's rows (handed over by the rollout through :meth:`LookaheadAttack.attach`)::

    perturb(s, a, eps):
        for every row i: z_i = get_sim_state(E_i); h_i = min(H, steps E_i has left before its time limit)
        D_i = K corner sequences of the eps box (half held over H steps, half switching each step)
        D_i[0] = row i's previous best plan, shifted by one step
        repeat 1 + iterations times:                      random shooting, then CEM refinement
            R_i = simulate(D_i)                           simulated returns of the K sequences
            best_i = the lowest-return sequence seen so far
            mu_i, sigma_i = mean and std of the ceil(elite_frac * K) lowest-return sequences of this round
            D_i ~ clip(N(mu_i, sigma_i), -eps, eps)
        return clip(a_i + best_i[0], -1, 1)               the first perturbation of the best plan

    simulate(D):                                          all N * K copies at once
        restore copy (i, k) to z_i; o = s_i; alive = 1; R = 0
        for t < H:
            a_t = pi(o) for all alive copies in one forward pass (a_0 = a, the victim's action at s_i)
            o, r, terminated = copy.step(clip(a_t + D[:, t], -1, 1))   for each alive copy with t < h_i
            R += gamma^t * r;  alive &= not terminated    a fallen copy stops collecting reward
        R += gamma^H * Q(o, pi(o)) for copies alive at the full horizon (critic "q" only)

The copies are made once per attack with :func:`~robustbench_rl.envs.make_env` from the live envs'
spec, so they map actions through the same wrappers, and reused for every plan; a restored copy
stepped with the live env's action gives the live env's next observation and reward exactly.
Stepping is a Python loop over copies (each simulator steps on its own); the victim runs once per
simulated step on all copies of all rows. Cost per real step: (1 + iterations) * K * H copy steps
and (1 + iterations) * H policy forward passes. All randomness comes from the generator passed to
:meth:`LookaheadAttack.perturb`.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

from robustbench_rl.attacks.base import apply_delta, register_attack
from robustbench_rl.envs import check_sim_state, get_sim_state, make_env, set_sim_state
from robustbench_rl.errors import EnvError
from robustbench_rl.policy import Critic, Policy

CRITICS = ("none", "q")


def _time_limit(env: gym.Env) -> gym.wrappers.TimeLimit | None:
    while isinstance(env, gym.Wrapper):
        if isinstance(env, gym.wrappers.TimeLimit):
            return env
        env = env.env
    return None


def steps_taken(env: gym.Env) -> int | None:
    """Steps `env` has taken in its current episode (its TimeLimit's count), or None without a TimeLimit."""
    limit = _time_limit(env)
    return None if limit is None else int(limit._elapsed_steps)


def steps_left(env: gym.Env) -> int | None:
    """Steps `env` may still take before its TimeLimit truncates the episode, or None without one."""
    limit = _time_limit(env)
    return None if limit is None else max(int(limit._max_episode_steps) - int(limit._elapsed_steps), 1)


def first_round(n: int, k: int, h: int, d: int, eps: float, generator: torch.Generator | None,
                like: Tensor) -> Tensor:
    """The random-shooting round's (N, K, H, d) sequences: corners of the eps box, the first half of the
    K held for the whole horizon, the second half drawn afresh each step.

    Corners, because the push that hurts is mostly a push as hard as allowed; held ones, because many
    steps pushing the same way tip a system over where alternating pushes cancel out (BENCHMARKS.md,
    "Look-ahead attack: cost and damage", compares the first rounds).
    """
    u = torch.rand(n, k, h, d, generator=generator, device=like.device, dtype=like.dtype)
    corners = torch.where(u < 0.5, -1.0, 1.0).to(like.dtype) * eps
    corners[:, : k // 2] = corners[:, : k // 2, :1].clone()  # broadcast each sample's first corner over H
    return corners


def _check_int(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value or not low <= value <= high:
        raise ValueError(f"lookahead option {name} must be an integer in [{low}, {high}], got {value!r}")
    return int(value)


def _check_float(name: str, value: Any, low: float, high: float) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and low < value <= high  # NaN fails
    if not ok:
        raise ValueError(f"lookahead option {name} must be a number in ({low}, {high}], got {value!r}")
    return float(value)


@register_attack("lookahead", "plans delta by random shooting + CEM on copies of the simulator (victim in the loop)")
class LookaheadAttack:
    """Model-predictive attack on a copy of the simulator: the first step of the worst plan found.

    `horizon` H simulated steps per plan, `samples` K sequences per round, `iterations` CEM rounds after
    the random-shooting round, `elite_frac` the share of a round's lowest-return sequences that sets
    the next round's sampling distribution, `gamma` the discount of simulated rewards. `critic`
    ``"q"`` adds gamma^H times the victim's value Q(s_H, pi(s_H)) at the horizon (its own critic
    ``q`` when it has one, else one fitted for it, cached under `cache_dir`); ``"none"`` is critic-free.
    The envs must offer their state (:func:`robustbench_rl.envs.sim_state_kind`): every gymnasium
    MuJoCo env does, another env through the ``get_sim_state`` / ``set_sim_state`` hook. After each
    :meth:`perturb`, ``last_returns`` holds the simulated (discounted) return of every row's chosen plan.
    """

    name = "lookahead"
    needs_critic = None
    needs_policy = True
    needs_env = True

    def __init__(self, policy: Policy, *, cache_dir: str | Path | None = None, progress: bool = False,
                 horizon: int = 10, samples: int = 16, iterations: int = 2, elite_frac: float = 0.25,
                 gamma: float = 0.99, critic: str = "none") -> None:
        self.policy = policy
        self.horizon = _check_int("horizon", horizon, 1, 1000)
        self.samples = _check_int("samples", samples, 1, 4096)
        self.iterations = _check_int("iterations", iterations, 0, 100)
        self.elite_frac = _check_float("elite_frac", elite_frac, 0.0, 1.0)
        self.gamma = _check_float("gamma", gamma, 0.0, 1.0)
        if critic not in CRITICS:
            raise ValueError(f"lookahead option critic must be one of {', '.join(CRITICS)}, got {critic!r}")
        self.critic_name = critic
        self.critic: Critic | None = None
        if critic == "q":
            own = getattr(policy, "critics", {}) or {}
            if "q" in own:
                self.critic = own["q"]
            else:
                from robustbench_rl.attacks.critic_cache import get_fitted_critic

                self.critic = get_fitted_critic(policy, "q", cache_dir=cache_dir, progress=progress)
        self._envs: list[gym.Env] = []
        self._pool: list[gym.Env] = []
        self._pool_key: tuple | None = None
        # previous best plan per live env, for the warm start; weak so that a closed env's plan goes with it
        self._plans: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self.last_returns = np.zeros(0)

    def attach(self, envs: Sequence[gym.Env]) -> None:
        """Take the live envs of the next :meth:`perturb` call's rows (row order); EnvError for an env
        whose state cannot be saved, naming the hook to implement."""
        for env in envs:
            check_sim_state(env, "the lookahead attack")
            if env.spec is None:
                raise EnvError(f"the lookahead attack copies envs from their gymnasium spec, and "
                               f"{type(env.unwrapped).__name__} has none: build it with robustbench_rl.envs.make_env")
        self._envs = list(envs)

    def _copies(self, n: int) -> list[gym.Env]:
        """At least `n` copies of the attached envs, built on first need and kept for later plans."""
        spec = self._envs[0].spec
        key = (spec.id, repr(sorted(spec.kwargs.items())))
        if key != self._pool_key:
            for env in self._pool:
                env.close()
            self._pool, self._pool_key = [], key
        while len(self._pool) < n:
            env = make_env(spec.id, **spec.kwargs)
            env.reset(seed=0)  # gymnasium refuses a step before the first reset; the state is overwritten anyway
            self._pool.append(env)
        return self._pool

    @torch.no_grad()
    def _simulate(self, snaps: list[Any], obs: Tensor, act: Tensor, deltas: Tensor, limits: np.ndarray,
                  eps: float) -> Tensor:
        """Discounted returns (N, K) of the perturbation sequences `deltas` (N, K, H, d) from each row's
        snapshot, the victim in the loop; a copy stops at termination or at its row's step limit."""
        n, k, h, d = deltas.shape
        copies = self._copies(n * k)
        for c in range(n * k):
            set_sim_state(copies[c], snaps[c // k])
        o = obs.repeat_interleave(k, 0)  # (N*K, obs_dim): row i's copies are rows i*K .. i*K + K - 1
        a = act.repeat_interleave(k, 0)
        flat = deltas.reshape(n * k, h, d)
        ret = np.zeros(n * k)
        alive = np.ones(n * k, dtype=bool)
        limit = np.repeat(limits, k)
        obs_np = o.cpu().numpy().astype(np.float32)
        for t in range(h):
            alive &= t < limit
            rows = np.flatnonzero(alive)
            if rows.size == 0:
                break
            if t > 0:  # a_0 is the victim's action at s, given; later ones need a forward pass
                a = act.new_zeros(n * k, d)
                a[rows] = self.policy.act(torch.from_numpy(obs_np[rows]).to(act.device)).to(act.dtype)
            actions = apply_delta(a, flat[:, t], eps).cpu().numpy()
            for c in rows:
                next_obs, reward, terminated, _, _ = copies[c].step(actions[c])
                ret[c] += self.gamma**t * float(reward)
                obs_np[c] = next_obs
                alive[c] = not terminated
        if self.critic is not None:  # bootstrap the copies still standing at the full horizon
            rows = np.flatnonzero(alive & (limit >= h))
            if rows.size:
                o_h = torch.from_numpy(obs_np[rows]).to(act.device)
                ret[rows] += self.gamma**h * self.critic(o_h, self.policy.act(o_h)).double().cpu().numpy()
        return torch.from_numpy(ret.reshape(n, k))

    def perturb(self, obs: Tensor, act: Tensor, eps: float, generator: torch.Generator | None = None) -> Tensor:
        """The executed actions clip(a + delta) with delta the first step of each row's worst plan."""
        if eps == 0 or act.numel() == 0:
            return act.clone()
        envs = self._envs
        if len(envs) != len(act):
            raise RuntimeError(f"lookahead: attach() got {len(envs)} envs for {len(act)} rows; call attach(envs) "
                               "with the live env of every row before perturb (robustbench_rl.rollout.evaluate does)")
        n, d = act.shape
        k, h, dev = self.samples, self.horizon, act.device
        snaps = [get_sim_state(env) for env in envs]
        limits = np.array([steps_left(env) or h for env in envs])
        deltas = first_round(n, k, h, d, eps, generator, act)
        for i, env in enumerate(envs):  # warm start: the previous step's best plan, one step on, is one sample
            plan = self._plans.get(env)
            if plan is not None and plan.shape == (h, d) and steps_taken(env) != 0:  # not a new episode's plan
                deltas[i, 0] = torch.cat([plan[1:], plan[-1:]]).clamp(-eps, eps).to(dev)
        n_elite = max(1, math.ceil(self.elite_frac * k))
        rows = torch.arange(n)
        best_ret = torch.full((n,), math.inf, dtype=torch.float64)
        best = deltas[:, 0].clone()
        for it in range(1 + self.iterations):
            ret = self._simulate(snaps, obs, act, deltas, limits, eps)  # (N, K) float64 on the CPU
            order = ret.argsort(dim=1, stable=True)  # lowest (most damaging) first; ties keep sample order
            low = ret[rows, order[:, 0]]
            better = low < best_ret
            best_ret = torch.where(better, low, best_ret)
            order, better = order.to(dev), better.to(dev)
            best[better] = deltas[rows.to(dev), order[:, 0]][better]
            if it < self.iterations:  # CEM: refit the sampling distribution to this round's elites
                elite = deltas[rows.to(dev)[:, None], order[:, :n_elite]]  # (N, E, H, d)
                mu, sigma = elite.mean(1, keepdim=True), elite.std(1, unbiased=False, keepdim=True)
                noise = torch.randn(n, k, h, d, generator=generator, device=dev, dtype=act.dtype)
                deltas = (mu + sigma * noise).clamp(-eps, eps)
        for i, env in enumerate(envs):
            self._plans[env] = best[i].detach().cpu()
        self.last_returns = best_ret.numpy()  # what the simulator promised for each row's chosen plan
        return apply_delta(act, best[:, 0], eps)

    def __repr__(self) -> str:
        return (f"LookaheadAttack(horizon={self.horizon}, samples={self.samples}, iterations={self.iterations}, "
                f"elite_frac={self.elite_frac}, gamma={self.gamma}, critic={self.critic_name!r})")
