"""The attack registry: attacks register their factories here by name (see :mod:`.registry` for
the lookups). The threat model they obey is :mod:`robustbench_rl.threat`, re-exported here."""

from __future__ import annotations

from collections.abc import Callable

from robustbench_rl.threat import (
    BOUND_TOL,
    MAX_EPS,
    Attack,
    ThreatModelViolation,
    apply_delta,
    check_bound,
    check_eps,
)

__all__ = ["BOUND_TOL", "DESCRIPTIONS", "MAX_EPS", "Attack", "ThreatModelViolation", "apply_delta", "check_bound",
           "check_eps", "register_attack"]


_REGISTRY: dict[str, Callable[..., Attack]] = {}
DESCRIPTIONS: dict[str, str] = {}


def register_attack(name: str, description: str) -> Callable[[Callable[..., Attack]], Callable[..., Attack]]:
    """Class decorator adding an attack factory to the registry under `name`."""

    def deco(factory: Callable[..., Attack]) -> Callable[..., Attack]:
        _REGISTRY[name] = factory
        DESCRIPTIONS[name] = description
        return factory

    return deco
