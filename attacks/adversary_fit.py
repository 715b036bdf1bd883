"""A learned adversary: TD3 against a frozen victim, the optimal attack on one policy at one budget.

For a fixed victim pi and budget eps the adversary is an agent in the attacked MDP:

    observation  x = (s, pi(s))                    the env state and the victim's action
    action       u = mu(x) in [-1, 1]^d             tanh output; the perturbation is delta = eps * u
    executed     a~ = clip(pi(s) + delta, -1, 1)    threat.apply_delta: the threat model's action
    reward       -r(s, a~)                          the victim's loss is the adversary's gain
    episode      ends with the victim's; a time-limit cut is not terminal (the target bootstraps through it)

and learns it with TD3 (CleanRL's td3_continuous_action, batched over `num_envs` episodes):

    for every vector step (num_envs transitions) until `steps` transitions are stored:
        u = U([-1, 1]^d) for the first learning_starts transitions, else clip(mu(x) + N(0, exploration_noise), -1, 1)
        step every env with clip(pi(s) + eps u); store (x, u, -r, x', terminated)
        after learning_starts, one update per stored transition:
            u' = clip(mu'(x') + clip(N(0, policy_noise), +-noise_clip), -1, 1)        target policy smoothing
            y  = -r + gamma (1 - terminated) min_i Q'_i(x', u')                        clipped double Q
            critic step on (Q_1(x, u) - y)^2 + (Q_2(x, u) - y)^2
            every policy_delay updates: actor step on -Q_1(x, mu(x)); Polyak-average the targets

The noise lives in the adversary's own [-1, 1] units, so it is a fraction of eps. At attack time the
adversary is deterministic: delta = eps * mu(x). Inputs are not normalised (CleanRL's TD3 is not
either): a fixed standardiser fitted on the warm-up states would clip the states the adversary
learns to reach, which are the interesting ones.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import numbers
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from robustbench_rl.attacks.fit import _show, policy_context
from robustbench_rl.envs import make_env
from robustbench_rl.files import file_sha256
from robustbench_rl.networks import Actor, TwinCritic
from robustbench_rl.policy import Policy, resolve_env_id
from robustbench_rl.seeds import MAX_SEED
from robustbench_rl.threat import apply_delta, check_eps

ADVERSARY_ALGO = "rl-adversary"
ADV_SEED_BASE = 500_000_000_000  # episode reset seeds far from evaluation (s * 2**20 + i) and critic fitting (1e9..)
ADV_SEED_STRIDE = 10_000_000  # episodes per fit before two fitting seeds could share an episode seed


@dataclass(frozen=True)
class AdversaryConfig:
    """Budget and hyperparameters of a learned adversary (TD3, CleanRL defaults where they apply).

    Every field is part of the cache key, so an adversary trained with other settings is never
    silently reused. What the default budget costs and achieves on Hopper-v5 is in BENCHMARKS.md
    ("Attack strength on Hopper-v5").
    """

    steps: int = 20_000
    """Env transitions of training (one TD3 update per transition after learning_starts)."""
    num_envs: int = 8
    """Episodes run side by side (one batched victim and adversary call per vector step)."""
    learning_starts: int = 1_000
    """Transitions with uniform random perturbations before the first update."""
    law_episodes: float = 0.5
    """Share of the episodes after the warm-up that act with a random feedback law (as all warm-up
    episodes do) instead of the actor plus noise."""
    hidden: tuple[int, ...] = (256, 256)
    """Hidden layer widths of the adversary's actor and of each critic head (ReLU MLPs)."""
    lr: float = 3e-4
    """Adam learning rate of the actor and the critics."""
    batch_size: int = 256
    """Minibatch size of each update."""
    gamma: float = 0.99
    """Discount factor of the adversary's return."""
    tau: float = 0.005
    """Polyak averaging rate of the target networks."""
    policy_noise: float = 0.2
    """Std of the target policy smoothing noise (adversary units: a fraction of eps)."""
    noise_clip: float = 0.5
    """Clip of the target policy smoothing noise."""
    exploration_noise: float = 0.1
    """Std of the Gaussian exploration noise on the adversary's action while training."""
    policy_delay: int = 2
    """Critic updates per actor (and target) update."""
    seed: int = 0
    """Seeds the training episodes, the exploration and smoothing noise, the minibatches and the init."""

    def __post_init__(self) -> None:
        hidden = self.hidden
        if isinstance(hidden, str):  # "256,256" from a command line or an attack option
            hidden = [h for h in hidden.replace(" ", "").split(",") if h]
        try:
            object.__setattr__(self, "hidden", tuple(int(h) for h in hidden))
        except (TypeError, ValueError):
            raise ValueError(f"invalid rl-adversary option hidden={self.hidden!r} (layer widths, e.g. [256, 256])") from None
        ranges = {
            "steps": ("an integer >= 1", self.steps, lambda v: v >= 1),
            "num_envs": ("an integer in [1, 1024]", self.num_envs, lambda v: 1 <= v <= 1024),
            "learning_starts": ("an integer >= 0", self.learning_starts, lambda v: v >= 0),
            "batch_size": ("an integer >= 1", self.batch_size, lambda v: v >= 1),
            "policy_delay": ("an integer >= 1", self.policy_delay, lambda v: v >= 1),
            "seed": (f"an integer in [0, {MAX_SEED}]", self.seed, lambda v: 0 <= v <= MAX_SEED),
            "lr": ("a number > 0", self.lr, lambda v: v > 0),
            "gamma": ("a number in [0, 1)", self.gamma, lambda v: 0 <= v < 1),
            "tau": ("a number in (0, 1]", self.tau, lambda v: 0 < v <= 1),
            "policy_noise": ("a number >= 0", self.policy_noise, lambda v: v >= 0),
            "noise_clip": ("a number >= 0", self.noise_clip, lambda v: v >= 0),
            "exploration_noise": ("a number >= 0", self.exploration_noise, lambda v: v >= 0),
            "law_episodes": ("a number in [0, 1]", self.law_episodes, lambda v: 0 <= v <= 1),
        }
        for f in dataclasses.fields(self):
            if f.name == "hidden":
                if not self.hidden or min(self.hidden) < 1 or max(self.hidden) > 4096:
                    raise ValueError(f"invalid rl-adversary option hidden={list(self.hidden)} "
                                     "(1 or more layer widths in [1, 4096])")
                continue
            want, value, ok = ranges[f.name]
            integral = f.type == "int"
            typed = not isinstance(value, bool) and isinstance(value, numbers.Integral if integral else numbers.Real)
            if not typed or (not integral and not math.isfinite(value)) or not ok(value):
                raise ValueError(f"invalid rl-adversary option {f.name}={value!r} ({want})")

    def settings(self) -> dict[str, Any]:
        """The settings that define an adversary: saved in its metadata and hashed for the cache."""
        return {**dataclasses.asdict(self), "hidden": list(self.hidden)}


