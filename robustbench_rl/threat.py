"""The threat model, in one place, and the attacks' standard settings.

Policies act in the normalised box [-1, 1]^d. An attack sees the observation s and the policy's
action a and returns a~ = clip(a + delta, -1, 1) with ||delta||_inf <= eps, eps in normalised units
(eps = 0.1 moves each actuator by at most 5% of its full range). :func:`apply_delta` is the only way
an attack turns a perturbation into an executed action, and :func:`check_bound` is what the rollout
asserts on every step. This module does not import torch (it works on tensors' own methods), so the
command line can build its options from the constants here without loading it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch
    from torch import Tensor

BOUND_TOL = 1e-6
MAX_EPS = 2.0  # the whole box: any larger eps is the same threat, so a larger one is most likely a typo

CRITIC_SOURCES = ("auto", "own", "fitted")
"""Which critic min-q / min-oa-q attack with: the policy's own where it has one (auto), its own
(white-box), or one fitted for the policy (the fair choice when comparing algorithms)."""

PGD_STARTS = ("random", "fgsm", "screen")
"""Where PGD starts (see :func:`robustbench_rl.attacks.pgd.pgd_minimize`)."""

DEFAULT_PGD_STEPS = 5
"""Sign-gradient steps per PGD start of min-q / min-oa-q (see DEFAULT_PGD_RESTARTS)."""

DEFAULT_PGD_START = "fgsm"
"""Where the first PGD start is: the FGSM corner (see :func:`robustbench_rl.attacks.pgd.pgd_minimize`)."""

DEFAULT_PGD_RESTARTS = 2
"""PGD starts per state: the FGSM corner and one random point, 5 steps each. On trained Hopper critics
this finds larger Q drops than the textbook 20 steps from one random start in every critic and budget
measured, at about 55% of its cost: a second start beats more steps (BENCHMARKS.md, "PGD strength per
gradient evaluation")."""


STANDARD_VERSION = 1
STANDARD = {"attacks": ("random", "biggest", "min-q", "min-oa-q"), "critic": "fitted",
            "pgd_steps": DEFAULT_PGD_STEPS, "pgd_restarts": DEFAULT_PGD_RESTARTS, "pgd_start": DEFAULT_PGD_START}
"""The standard attack set (version STANDARD_VERSION): the attacks and settings behind a headline
robustness number, the per-episode worst case over these attacks. Critic attacks use critics fitted
to each policy at the default fit budget, so that every policy is attacked the same way, whatever its
algorithm. These values never change within a version; a new set gets a new version number."""


def standard_label() -> str:
    """One line naming the standard attack set and its settings, for tables and reports."""
    s = STANDARD
    return (f"standard attack set v{STANDARD_VERSION}: {', '.join(s['attacks'])}; critic attacks on fitted "
            f"critics, PGD {s['pgd_steps']} steps x {s['pgd_restarts']} starts ({s['pgd_start']})")


class ThreatModelViolation(AssertionError):
    """An attack returned an action outside the eps box or outside [-1, 1]: a bug, never a result."""


def check_eps(eps: float) -> float:
    """Validate an attack budget; ValueError saying what is allowed."""
    try:
        eps = float(eps)
    except (TypeError, ValueError):
        raise ValueError(f"eps must be a number in [0, {MAX_EPS}], got {eps!r}") from None
    if not (0.0 <= eps <= MAX_EPS):  # also false for NaN
        raise ValueError(f"eps must be in [0, {MAX_EPS}] (normalised action units), got {eps}")
    return eps


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
    if not perturbed.isfinite().all():
        raise ThreatModelViolation("attack returned non-finite actions")
    dist = (perturbed - act).abs().max().item()
    if dist > eps + BOUND_TOL:
        raise ThreatModelViolation(f"attack moved the action by {dist:.6g} > eps {eps}")
    if perturbed.abs().max().item() > 1.0 + BOUND_TOL:
        raise ThreatModelViolation("attack returned an action outside [-1, 1]")


class NominalAttack:
    """No perturbation: the policy's own action (the attack ``none``; :func:`robustbench_rl.rollout.evaluate`
    runs it for ``attack=None``)."""

    name = "none"
    needs_critic = None

    def perturb(self, obs: Tensor, act: Tensor, eps: float, generator: torch.Generator | None = None) -> Tensor:
        return act.clone()


@runtime_checkable
class Attack(Protocol):
    """A bounded action perturbation: ``perturb(obs, act, eps, generator)`` -> a~, all (B, d) tensors.

    `needs_critic` is None for critic-free attacks, else the critic key (``"q"`` or ``"q_adv"``) the
    attack must be built with. Randomness comes only from `generator`, so the caller's seed fixes it.

    Optional, for attacks that plan on the simulator (``lookahead``): an attack with a class attribute
    ``needs_env = True`` also has ``attach(envs)``, a list of live gymnasium envs as :func:`make_env
    <robustbench_rl.envs.make_env>` built them. :func:`robustbench_rl.rollout.evaluate` calls it once
    with all its envs before the first reset (the attack raises EnvError there for an env it cannot
    work on, e.g. one without :func:`~robustbench_rl.envs.get_sim_state` support), then before every
    ``perturb`` with the envs of the batch's rows, in row order, each in the state that produced its
    row's observation. The attack may read those envs' state but must leave them as it found them.
    """

    name: str
    needs_critic: str | None

    def perturb(self, obs: Tensor, act: Tensor, eps: float, generator: torch.Generator | None = None) -> Tensor: ...
