"""Every attack by name: the registry's lookups and the builder that gives a policy its critic attacks.

Importing this module registers the built-in attacks (none, random, biggest from :mod:`.noise`;
min-q, min-oa-q from :mod:`.critic`); an attack defined elsewhere registers itself with
:func:`robustbench_rl.attacks.base.register_attack` when its module is imported.
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor

from robustbench_rl.attacks import critic as _critic  # noqa: F401  (registers min-q, min-oa-q)
from robustbench_rl.attacks import noise as _noise  # noqa: F401  (registers none, random, biggest)
from robustbench_rl.attacks.base import _REGISTRY, Attack
from robustbench_rl.attacks.critic import CRITIC_ATTACKS, CRITIC_KIND
from robustbench_rl.policy import Policy
from robustbench_rl.threat import (
    CRITIC_SOURCES,
    DEFAULT_PGD_RESTARTS,
    DEFAULT_PGD_START,
    DEFAULT_PGD_STEPS,
)

STANDARD_ORDER = ["none", "random", "biggest", "min-q", "min-oa-q"]


def list_attacks() -> list[str]:
    """Registered attack names, in the standard order (critic-free first)."""
    return [n for n in STANDARD_ORDER if n in _REGISTRY] + sorted(n for n in _REGISTRY if n not in STANDARD_ORDER)


def make_attack(name: str, **kwargs) -> Attack:
    """Build a registered attack; ValueError listing the known names for an unknown one."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown attack {name!r}; known attacks: {', '.join(list_attacks())}")
    return _REGISTRY[name](**kwargs)


def make_policy_attack(
    policy: Policy,
    name: str,
    *,
    critic: str = "auto",
    pgd_steps: int = DEFAULT_PGD_STEPS,
    restarts: int = DEFAULT_PGD_RESTARTS,
    step_size: float | None = None,
    pgd_start: str = DEFAULT_PGD_START,
    cache_dir: str | Path | None = None,
    progress: bool = False,
    fit_config=None,
) -> tuple[Attack, str]:
    """Build the registered attack `name` for `policy`; returns ``(attack, critic_source)``.

    critic_source is ``"none"`` for critic-free attacks, else ``"own"`` or ``"fitted"``. With `critic`
    ``"auto"`` the checkpoint's own critic is used when it has the one the attack needs (``"q"`` for
    min-q, ``"q_adv"`` for min-oa-q), else a critic fitted for this exact policy file (see
    :func:`robustbench_rl.attacks.critic_cache.get_fitted_critic`): taken from the cache under `cache_dir`
    when present, fitted on demand otherwise (with a progress bar and a note of the cost on stderr
    when `progress`). ``"own"`` on a policy without that critic raises ValueError; ``"fitted"``
    always uses a fitted critic, for a like-for-like comparison between policies. `fit_config`
    (a :class:`robustbench_rl.attacks.fit.FitConfig`) overrides the default fitting budget.
    """
    if critic not in CRITIC_SOURCES:
        raise ValueError(f"unknown critic source {critic!r}; use one of: {', '.join(CRITIC_SOURCES)}")
    if name not in CRITIC_ATTACKS:
        attack = make_attack(name)
        if getattr(attack, "needs_critic", None) is not None:
            raise ValueError(f"attack {name!r} needs a critic that rbrl does not know how to provide")
        return attack, "none"
    key = CRITIC_ATTACKS[name]
    pgd = {"steps": pgd_steps, "restarts": restarts, "step_size": step_size, "start": pgd_start}
    make_attack(name, critic=_probe, **pgd)  # fail before a fit
    own = getattr(policy, "critics", {}) or {}
    if critic == "own" or (critic == "auto" and key in own):
        if key not in own:
            have = ", ".join(sorted(own)) or "none"
            raise ValueError(
                f"policy {policy.name} has no {key!r} critic for {name} (its critics: {have}); "
                "use --critic fitted (or auto) to attack it with a critic fitted for this policy"
            )
        source, crit = "own", own[key]
    else:
        from robustbench_rl.attacks.critic_cache import get_fitted_critic
        from robustbench_rl.attacks.fit import FitConfig

        config = fit_config if fit_config is not None else FitConfig()
        source = "fitted"
        crit = get_fitted_critic(policy, CRITIC_KIND[key], config=config, cache_dir=cache_dir, progress=progress)
    attack = make_attack(name, critic=crit, **pgd)
    return attack, source


def _probe(obs: Tensor, act: Tensor) -> Tensor:
    return act.sum(-1)


__all__ = ["STANDARD_ORDER", "list_attacks", "make_attack", "make_policy_attack"]