class LearnedAdversary:
    """A trained adversary for one victim and one eps: ``perturb(obs, act)`` is its attack.

    `meta` holds the settings, the victim file's sha256 and the training statistics; `path` is the
    file it was loaded from or saved to; `cached` says whether the cache provided it.
    """

    def __init__(self, actor: Actor, eps: float, meta: dict[str, Any], path: Path | None = None) -> None:
        self.actor = actor.eval().requires_grad_(False)
        self.eps = float(eps)
        self.meta = meta
        self.path = path
        self.cached = False

    @torch.no_grad()
    def delta(self, obs: Tensor, act: Tensor) -> Tensor:
        """The perturbation eps * mu(s, a) for raw observations and victim actions, both (B, .)."""
        device = next(self.actor.parameters()).device
        x = torch.cat([obs.to(device, torch.float32), act.to(device, torch.float32)], dim=-1)
        return (self.eps * self.actor(x)).to(act.device, act.dtype)

    def perturb(self, obs: Tensor, act: Tensor) -> Tensor:
        """The executed actions clip(a + eps * mu(s, a), -1, 1): inside the threat model's box."""
        return apply_delta(act, self.delta(obs, act), self.eps)

    def to(self, device: str | torch.device) -> LearnedAdversary:
        self.actor.to(device)
        return self

    def __repr__(self) -> str:
        return f"LearnedAdversary(eps={self.eps:g}, victim={self.meta.get('policy_name')!r}, path={self.path})"


def network_specs(config: AdversaryConfig) -> dict[str, dict[str, Any]]:
    """The actor's network spec as checkpoints store it (the adversary's critic is not kept)."""
    return {"actor": {"type": "actor", "hidden": list(config.hidden), "activation": "relu"}}


