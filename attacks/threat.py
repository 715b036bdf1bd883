"""The threat model's numbers and the attacks' standard settings, importable without torch.

Threat model: policies act in the normalised box [-1, 1]^d; an attack returns a~ = clip(a + delta,
-1, 1) with ||delta||_inf <= eps (:mod:`robustbench_rl.attacks.base` enforces it on every step).
The command line builds its options from the constants here, so they live apart from the tensor code.
"""

from __future__ import annotations

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
