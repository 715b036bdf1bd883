"""Bounded action attacks: the threat model, the registry, the PGD engine and the attacks themselves.

The names below load on first use, so that importing a torch-free part of this package (the threat
model's numbers in :mod:`.threat`) does not import torch.
"""

from importlib import import_module

_EXPORTS = {
    "Attack": "base", "ThreatModelViolation": "base", "apply_delta": "base", "check_bound": "base",
    "check_eps": "base", "list_attacks": "registry", "make_attack": "registry",
    "make_policy_attack": "registry", "pgd_minimize": "pgd", "LookaheadAttack": "lookahead",
    "RLAdversaryAttack": "adversary", "get_adversary": "adversary",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