def fit_adversary(policy: Policy, eps: float, config: AdversaryConfig | None = None, *, progress: bool = False,
                  env_id: str | None = None) -> LearnedAdversary:
    """Train an adversary against the frozen `policy` at budget `eps` on `env_id` (default the policy's env).

    TD3 in the attacked MDP of the module docs, for ``config.steps`` transitions. Deterministic for
    a given config on one machine and thread count. The cached version, tied to the policy file, is
    :func:`robustbench_rl.attacks.adversary.get_adversary`.
    """
    eps = check_eps(eps)
    config = config or AdversaryConfig()
    env_id = resolve_env_id(policy, env_id)
    device = torch.device(getattr(policy, "device", "cpu"))
    obs_dim, act_dim = policy.obs_dim, policy.act_dim
    x_dim, cfg = obs_dim + act_dim, config
    hidden = list(cfg.hidden)

    with torch.random.fork_rng(devices=[]):  # seed the init without touching the caller's global RNG
        torch.manual_seed(cfg.seed)
        actor, critic = Actor(x_dim, act_dim, hidden).to(device), TwinCritic(x_dim, act_dim, hidden).to(device)
    # Warm-up laws: sign(features(x) @ W_j), the initial actor's random hidden features, W_j per episode.
    features = copy.deepcopy(actor.net[:-1]).requires_grad_(False)
    actor_target = Actor(x_dim, act_dim, hidden).to(device).requires_grad_(False)
    critic_target = TwinCritic(x_dim, act_dim, hidden).to(device).requires_grad_(False)
    actor_target.load_state_dict(actor.state_dict())
    critic_target.load_state_dict(critic.state_dict())
    actor_opt = torch.optim.Adam(actor.parameters(), lr=cfg.lr, fused=True)
    critic_opt = torch.optim.Adam(critic.parameters(), lr=cfg.lr, fused=True)
    gen = torch.Generator(device=device).manual_seed(int(cfg.seed))

    n = cfg.steps  # the buffer holds the whole run: adversaries train for 10^4-10^5 transitions
    buf_x, buf_x2 = torch.zeros(n, x_dim, device=device), torch.zeros(n, x_dim, device=device)
    buf_u, buf_r, buf_d = torch.zeros(n, act_dim, device=device), torch.zeros(n, device=device), torch.zeros(n, device=device)

    k = max(1, min(cfg.num_envs, n))
    envs = [make_env(env_id) for _ in range(k)]
    base = ADV_SEED_BASE + ADV_SEED_STRIDE * int(cfg.seed)
    obs = torch.from_numpy(np.stack([env.reset(seed=base + j)[0] for j, env in enumerate(envs)]).astype(np.float32))
    obs = obs.reshape(k, obs_dim).to(device)
    next_episode, filled, n_updates = k, 0, 0
    laws = torch.randn(k, hidden[-1], act_dim, generator=gen, device=device)
    lawful = torch.ones(k, 1, dtype=torch.bool, device=device)  # slots whose episode follows its random law
    ep_return, victim_returns, losses, terminations = np.zeros(k), [], [], 0
    bar = tqdm(total=n, desc=f"adversary eps={eps:g}", disable=not _show(progress), leave=False, file=sys.stderr)
    t0 = time.perf_counter()
    try:
        with torch.no_grad():
            vic = policy.act(obs).to(device)
        while filled < n:
            m = min(k, n - filled)  # the last vector step may use only some of the envs
            x = torch.cat([obs, vic], dim=-1)[:m]
            with torch.no_grad():
                u = torch.bmm(features(x).unsqueeze(1), laws[:m]).squeeze(1).sign()
                if filled >= cfg.learning_starts:
                    noise = torch.randn(m, act_dim, generator=gen, device=device) * cfg.exploration_noise
                    u = torch.where(lawful[:m], u, (actor(x) + noise).clamp(-1.0, 1.0))
            executed = apply_delta(vic[:m], eps * u, eps).cpu().numpy()
            next_obs = np.zeros((m, obs_dim), np.float32)
            rew, term, ended = np.zeros(m, np.float32), np.zeros(m, np.float32), []
            for j in range(m):
                o, r, te, tr, _ = envs[j].step(executed[j])
                next_obs[j], rew[j], term[j] = np.asarray(o, np.float32).reshape(-1), r, float(te)
                ep_return[j] += float(r)
                if te or tr:
                    ended.append(j)
            # The stored next state is the real final one; the victim's action there completes x'.
            nxt = torch.from_numpy(next_obs).to(device)
            with torch.no_grad():
                vic_next = policy.act(nxt).to(device)
            rows = slice(filled, filled + m)
            buf_x[rows], buf_u[rows], buf_r[rows] = x, u, -torch.from_numpy(rew).to(device)
            buf_x2[rows], buf_d[rows] = torch.cat([nxt, vic_next], dim=-1), torch.from_numpy(term).to(device)
            filled += m
            terminations += int(term.sum())
            obs[:m], vic[:m] = nxt, vic_next
            if ended:  # start the next episodes; their first victim actions in one call
                starts = [envs[j].reset(seed=base + next_episode + i)[0] for i, j in enumerate(ended)]
                next_episode += len(ended)
                obs[ended] = torch.from_numpy(np.stack(starts).astype(np.float32).reshape(len(ended), obs_dim)).to(device)
                with torch.no_grad():
                    vic[ended] = policy.act(obs[ended]).to(device)
                laws[ended] = torch.randn(len(ended), hidden[-1], act_dim, generator=gen, device=device)
                lawful[ended] = torch.rand(len(ended), 1, generator=gen, device=device) < cfg.law_episodes
                victim_returns += [float(ep_return[j]) for j in ended]
                ep_return[ended] = 0.0
            if filled >= cfg.learning_starts:
                for _ in range(m):
                    idx = torch.randint(0, filled, (cfg.batch_size,), generator=gen, device=device)
                    loss = _td3_update(cfg, n_updates, buf_x[idx], buf_u[idx], buf_r[idx], buf_x2[idx], buf_d[idx],
                                       actor, critic, actor_target, critic_target, actor_opt, critic_opt, gen)
                    n_updates += 1
                    if n_updates % 500 == 0:
                        losses.append(float(loss))
            bar.update(m)
            if victim_returns:
                bar.set_postfix(victim_return=f"{np.mean(victim_returns[-20:]):.4g}")
    finally:
        bar.close()
        for env in envs:
            env.close()
    wall = time.perf_counter() - t0
    tail = victim_returns[-max(1, len(victim_returns) // 10):]
    meta = {
        "algo": ADVERSARY_ALGO,
        "env_id": env_id,
        "obs_dim": x_dim,  # the adversary's input: the env observation and the victim's action
        "act_dim": act_dim,
        "victim_obs_dim": obs_dim,
        "eps": eps,
        "networks": network_specs(cfg),
        "policy_name": getattr(policy, "name", "policy"),
        "adversary": cfg.settings(),
        "seed": cfg.seed,
        "steps": cfg.steps,
        "stats": {
            "episodes": len(victim_returns),
            "terminations": terminations,  # episodes the victim failed (not cut by the time limit)
            "updates": n_updates,
            "victim_return_last_tenth": float(np.mean(tail)) if tail else None,
            "critic_loss_final": float(np.mean(losses[-5:])) if losses else None,
            "wall_s": round(wall, 2),
            "s_per_1k_steps": round(1000 * wall / n, 3),
        },
    }
    path = getattr(policy, "path", None)
    if path is not None and Path(path).is_file():
        meta["policy_sha256"] = file_sha256(path)
        meta["policy_context"] = policy_context(policy, env_id)
        meta["policy_file"] = Path(path).name
    return LearnedAdversary(actor, eps, meta)


def _td3_update(cfg: AdversaryConfig, n_updates: int, x: Tensor, u: Tensor, r: Tensor, x2: Tensor, d: Tensor,
                actor: Actor, critic: TwinCritic, actor_target: Actor, critic_target: TwinCritic,
                actor_opt: torch.optim.Optimizer, critic_opt: torch.optim.Optimizer, gen: torch.Generator) -> Tensor:
    """One TD3 update on a minibatch (the module docs' inner loop); returns the critic loss."""
    with torch.no_grad():
        noise = (torch.randn(u.shape, generator=gen, device=u.device) * cfg.policy_noise).clamp(-cfg.noise_clip,
                                                                                                cfg.noise_clip)
        u2 = (actor_target(x2) + noise).clamp(-1.0, 1.0)
        y = r + cfg.gamma * (1.0 - d) * critic_target.min_q(x2, u2)
    q1, q2 = critic(x, u)
    critic_loss = F.mse_loss(q1, y) + F.mse_loss(q2, y)
    critic_opt.zero_grad(set_to_none=True)
    critic_loss.backward()
    critic_opt.step()
    if (n_updates + 1) % cfg.policy_delay == 0:
        params = list(actor.parameters())
        actor_loss = -critic.q1(torch.cat([x, actor(x)], dim=-1)).mean()
        # Gradients for the actor only: the critic's weights get none and are not stepped here.
        for p, g in zip(params, torch.autograd.grad(actor_loss, params), strict=True):
            p.grad = g
        actor_opt.step()
        with torch.no_grad():
            for net, tgt in ((actor, actor_target), (critic, critic_target)):
                torch._foreach_lerp_(list(tgt.parameters()), list(net.parameters()), cfg.tau)
    return critic_loss.detach()


__all__ = ["ADVERSARY_ALGO", "AdversaryConfig", "LearnedAdversary", "fit_adversary", "network_specs"]
