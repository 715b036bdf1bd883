"""Fitted critics: Q^pi and Q_adv^pi of a FIXED policy, for policies that carry no usable critic.

A PPO policy has no Q, an external policy has nothing, and a TD3 critic is the critic of a policy that
kept changing while it learned. To attack every policy the same way we fit, for the exact policy file,

- ``kind="q"``:    Q^pi(s, a)     = r + gamma (1 - d) Q^pi(s', pi(s')),
- ``kind="oa-q"``: Q_adv^pi(s, a) = r + gamma (1 - d) min_{||delta|| <= eps_train} Q_adv^pi(s', clip(pi(s') + delta)),

by fitted Q evaluation: first gather transitions by running the policy with small exploration noise,
then take TD steps on that fixed data set (twin heads, min-of-heads targets from Polyak-averaged
target networks). The OA target's inner min is the trainers' own (:func:`worst_case`: PGD from the FGSM
corner and a random start, the clean action always a candidate, as OA-TD3's critic target) on the
target critic at the next state's policy action. The result is a safetensors file whose metadata ties it to
the policy file's sha256 and to the fitting settings; :func:`get_fitted_critic` caches it, so asking
twice costs one fit, and refuses a cached critic whose policy bytes changed.

Recipe, in order:
1. Run ``num_envs`` episodes side by side (episode i reset with seed ``FIT_SEED_BASE + FIT_SEED_STRIDE * seed
   + i``, disjoint from evaluation seeds); each episode draws a noise scale sigma ~ U(0, explore_noise)
   and every step executes clip(pi(s) + U([-sigma, sigma]^d)). Mixing quiet and noisy episodes covers
   both the policy's own state distribution and the actions around pi(s) that an attack will probe.
2. Fix an observation standardiser from the gathered states (stored with the critic).
3. ``steps`` TD updates at ``batch_size`` with Adam(``lr``), targets from the target critic, tau-averaged.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import numbers
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from robustbench_rl.attacks.pgd import worst_case
from robustbench_rl.envs import make_env
from robustbench_rl.files import file_sha256
from robustbench_rl.policy import CRITIC_PREFIXES, ObsNormalizer, Policy, TwinCriticView, resolve_env_id
from robustbench_rl.seeds import MAX_SEED
from robustbench_rl.threat import PGD_STARTS

KINDS = ("q", "oa-q")
KIND_KEY = {"q": "q", "oa-q": "q_adv"}  # fitted kind -> the Policy.critics key it stands in for
FIT_ALGO = "fitted-critic"
FIT_SEED_BASE = 1_000_000_000  # far from evaluation seeds (rbrl attack: 0.., training evals: 1,000,000..)
FIT_SEED_STRIDE = 10_000_000  # episodes per fit before two fitting seeds could share an episode seed


@dataclass(frozen=True)
class FitConfig:
    """Budget and hyperparameters of a fitted critic (fitted Q evaluation of a fixed policy).

    The defaults are the standard budget: they fit a critic that Min-Q can attack with on
    Pendulum- to Hopper-scale tasks in about a minute (Q) to two (OA-Q) on a 2-core CPU (see README,
    "Critic attacks and fitted critics", for the measured cost and accuracy). Every field is part of
    the cache key, so a critic fitted with other settings is never silently reused.
    """

    steps: int = 10_000
    """TD updates (gradient steps) on the gathered data."""
    transitions: int = 50_000
    """Environment transitions gathered by running the policy with exploration noise."""
    num_envs: int = 16
    """Episodes run side by side while gathering (one batched policy call per step)."""
    explore_noise: float = 0.3
    """Largest per-episode noise scale: each episode draws sigma ~ U(0, explore_noise)."""
    hidden: tuple[int, ...] = (128, 128)
    """Hidden layer widths of each of the two critic heads (ReLU MLPs)."""
    lr: float = 1e-3
    """Adam learning rate."""
    batch_size: int = 256
    """TD minibatch size."""
    gamma: float = 0.99
    """Discount factor of the fitted values."""
    tau: float = 0.02
    """Polyak averaging rate of the target critic."""
    eps_train: float = 0.1
    """OA-Q only: the adversary's budget inside the target (normalised action units)."""
    pgd_steps: int = 5
    """OA-Q only: PGD steps per start for the target's inner minimum."""
    pgd_start: str = "fgsm"
    """OA-Q only: how the first PGD start is chosen ("fgsm", "random" or "screen"; see pgd_minimize)."""
    pgd_restarts: int = 2
    """OA-Q only: PGD starts for the target's inner minimum (the clean action is a candidate besides)."""
    seed: int = 0
    """Seeds the gathering episodes, the noise, the minibatches, PGD starts and the initial weights."""

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))  # TOML / JSON give lists
        except (TypeError, ValueError):
            raise ValueError(f"invalid fitting setting hidden={self.hidden!r} (a list of layer widths, "
                             "e.g. [128, 128])") from None
        for f in dataclasses.fields(self):
            value, kind = getattr(self, f.name), f.type
            if kind == "int" and (isinstance(value, bool) or not isinstance(value, numbers.Integral)):
                raise ValueError(f"invalid fitting setting {f.name}={value!r} (an integer; see FitConfig's docs)")
            if kind == "float" and (isinstance(value, bool) or not isinstance(value, numbers.Real)
                                    or not math.isfinite(value)):
                raise ValueError(f"invalid fitting setting {f.name}={value!r} (a finite number; see FitConfig's docs)")
        checks = [
            ("steps", self.steps >= 1), ("transitions", self.transitions >= 2), ("num_envs", self.num_envs >= 1),
            ("explore_noise", 0.0 <= self.explore_noise <= 2.0), ("lr", self.lr > 0),
            ("batch_size", self.batch_size >= 1), ("gamma", 0.0 <= self.gamma < 1.0),
            ("tau", 0.0 < self.tau <= 1.0), ("eps_train", 0.0 <= self.eps_train <= 2.0),
            ("pgd_steps", self.pgd_steps >= 1), ("pgd_restarts", self.pgd_restarts >= 1),
            ("pgd_start", self.pgd_start in PGD_STARTS), ("hidden", len(self.hidden) >= 1 and min(self.hidden) >= 1),
            ("seed", 0 <= self.seed <= MAX_SEED),
        ]
        bad = [name for name, ok in checks if not ok]
        if bad:
            raise ValueError(f"invalid fitting setting {bad[0]}={getattr(self, bad[0])!r} (see FitConfig's docs)")

    def settings(self, kind: str) -> dict[str, Any]:
        """The settings that define a fitted critic of `kind`: saved in its metadata and hashed for the cache."""
        out = {k: v for k, v in dataclasses.asdict(self).items()}
        out["hidden"] = list(self.hidden)
        if kind != "oa-q":  # the OA knobs do not change a nominal fit: do not split the cache on them
            for knob in ("eps_train", "pgd_steps", "pgd_start", "pgd_restarts"):
                out.pop(knob)
        return {"kind": kind, **out}


