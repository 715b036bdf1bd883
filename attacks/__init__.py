"""Bounded action attacks: the threat model, the registry, the PGD engine and the attacks themselves."""

from robustbench_rl.attacks import critic as _critic  # noqa: F401  (registers min-q, min-oa-q)
from robustbench_rl.attacks import noise as _noise  # noqa: F401  (registers none, random, biggest)
from robustbench_rl.attacks.base import (
    Attack,
    ThreatModelViolation,
    apply_delta,
    check_bound,
    check_eps,
    list_attacks,
    make_attack,
)
from robustbench_rl.attacks.pgd import pgd_minimize

__all__ = [
    "Attack",
    "ThreatModelViolation",
    "apply_delta",
    "check_bound",
    "check_eps",
    "list_attacks",
    "make_attack",
    "pgd_minimize",
]
