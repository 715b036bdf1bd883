"""Every attack by name: the registry's lookups and the builder that gives a policy its critic attacks.

Importing this module registers the built-in attacks (none, random, biggest from :mod:`.noise`;
min-q, min-oa-q from :mod:`.critic`); an attack defined elsewhere registers itself with
:func:`robustbench_rl.attacks.base.register_attack` when its module is imported.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

from robustbench_rl.attacks import adversary as _adversary  # noqa: F401  (registers rl-adversary)
from robustbench_rl.attacks import critic as _critic  # noqa: F401  (registers min-q, min-oa-q)
from robustbench_rl.attacks import lookahead as _lookahead  # noqa: F401  (registers lookahead)
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


def needs_policy(name: str) -> bool:
    """Whether attack `name` is built around its victim policy (planning or learned attacks), so that
    only :func:`make_policy_attack` can build it."""
    return bool(getattr(_REGISTRY.get(name), "needs_policy", False))


def default_attacks() -> list[str]:
    """What ``all`` means in the CLI and suites: every registered attack that works per step without
    planning or training (random, biggest, min-q, min-oa-q). Policy-built attacks such as lookahead
    and rl-adversary cost minutes per policy, so a user names them explicitly."""
    return [n for n in list_attacks() if n != "none" and not needs_policy(n)]


def attack_option_names(name: str) -> list[str]:
    """The settings attack `name` takes as options (``--attack-option NAME.KEY=VALUE``, a suite's
    ``[attack_options.NAME]`` table): its constructor's keyword arguments, less the ones rbrl fills in."""
    factory = _REGISTRY.get(name)
    if factory is None or not needs_policy(name):
        return []
    params = inspect.signature(factory).parameters.values()
    return [p.name for p in params if p.kind is p.KEYWORD_ONLY and p.name not in _FILLED_IN]


_FILLED_IN = {"policy", "cache_dir", "progress"}


def check_attack_options(options: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Validate per-attack options by name; ValueError naming an unknown attack or setting and the
    allowed ones. Values are checked by the attack itself when it is built."""
    out: dict[str, dict[str, Any]] = {}
    for name, opts in options.items():
        if name not in _REGISTRY:
            raise ValueError(f"options for unknown attack {name!r}; known attacks: {', '.join(list_attacks())}")
        allowed = attack_option_names(name)
        if not allowed:
            raise ValueError(f"attack {name!r} takes no options (only policy-built attacks do: "
                             f"{', '.join(n for n in list_attacks() if needs_policy(n)) or 'none registered'})")
        if not isinstance(opts, Mapping):
            raise ValueError(f"options of {name} must be a table of settings, got {opts!r}")
        bad = sorted(set(opts) - set(allowed))
        if bad:
            raise ValueError(f"unknown option {bad[0]!r} of {name}; its options: {', '.join(allowed)}")
        out[name] = dict(opts)
    return out


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
    options: Mapping[str, Any] | None = None,
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

    Policy-built attacks (lookahead, rl-adversary; :func:`needs_policy`) are built as
    ``Factory(policy=policy, cache_dir=cache_dir, progress=progress, **options)``; `options` are their
    settings (see :func:`attack_option_names`) and are refused for any other attack.
    """
    if critic not in CRITIC_SOURCES:
        raise ValueError(f"unknown critic source {critic!r}; use one of: {', '.join(CRITIC_SOURCES)}")
    if options:
        check_attack_options({name: options})
    if needs_policy(name):
        attack = make_attack(name, policy=policy, cache_dir=cache_dir, progress=progress, **dict(options or {}))
        return attack, "none"
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


__all__ = ["STANDARD_ORDER", "attack_option_names", "check_attack_options", "default_attacks", "list_attacks",
           "make_attack", "make_policy_attack", "needs_policy"]
