"""Critic-free attacks: none, random and biggest."""

from __future__ import annotations

import torch
from torch import Tensor

from robustbench_rl.attacks.base import apply_delta, register_attack
from robustbench_rl.threat import NominalAttack

register_attack("none", "no perturbation (nominal)")(NominalAttack)


@register_attack("random", "delta ~ U([-eps, eps]^d), i.i.d. each step")
class RandomAttack:
    name = "random"
    needs_critic = None

    def perturb(self, obs: Tensor, act: Tensor, eps: float, generator: torch.Generator | None = None) -> Tensor:
        if eps == 0:
            return act.clone()
        u = torch.rand(act.shape, generator=generator, device=act.device, dtype=act.dtype)
        return apply_delta(act, (2.0 * u - 1.0) * eps, eps)


@register_attack("biggest", "corner delta_i = -eps * sign(a_i) (ties +eps): largest displacement after clipping")
class BiggestAttack:
    """Deterministic, critic-free: push every actuator towards the far side of the box.

    Moving a_i towards the inside (-sign(a_i)) is never shortened by the [-1, 1] clip, so this corner
    displaces the executed action most; a_i = 0 is a tie and gets +eps.
    """

    name = "biggest"
    needs_critic = None

    def perturb(self, obs: Tensor, act: Tensor, eps: float, generator: torch.Generator | None = None) -> Tensor:
        if eps == 0:
            return act.clone()
        direction = torch.where(act > 0, -torch.ones_like(act), torch.ones_like(act))
        return apply_delta(act, direction * eps, eps)
