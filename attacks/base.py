"""The threat model, in one place, and the attack registry.

Threat model: policies act in the normalised box [-1, 1]^d. An attack sees the observation s and the
policy's action a and returns a~ = clip(a + delta, -1, 1) with ||delta||_inf <= eps, eps in normalised
units (eps = 0.1 moves each actuator by at most 5% of its full range). :func:`apply_delta` is the
only way an attack turns a perturbation into an executed action, and :func:`check_bound` is what the
rollout asserts on every step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from robustbench_rl.attacks.threat import BOUND_TOL, MAX_EPS, ThreatModelViolation, check_eps

__all__ = ["BOUND_TOL", "MAX_EPS", "Attack", "ThreatModelViolation", "apply_delta", "check_bound", "check_eps",
           "list_attacks", "make_attack", "register_attack"]


def apply_delta(act: Tensor, delta: Tensor, eps: float) -> Tensor:
    """a~ = clip(a + clip(delta, -eps, eps), -1, 1): the threat model's executed action."""
    return (act + delta.clamp(-eps, eps)).clamp(-1.0, 1.0)


def check_bound(act: Tensor, perturbed: Tensor, eps: float) -> None:
    """Raise ThreatModelViolation unless ||perturbed - act||_inf <= eps (+1e-6) and perturbed in [-1, 1]."""
    if perturbed.shape != act.shape:
        raise ThreatModelViolation(f"attack changed the action shape {tuple(act.shape)} -> {tuple(perturbed.shape)}")
    if perturbed.numel() == 0:
        return
    # One fused test and one host sync per step (this runs on every evaluation step); NaN fails it too.
    if bool(((perturbed - act).abs().amax() <= eps + BOUND_TOL) & (perturbed.abs().amax() <= 1.0 + BOUND_TOL)):
        return
    if not torch.isfinite(perturbed).all():
        raise ThreatModelViolation("attack returned non-finite actions")
    dist = (perturbed - act).abs().max().item()
    if dist > eps + BOUND_TOL:
        raise ThreatModelViolation(f"attack moved the action by {dist:.6g} > eps {eps}")
    if perturbed.abs().max().item() > 1.0 + BOUND_TOL:
        raise ThreatModelViolation("attack returned an action outside [-1, 1]")


@runtime_checkable
class Attack(Protocol):
    """A bounded action perturbation: ``perturb(obs, act, eps, generator)`` -> a~, all (B, d) tensors.

    `needs_critic` is None for critic-free attacks, else the critic key (``"q"`` or ``"q_adv"``) the
    attack must be built with. Randomness comes only from `generator`, so the caller's seed fixes it.
    """

    name: str
    needs_critic: str | None

    def perturb(self, obs: Tensor, act: Tensor, eps: float, generator: torch.Generator | None = None) -> Tensor: ...


_REGISTRY: dict[str, Callable[..., Attack]] = {}
DESCRIPTIONS: dict[str, str] = {}


def register_attack(name: str, description: str) -> Callable[[Callable[..., Attack]], Callable[..., Attack]]:
    """Class decorator adding an attack factory to the registry under `name`."""

    def deco(factory: Callable[..., Attack]) -> Callable[..., Attack]:
        _REGISTRY[name] = factory
        DESCRIPTIONS[name] = description
        return factory

    return deco


def _register_builtin() -> None:
    # The built-in attacks register themselves on import; importing them here (not at the top, where
    # they would import this module back) makes the registry complete whoever asks first.
    from robustbench_rl.attacks import critic, noise  # noqa: F401


def list_attacks() -> list[str]:
    """Registered attack names, in the standard order (critic-free first)."""
    _register_builtin()
    order = ["none", "random", "biggest", "min-q", "min-oa-q"]
    return [n for n in order if n in _REGISTRY] + sorted(n for n in _REGISTRY if n not in order)


def make_attack(name: str, **kwargs) -> Attack:
    """Build a registered attack; ValueError listing the known names for an unknown one."""
    _register_builtin()
    if name not in _REGISTRY:
        raise ValueError(f"unknown attack {name!r}; known attacks: {', '.join(list_attacks())}")
    return _REGISTRY[name](**kwargs)
