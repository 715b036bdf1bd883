"""Critic attacks: Min-Q and Min-OA-Q, and the critic sources they are built from.

Both attacks solve, for every row of the batch at once,

    a~ = argmin_{a~ : ||a~ - a||_inf <= eps, a~ in [-1, 1]^d}  Q(s, a~)

by projected sign-gradient descent (:func:`robustbench_rl.attacks.pgd.pgd_minimize`, the one PGD
engine), where Q is the minimum over the twin heads of a critic: the nominal critic Q for ``min-q``, the
OA-aware critic Q_adv (the value of acting under the worst-case perturbation from then on) for
``min-oa-q``. The feasible set is exactly the threat model's set of executed actions clip(a + delta),
so the returned action needs no further clipping.

Where the critic comes from is the *critic source*: ``own`` (the checkpoint's critic, white-box) or
``fitted`` (a critic fitted by :mod:`robustbench_rl.attacks.fit` for that fixed policy with a fixed
budget: the fair default for comparing policies, and the only way to attack PPO or external policies).
:func:`make_policy_attack` builds any registered attack for a policy and says which source it used.
"""

from __future__ import annotations

import torch
from torch import Tensor

from robustbench_rl.attacks.base import register_attack
from robustbench_rl.attacks.pgd import PGD_STARTS, SCREEN_SAMPLES, pgd_minimize
from robustbench_rl.policy import Critic
from robustbench_rl.threat import (
    DEFAULT_PGD_RESTARTS,
    DEFAULT_PGD_START,
    DEFAULT_PGD_STEPS,
)

CRITIC_ATTACKS = {"min-q": "q", "min-oa-q": "q_adv"}
"""Attack name -> the critic key it needs (the keys of ``Policy.critics``)."""

CRITIC_KIND = {"q": "q", "q_adv": "oa-q"}
"""Critic key -> the ``kind`` that :mod:`robustbench_rl.attacks.fit` fits for it."""


class CriticAttack:
    """PGD on a critic inside the threat model's box: the shared body of Min-Q and Min-OA-Q.

    `critic` maps raw observations (B, obs_dim) and normalised actions (B, d) to values (B,); twin
    critics already return the minimum over their heads. `steps` sign-gradient steps per start,
    `restarts` starts per row (the best row-wise wins), `step_size` (default 2.5 * eps / steps) and
    `start` ("fgsm": the first start is the FGSM corner, the others random; "random": all uniform in
    the box; "screen": the best of a batched screen of the box, `screen` uniform samples among them)
    are PGD's options; the defaults are DEFAULT_PGD_STEPS / _RESTARTS / _START. All
    randomness (the random starts) comes from the generator passed to :meth:`perturb`.
    """

    name = "critic"
    needs_critic: str | None = None

    def __init__(self, critic: Critic | None = None, steps: int = DEFAULT_PGD_STEPS,
                 restarts: int = DEFAULT_PGD_RESTARTS,
                 step_size: float | None = None, start: str = DEFAULT_PGD_START,
                 screen: int = SCREEN_SAMPLES) -> None:
        if critic is None or not callable(critic):
            raise ValueError(f"attack {self.name} needs a critic (a callable (obs, act) -> values), got {critic!r}; "
                             "build it with make_policy_attack(policy, name) or make_attack(name, critic=...)")
        if int(steps) != steps or steps < 1:
            raise ValueError(f"{self.name}: PGD steps must be an integer >= 1, got {steps}")
        if int(restarts) != restarts or restarts < 1:
            raise ValueError(f"{self.name}: PGD restarts must be an integer >= 1, got {restarts}")
        if step_size is not None and not step_size > 0:
            raise ValueError(f"{self.name}: PGD step size must be > 0 (or None for 2.5 * eps / steps), got {step_size}")
        if start not in PGD_STARTS:
            raise ValueError(f"{self.name}: PGD start must be one of {', '.join(PGD_STARTS)}, got {start!r}")
        if int(screen) != screen or screen < 0:
            raise ValueError(f"{self.name}: screened samples must be an integer >= 0, got {screen}")
        self.screen = int(screen)
        self.critic = critic
        self.start = start
        self.steps = int(steps)
        self.restarts = int(restarts)
        self.step_size = None if step_size is None else float(step_size)

    def perturb(self, obs: Tensor, act: Tensor, eps: float, generator: torch.Generator | None = None) -> Tensor:
        """The executed actions clip(a + delta*) with delta* the PGD argmin of the critic, row by row."""
        if eps == 0 or act.numel() == 0:
            return act.clone()
        obs = obs.to(act.device, torch.float32)
        objective = self.critic.objective(obs) if hasattr(self.critic, "objective") else (lambda x: self.critic(obs, x))
        return pgd_minimize(objective, act, eps, self.steps, step_size=self.step_size,
                            restarts=self.restarts, generator=generator, start=self.start, screen=self.screen)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(steps={self.steps}, restarts={self.restarts}, step_size={self.step_size}, "
                f"start={self.start!r})")


@register_attack("min-q", "PGD argmin of the nominal critic Q (min over twin heads) in the eps box")
class MinQAttack(CriticAttack):
    name = "min-q"
    needs_critic = "q"


@register_attack("min-oa-q", "PGD argmin of the OA-aware critic Q_adv (min over twin heads) in the eps box")
class MinOAQAttack(CriticAttack):
    name = "min-oa-q"
    needs_critic = "q_adv"


def critic_gradient_stats(critic: Critic, obs: Tensor, act: Tensor, rel_tol: float = 1e-6) -> dict[str, float]:
    """How informative a critic's action gradient is on a batch of states: the zero-gradient check.

    Computes g = grad_a Q(s, a) at the given actions (typically the policy's own) and returns
    ``frac_zero`` (share of rows whose ||g||_inf <= rel_tol * max(1, |Q|): PGD's sign steps are then
    blind, as with dead ReLUs or a saturated critic), ``median_grad`` (median ||g||_inf) and
    ``states`` (the batch size). A critic flat on most states makes Min-Q no better than a random
    corner, which :func:`robustbench_rl.attacks.sanity.sanity_flags` reports.
    """
    obs = obs.detach().to(act.device, torch.float32)  # states collected on the CPU, critic maybe on a GPU
    x = act.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        q = critic(obs, x)
        (grad,) = torch.autograd.grad(q.sum(), x)
    norm = grad.abs().amax(dim=-1)
    zero = norm <= rel_tol * q.detach().abs().clamp(min=1.0)
    return {"frac_zero": float(zero.float().mean()), "median_grad": float(norm.median()), "states": len(norm)}


__all__ = [
    "CRITIC_ATTACKS",
    "CRITIC_KIND",
    "DEFAULT_PGD_RESTARTS",
    "DEFAULT_PGD_START",
    "DEFAULT_PGD_STEPS",
    "CriticAttack",
    "MinOAQAttack",
    "MinQAttack",
    "critic_gradient_stats",
]
