"""The ``rl-adversary`` attack: a learned adversary per victim file, env, eps and settings, fitted once.

    perturb(s, a, eps):
        adv = the adversary for eps held in memory,
              else the cached file for (victim sha256, env, eps, settings), checked against the victim,
              else fit_adversary(victim, eps) (TD3 against the frozen victim, see .adversary_fit),
                   saved atomically into the cache
        return clip(a + eps * mu_eps(s, a), -1, 1)          deterministic: no noise at attack time

A learned adversary is one ``.safetensors`` file (its actor, and JSON metadata with the settings, the
victim file's sha256 and the training statistics) under ``CACHE/adversaries/<victim sha256[:16]>/
eps<eps>-<settings hash>.safetensors``, CACHE being the fitted-critic cache's folder
(:func:`~robustbench_rl.attacks.critic_cache.default_cache_dir`). A changed policy byte or setting
misses the cache, and a file whose recorded sha256 is not the victim's is refused on load.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from robustbench_rl.attacks.adversary_fit import (
    ADVERSARY_ALGO,
    AdversaryConfig,
    LearnedAdversary,
    fit_adversary,
)
from robustbench_rl.attacks.base import register_attack
from robustbench_rl.attacks.critic_cache import _check_cache_writable, default_cache_dir
from robustbench_rl.attacks.fit import policy_context, policy_file, settings_hash
from robustbench_rl.checkpoint import (
    CheckpointError,
    build_modules,
    load_checkpoint,
    save_checkpoint,
    state_tensors,
)
from robustbench_rl.files import file_sha256
from robustbench_rl.policy import Policy
from robustbench_rl.threat import check_eps

_D = AdversaryConfig()


def adversary_cache_path(policy: Policy, eps: float, config: AdversaryConfig | None = None,
                         cache_dir: str | os.PathLike | None = None, *, env_id: str | None = None,
                         policy_sha256: str | None = None) -> Path:
    """Cache location of the adversary for this exact policy file, env (`env_id`, default the policy's),
    eps and settings."""
    eps = check_eps(eps)
    config = config or AdversaryConfig()
    sha = policy_sha256 or file_sha256(policy_file(policy))
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    key = settings_hash({**config.settings(), **policy_context(policy, env_id), "eps": eps})
    return root / "adversaries" / sha[:16] / f"eps{eps:g}-{key}.safetensors"


def is_cached(policy: Policy, eps: float, config: AdversaryConfig | None = None,
              cache_dir: str | os.PathLike | None = None, *, env_id: str | None = None) -> bool:
    """Whether the cache holds a file for this adversary (eps 0 needs none); its contents are checked on load."""
    return check_eps(eps) == 0 or adversary_cache_path(policy, eps, config, cache_dir, env_id=env_id).is_file()


def save_adversary(adversary: LearnedAdversary, path: str | os.PathLike) -> Path:
    """Write an adversary as one safetensors file (atomic), its metadata tying it to the victim's sha256."""
    if "policy_sha256" not in adversary.meta:
        raise ValueError("this adversary is not tied to a policy file (fit it for a policy loaded from a file)")
    out = save_checkpoint(path, state_tensors({"actor": adversary.actor}), adversary.meta)
    adversary.path = Path(out)
    return adversary.path


def load_adversary(path: str | os.PathLike, policy: Policy, eps: float | None = None,
                   env_id: str | None = None) -> LearnedAdversary:
    """Load an adversary for `policy` on `env_id` (default the policy's env), refusing it unless it was
    trained against these exact policy bytes in this context (and at `eps`, when given).

    CheckpointError, one line, when the file is not a learned adversary, when the sha256 it records
    differs from the policy file's (the policy changed: refit), or when its env, dims or eps differ.
    """
    path = Path(path)
    tensors, meta = load_checkpoint(path)
    if meta.get("algo") != ADVERSARY_ALGO:
        raise CheckpointError(f"{path} is not a learned adversary (algo {meta.get('algo')!r}); "
                              "fit one with `rbrl fit-adversary`")
    want = file_sha256(policy_file(policy))
    if meta.get("policy_sha256") != want:
        raise CheckpointError(
            f"adversary {path.name} was trained against a policy file with sha256 "
            f"{str(meta.get('policy_sha256'))[:12]}..., but {policy.name} has sha256 {want[:12]}... (the policy "
            f"changed); refit it with `rbrl fit-adversary --policy {policy_file(policy)}`")
    context = policy_context(policy, env_id)
    if meta.get("policy_context") != context:
        raise CheckpointError(f"adversary {path.name} was trained in another context ({meta.get('policy_context')}), "
                              f"not {context}; refit it with `rbrl fit-adversary`")
    if (meta["obs_dim"], meta["act_dim"]) != (policy.obs_dim + policy.act_dim, policy.act_dim):
        raise CheckpointError(f"{path}: adversary dims do not match policy {policy.name}")
    if not isinstance(meta.get("eps"), (int, float)) or (eps is not None and float(meta["eps"]) != check_eps(eps)):
        raise CheckpointError(f"{path}: adversary trained at eps {meta.get('eps')!r}, not {eps}")
    modules = build_modules(tensors, meta, path=str(path))
    if set(modules) != {"actor"} or meta["networks"]["actor"].get("type") != "actor":
        raise CheckpointError(f"{path}: a learned adversary holds exactly one deterministic actor")
    adversary = LearnedAdversary(modules["actor"], float(meta["eps"]), meta, path=path)
    return adversary.to(getattr(policy, "device", "cpu"))


def get_adversary(policy: Policy, eps: float, *, config: AdversaryConfig | None = None,
                  cache_dir: str | os.PathLike | None = None, progress: bool = False, force: bool = False,
                  env_id: str | None = None) -> LearnedAdversary:
    """The learned adversary for this policy file, env, eps and settings: from the cache, else fitted and cached.

    The file name carries the policy's sha256 and a hash of the settings, env and eps, so a changed
    policy or setting fits afresh; a cached file is re-checked against the policy on load. `force`
    refits even on a hit; the result's ``cached`` says which happened. An unwritable cache is a
    ValueError before the fit. With `progress`, fitting shows a progress bar and notes its cost on stderr.
    """
    eps = check_eps(eps)
    if eps == 0:
        raise ValueError("eps 0 needs no adversary (the attack is then the policy's own action)")
    config = config or AdversaryConfig()
    path = adversary_cache_path(policy, eps, config, cache_dir, env_id=env_id)
    if path.is_file() and not force:
        try:
            adversary = load_adversary(path, policy, eps, env_id=env_id)
            adversary.cached = True
            return adversary
        except CheckpointError as err:  # a damaged entry (e.g. a disk filled mid-copy): refit over it
            print(f"note: ignoring unreadable cached adversary {path} ({err}); refitting", file=sys.stderr, flush=True)
    _check_cache_writable(path)
    if progress:
        print(f"note: no cached rl-adversary for {policy.name} at eps {eps:g}; training one ({config.steps} TD3 "
              f"steps: as long as training a TD3 policy that far), cached at {path}",
              file=sys.stderr, flush=True)
    adversary = fit_adversary(policy, eps, config, progress=progress, env_id=env_id)
    save_adversary(adversary, path)
    if progress:
        st = adversary.meta["stats"]
        print(f"note: trained the adversary in {st['wall_s']:.0f}s (victim return over the last tenth of training "
              f"{st['victim_return_last_tenth']}); the next request is free", file=sys.stderr, flush=True)
    return adversary


@register_attack("rl-adversary", "a TD3 agent trained against the frozen victim to minimise its return "
                                 "(one per eps, fitted once and cached)")
class RLAdversaryAttack:
    """The learned adversary as an attack: per eps, the cached adversary (fitted on first use), no noise.

    The options are :class:`~robustbench_rl.attacks.adversary_fit.AdversaryConfig`'s fields, checked
    when the attack is built (ValueError naming the option and its range). :meth:`prepare` fits the
    adversaries of a list of budgets up front, e.g. in a bench's parent process before its workers
    start; :meth:`cached` says whether a budget's adversary is ready without a fit.
    """

    name = "rl-adversary"
    needs_critic = None
    needs_policy = True

    def __init__(self, policy: Policy, *, cache_dir: str | os.PathLike | None = None, progress: bool = False,
                 steps: int = _D.steps, seed: int = _D.seed, num_envs: int = _D.num_envs,
                 learning_starts: int = _D.learning_starts, hidden: Any = _D.hidden, lr: float = _D.lr,
                 batch_size: int = _D.batch_size, gamma: float = _D.gamma) -> None:
        self.config = AdversaryConfig(steps=steps, seed=seed, num_envs=num_envs, learning_starts=learning_starts,
                                      hidden=hidden, lr=lr, batch_size=batch_size, gamma=gamma)
        policy_file(policy)  # an adversary is tied to a policy file: fail now, not at the first step
        self.policy = policy
        self.cache_dir = cache_dir
        self.progress = progress
        self._adversaries: dict[float, LearnedAdversary] = {}

    def adversary(self, eps: float) -> LearnedAdversary:
        """The adversary for `eps`: held in memory after the first call (loaded from the cache or fitted)."""
        eps = check_eps(eps)
        if eps not in self._adversaries:
            self._adversaries[eps] = get_adversary(self.policy, eps, config=self.config, cache_dir=self.cache_dir,
                                                   progress=self.progress)
        return self._adversaries[eps]

    def cached(self, eps: float) -> bool:
        """Whether `eps` needs no fit: eps 0, an adversary in memory, or a file in the cache."""
        eps = check_eps(eps)
        return eps in self._adversaries or is_cached(self.policy, eps, self.config, self.cache_dir)

    def prepare(self, eps_list: list[float]) -> None:
        """Load or fit the adversary of every nonzero eps in `eps_list` now (each once)."""
        for eps in dict.fromkeys(check_eps(e) for e in eps_list):
            if eps > 0:
                self.adversary(eps)

    def perturb(self, obs: Tensor, act: Tensor, eps: float, generator: torch.Generator | None = None) -> Tensor:
        if eps == 0:
            return act.clone()
        return self.adversary(eps).perturb(obs, act)


__all__ = ["RLAdversaryAttack", "adversary_cache_path", "get_adversary", "is_cached",
           "load_adversary", "save_adversary"]
