"""Batched evaluation of a policy under an attack.

Episodes are assigned to env slots up front (slot j runs episodes j, j + n, j + 2n, ...) and episode
i of eval seed s is always reset with ``episode_seed(s, i) = s * 2**20 + i``, so N requested episodes
are exactly those N episodes: none biased towards the short ones, as a "first N to finish" scheme
would be. The formula is injective, so two eval seeds never share a start state and pooling eval
seeds pools independent episodes. Each step, the policy and the attack run once on the batch of
active slots, and the threat model's bound is asserted on every action. An attack that declares
``needs_env = True`` is also handed the live envs of the batch's rows before every step (see
:class:`robustbench_rl.threat.Attack`).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from robustbench_rl.envs import make_env
from robustbench_rl.policy import Policy, check_env_compat, resolve_env_id
from robustbench_rl.seeds import MAX_SEED, check_seed
from robustbench_rl.threat import Attack, NominalAttack, check_bound, check_eps

EPISODES_PER_SEED = 2**20
"""Most episodes one eval seed can run: episode seeds of eval seed s fill [s * 2**20, (s + 1) * 2**20)."""

MAX_EVAL_SEED = MAX_SEED
"""Largest eval seed (the range rbrl accepts for every seed)."""


def episode_seed(seed: int, episode: int | np.ndarray) -> int | np.ndarray:
    """The reset seed of episode `episode` of eval seed `seed`: ``seed * 2**20 + episode``.

    Injective in (seed, episode) for 0 <= episode < 2**20, so episodes of different eval seeds never
    share a start state; eval seed 0 resets its episodes with 0, 1, 2, ... Used by every evaluation
    (attacks, benches, training-time evaluation), so the same (seed, episode) is the same start state
    everywhere.
    """
    return seed * EPISODES_PER_SEED + episode


def check_eval_seed(seed: int) -> int:
    """`seed` as an int if it is a valid eval seed (0 <= seed <= MAX_SEED), else ValueError naming it."""
    return check_seed(seed, "eval seed")


@dataclass
class EvalResult:
    """Per-episode outcome of one (policy, attack, eps, seed) evaluation."""

    returns: np.ndarray
    lengths: np.ndarray
    episode_seeds: np.ndarray
    attack: str
    eps: float
    seed: int
    env_id: str
    wall_s: float = 0.0
    info: dict = field(default_factory=dict)

    @property
    def mean(self) -> float:
        return float(np.mean(self.returns))

    @property
    def std(self) -> float:
        return float(np.std(self.returns))

    @property
    def env_steps(self) -> int:
        return int(np.sum(self.lengths))

    @property
    def steps_per_s(self) -> float:
        return self.env_steps / self.wall_s if self.wall_s > 0 else float("nan")


NOMINAL = "none"
"""The attack name of the unperturbed policy, which evaluate runs for ``attack=None``."""


def evaluate(
    policy: Policy,
    attack: Attack | None,
    eps: float,
    *,
    episodes: int,
    seed: int,
    num_envs: int = 8,
    env_id: str | None = None,
    progress: bool | None = None,
    max_episode_steps: int | None = None,
) -> EvalResult:
    """Run exactly `episodes` episodes of `policy` under `attack` at budget `eps`.

    `attack` is an attack object (``robustbench_rl.attacks.make_attack(name)``, or
    ``make_policy_attack`` for critic attacks), or None / ``"none"`` for the nominal policy.

    Episode i is reset with ``episode_seed(seed, i)``; up to `num_envs` episodes run side by side, and
    the policy and the attack see the whole batch of running episodes at once. The attack's randomness (random
    noise, PGD starts) comes from one generator seeded with `seed`, so the same arguments give the
    same returns on the same machine. Raises ThreatModelViolation if the attack ever leaves the eps
    box or [-1, 1]. `progress` shows a bar (default: only when stderr is a terminal).
    """
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    if episodes > EPISODES_PER_SEED:
        raise ValueError(f"episodes must be <= {EPISODES_PER_SEED} per eval seed, got {episodes}; "
                         "use several eval seeds")
    if num_envs < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    seed = check_eval_seed(seed)
    eps = check_eps(eps)
    env_id = resolve_env_id(policy, env_id)
    check_env_compat(policy, env_id)
    if attack is None or attack == NOMINAL:
        attack = NominalAttack()
    elif isinstance(attack, str):
        raise TypeError(f"evaluate takes an attack object, not the name {attack!r}: build it with "
                        f"robustbench_rl.attacks.make_attack({attack!r}) (None or 'none' is the nominal policy)")
    device = torch.device(getattr(policy, "device", "cpu"))
    generator = torch.Generator(device=device).manual_seed(int(seed))
    n = min(num_envs, episodes)
    envs = [make_env(env_id, max_episode_steps=max_episode_steps) for _ in range(n)]
    needs_env = bool(getattr(attack, "needs_env", False))
    if needs_env:
        try:
            attack.attach(envs)  # before any reset: an attack refuses an env it cannot work on here
        except BaseException:
            for env in envs:
                env.close()
            raise
    returns = np.zeros(episodes)
    lengths = np.zeros(episodes, dtype=np.int64)
    slot_episode = np.arange(n)  # the episode each slot is running
    obs = np.stack([env.reset(seed=episode_seed(seed, j))[0] for j, env in enumerate(envs)]).astype(np.float32)
    active = np.ones(n, dtype=bool)
    show = sys.stderr.isatty() if progress is None else progress
    bar = tqdm(total=episodes, desc=f"{attack.name} eps={eps:g}", disable=not show, leave=False)
    start = time.perf_counter()
    try:
        while active.any():
            idx = np.flatnonzero(active)
            obs_t = torch.from_numpy(obs[idx]).to(device)
            act = policy.act(obs_t)
            if needs_env:
                attack.attach([envs[j] for j in idx])  # the live envs, in the batch's row order
            perturbed = attack.perturb(obs_t, act, eps, generator)
            check_bound(act, perturbed, eps)
            actions = perturbed.detach().cpu().numpy()
            for row, j in enumerate(idx):
                next_obs, reward, terminated, truncated, _ = envs[j].step(actions[row])
                ep = slot_episode[j]
                returns[ep] += float(reward)
                lengths[ep] += 1
                if terminated or truncated:
                    bar.update(1)
                    nxt = ep + n
                    if nxt < episodes:
                        slot_episode[j] = nxt
                        next_obs, _ = envs[j].reset(seed=episode_seed(seed, int(nxt)))
                    else:
                        active[j] = False
                obs[j] = next_obs
    finally:
        bar.close()
        for env in envs:
            env.close()
    return EvalResult(
        returns=returns, lengths=lengths, episode_seeds=episode_seed(seed, np.arange(episodes, dtype=np.int64)),
        attack=attack.name, eps=eps, seed=int(seed), env_id=env_id, wall_s=time.perf_counter() - start,
    )