def settings_hash(settings: dict[str, Any]) -> str:
    """Short stable hash of a settings dict (cache file names)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


class FittedCritic(TwinCriticView):
    """A fitted twin critic as a :class:`robustbench_rl.policy.Critic` (min over heads, raw observations).

    `meta` holds the fitting settings, the policy file's sha256 and the fit statistics; `path` is the
    file it was loaded from or saved to (None until saved); `cached` says whether :func:`get_fitted_critic`
    took it from the cache.
    """

    def __init__(self, module: torch.nn.Module, normalize: torch.nn.Module, kind: str, meta: dict[str, Any],
                 path: Path | None = None) -> None:
        super().__init__(module, normalize)
        self.kind = kind
        self.meta = meta
        self.path = path
        self.cached = False  # set by get_fitted_critic when the critic came from the cache, not a fit

    def to(self, device: str | torch.device) -> FittedCritic:
        self.module.to(device)
        self.normalize.to(device)
        return self

    def __repr__(self) -> str:
        return f"FittedCritic(kind={self.kind!r}, policy={self.meta.get('policy_name')!r}, path={self.path})"


# --------------------------------------------------------------------------------------------------
# Where critics live


def policy_file(policy: Policy) -> Path:
    """The file a policy was loaded from; ValueError when it has none (a fitted critic is tied to bytes)."""
    path = getattr(policy, "path", None)
    if path is None or not Path(path).is_file():
        raise ValueError(
            f"policy {getattr(policy, 'name', policy)!r} has no checkpoint file on disk; fitted critics are tied "
            "to a policy file's sha256: load the policy with load_policy(path) first"
        )
    return Path(path)


def policy_context(policy: Policy, env_id: str | None = None) -> dict[str, Any]:
    """What, besides the policy file's bytes, decides the policy's behaviour: its env and its obs normaliser.

    The env is the one the critic is fitted on and the policy evaluated on: `env_id`, else
    ``policy.env_id`` (an SB3 zip names none, and a policy may run on another env of the same sizes
    than the one it was trained on). The normaliser matters for policies whose statistics live in a
    separate file (SB3's VecNormalize). Both enter the cache key and are checked on load.
    """
    ctx: dict[str, Any] = {"env_id": env_id or policy.env_id}
    norm = getattr(policy, "normalize", None)
    buffers = dict(norm.named_buffers()) if isinstance(norm, torch.nn.Module) else {}
    if buffers:
        h = hashlib.sha256()
        for key in sorted(buffers):
            h.update(key.encode() + buffers[key].detach().cpu().float().numpy().tobytes())
        ctx["obs_norm_sha256"] = h.hexdigest()
    return ctx


def _show(progress: bool) -> bool:
    """Progress bars only on a terminal: in logs and CI they are noise (the notes are printed anyway)."""
    return bool(progress) and sys.stderr.isatty()


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"unknown critic kind {kind!r}; use 'q' (Q^pi) or 'oa-q' (Q_adv^pi)")
    return kind


# --------------------------------------------------------------------------------------------------
# Step 1: gather transitions with the fixed policy


@dataclass
class Transitions:
    """A fixed data set of transitions, as (N, .) float32 tensors; `done` is termination (not truncation)."""

    obs: Tensor
    act: Tensor
    rew: Tensor
    next_obs: Tensor
    done: Tensor
    episodes: int = 0
    episode_returns: list[float] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rew)


def collect_transitions(policy: Policy, n: int, *, num_envs: int = 16, explore_noise: float = 0.3, seed: int = 0,
                        env_id: str | None = None, progress: bool = False) -> Transitions:
    """Run `policy` with per-episode exploration noise until `n` transitions are gathered.

    Up to `num_envs` episodes run side by side, with one batched policy call per step. Episode i is
    reset with seed ``FIT_SEED_BASE + FIT_SEED_STRIDE * seed + i``; it draws sigma ~ U(0, explore_noise) and
    executes clip(pi(s) + U([-sigma, sigma]^d)) every step. Time-limit truncations are not terminal,
    so the critic bootstraps through them.
    """
    env_id = resolve_env_id(policy, env_id)
    gen = torch.Generator().manual_seed(int(seed))
    base = FIT_SEED_BASE + FIT_SEED_STRIDE * int(seed)
    envs = [make_env(env_id) for _ in range(max(1, min(num_envs, n)))]
    k = len(envs)
    obs_dim, act_dim = policy.obs_dim, policy.act_dim
    buf = {"obs": np.zeros((n, obs_dim), np.float32), "act": np.zeros((n, act_dim), np.float32),
           "rew": np.zeros(n, np.float32), "next_obs": np.zeros((n, obs_dim), np.float32),
           "done": np.zeros(n, np.float32)}
    obs = np.stack([env.reset(seed=base + j)[0] for j, env in enumerate(envs)]).astype(np.float32).reshape(k, obs_dim)
    sigma = torch.rand(k, 1, generator=gen) * explore_noise
    ep_return = np.zeros(k)
    next_episode, returns, filled = k, [], 0
    bar = tqdm(total=n, desc="gathering transitions", disable=not _show(progress), leave=False, file=sys.stderr)
    device = torch.device(getattr(policy, "device", "cpu"))
    try:
        while filled < n:
            act = policy.act(torch.from_numpy(obs).to(device)).cpu()
            noise = (2.0 * torch.rand(act.shape, generator=gen) - 1.0) * sigma
            act = (act + noise).clamp(-1.0, 1.0).numpy()
            before = filled
            for j, env in enumerate(envs):
                if filled >= n:
                    break
                nxt, rew, term, trunc, _ = env.step(act[j])
                buf["obs"][filled], buf["act"][filled], buf["rew"][filled] = obs[j], act[j], rew
                buf["next_obs"][filled], buf["done"][filled] = nxt, float(term)
                filled += 1
                ep_return[j] += float(rew)
                if term or trunc:
                    returns.append(float(ep_return[j]))
                    ep_return[j] = 0.0
                    nxt, _ = env.reset(seed=base + next_episode)
                    next_episode += 1
                    sigma[j] = torch.rand(1, generator=gen) * explore_noise
                obs[j] = nxt
            bar.update(filled - before)
    finally:
        bar.close()
        for env in envs:
            env.close()
    t = {key: torch.from_numpy(v) for key, v in buf.items()}
    return Transitions(**t, episodes=next_episode, episode_returns=returns)


# --------------------------------------------------------------------------------------------------
# Steps 2-3: fitted Q evaluation


def fit_critic(policy: Policy, kind: str = "q", config: FitConfig | None = None, *, progress: bool = False,
               data: Transitions | None = None, env_id: str | None = None) -> FittedCritic:
    """Fit Q^pi (`kind` "q") or Q_adv^pi (`kind` "oa-q") of the fixed `policy` on `env_id` (default the
    policy's env); returns it in memory.

    Gathers ``config.transitions`` transitions (unless `data` is given), then takes ``config.steps``
    TD steps on twin heads against a Polyak-averaged target (see the module docs for both targets).
    Deterministic for a given config on one machine. The cached version, tied to the policy file, is
    :func:`robustbench_rl.attacks.critic_cache.get_fitted_critic`.
    """
    check_kind(kind)
    config = config or FitConfig()
    env_id = resolve_env_id(policy, env_id)
    device = torch.device(getattr(policy, "device", "cpu"))
    t0 = time.perf_counter()
    if data is None:
        data = collect_transitions(policy, config.transitions, num_envs=config.num_envs,
                                   explore_noise=config.explore_noise, seed=config.seed, env_id=env_id,
                                   progress=progress)
    collect_s = time.perf_counter() - t0

    # The policy is fixed, so its action at every next state is computed once, not per update.
    obs, act, rew = data.obs.to(device), data.act.to(device), data.rew.to(device)
    next_obs, done = data.next_obs.to(device), data.done.to(device)
    with torch.no_grad():
        next_act = torch.cat([policy.act(chunk) for chunk in next_obs.split(8192)]).to(device)
    states = torch.cat([obs, next_obs])
    normalize = ObsNormalizer(states.mean(0), states.var(0, unbiased=False)).to(device)
    obs_n, next_obs_n = normalize(obs), normalize(next_obs)

    spec = {"type": "twin_critic", "hidden": list(config.hidden), "activation": "relu"}
    from robustbench_rl.networks import build_network

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        critic = build_network(spec, policy.obs_dim, policy.act_dim).to(device)
        target = build_network(spec, policy.obs_dim, policy.act_dim).to(device)
    target.load_state_dict(critic.state_dict())
    target.requires_grad_(False)
    optim = torch.optim.Adam(critic.parameters(), lr=config.lr)
    gen = torch.Generator(device=device).manual_seed(int(config.seed) + 1)

    losses: list[float] = []
    n = len(data)
    bar = tqdm(range(config.steps), desc=f"fitting {kind} critic", disable=not _show(progress), leave=False,
               file=sys.stderr)
    t1 = time.perf_counter()
    for step in bar:
        idx = torch.randint(0, n, (config.batch_size,), generator=gen, device=device)
        s, a, r, s2, d, a2 = obs_n[idx], act[idx], rew[idx], next_obs_n[idx], done[idx], next_act[idx]
        with torch.no_grad():
            if kind == "oa-q":
                # Inner min of the OA target: the worst executed action around pi(s') under eps_train.
                _, next_q = worst_case(target.action_objective(s2), a2, config.eps_train, config.pgd_steps,
                                       restarts=config.pgd_restarts, start=config.pgd_start, generator=gen)
            else:
                next_q = target.min_q(s2, a2)
            y = r + config.gamma * (1.0 - d) * next_q
        q1, q2 = critic(s, a)
        loss = F.mse_loss(q1, y) + F.mse_loss(q2, y)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        with torch.no_grad():
            for p, tp in zip(critic.parameters(), target.parameters(), strict=True):
                tp.lerp_(p, config.tau)
        if step % 200 == 0 or step == config.steps - 1:
            losses.append(float(loss.detach()))
            bar.set_postfix(td_loss=f"{losses[-1]:.3g}")
    bar.close()
    critic.eval()
    critic.requires_grad_(False)
    fit_s = time.perf_counter() - t1
    tail = losses[-max(1, len(losses) // 10):]
    meta = {
        "algo": FIT_ALGO,
        "kind": kind,
        "env_id": env_id,
        "obs_dim": policy.obs_dim,
        "act_dim": policy.act_dim,
        "networks": {CRITIC_PREFIXES[KIND_KEY[kind]]: spec},
        "policy_name": getattr(policy, "name", "policy"),
        "fit": config.settings(kind),
        "seed": config.seed,
        "steps": config.steps,
        "stats": {
            "transitions": n,
            "episodes": data.episodes,
            "behaviour_return_mean": float(np.mean(data.episode_returns)) if data.episode_returns else None,
            "td_loss_final": float(np.mean(tail)),
            "collect_s": round(collect_s, 2),
            "fit_s": round(fit_s, 2),
            "wall_s": round(collect_s + fit_s, 2),
        },
    }
    path = getattr(policy, "path", None)
    if path is not None and Path(path).is_file():
        meta["policy_sha256"] = file_sha256(path)
        meta["policy_context"] = policy_context(policy, env_id)
        meta["policy_file"] = Path(path).name
    return FittedCritic(critic, normalize, kind, meta)


# --------------------------------------------------------------------------------------------------
# Checking a fitted Q^pi against Monte-Carlo returns


def monte_carlo_returns(policy: Policy, gamma: float, episodes: int, seed: int = 0,
                        env_id: str | None = None) -> tuple[Tensor, Tensor]:
    """Initial observations and discounted returns of `episodes` noise-free episodes of `policy`.

    Episodes run for up to ceil(log(1e-4) / log(gamma)) steps (time limit lifted to that horizon), so
    the truncated discounted sum is within 1e-4 * max|V| of the infinite-horizon value that a TD-fitted
    Q^pi(s0, pi(s0)) estimates. Returns ``(obs0 (E, obs_dim), returns (E,))``.
    """
    env_id = resolve_env_id(policy, env_id)
    horizon = max(1, math.ceil(math.log(1e-4) / math.log(gamma))) if gamma > 0 else 1
    obs0, rets = [], []
    device = torch.device(getattr(policy, "device", "cpu"))
    for i in range(episodes):
        env = make_env(env_id, max_episode_steps=horizon)
        try:
            obs, _ = env.reset(seed=seed + i)
            obs0.append(np.asarray(obs, np.float32).reshape(-1))
            ret, disc = 0.0, 1.0
            for _ in range(horizon):
                a = policy.act(torch.as_tensor(obs, dtype=torch.float32, device=device).reshape(1, -1))
                obs, r, term, trunc, _ = env.step(a[0].cpu().numpy())
                ret += disc * float(r)
                disc *= gamma
                if term or trunc:
                    break
            rets.append(ret)
        finally:
            env.close()
    return torch.from_numpy(np.stack(obs0)), torch.tensor(rets, dtype=torch.float32)


__all__ = [
    "FitConfig",
    "FittedCritic",
    "Transitions",
    "collect_transitions",
    "fit_critic",
    "monte_carlo_returns",
]
