"""Sanity flags for attack results (after AutoAttack's checks): signs that an attack, not a policy, is weak.

Three checks on the tidy results table (one row per episode, see robustbench_rl.results):

1. ``critic_free_beats_critic``: at the same policy and eps, a critic-free attack (random, biggest)
   lowers the mean return more than min-q or min-oa-q does. A gradient attack on a good critic
   should be at least as strong as a random corner; when it is not, its critic or its gradient is
   weak, and the critic attack's number overstates the policy's robustness.
2. ``zero_critic_gradient``: the critic's action gradient is ~0 on most states (from
   :func:`robustbench_rl.attacks.critic.critic_gradient_stats`): PGD's sign steps are then blind.
3. ``return_rises_with_eps``: an attack's mean return is higher at a larger eps (the nominal return
   counts as eps 0). A stronger adversary should never help; when it does, the attack is failing to
   find the worst case (or the policy genuinely benefits from noise: worth a look either way).

A difference counts only when it exceeds the noise: ``max(2 * standard error of the difference,
rel_tol * |nominal mean|)`` (rel_tol default 1%), so that ten noisy episodes do not raise flags.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

CRITIC_FREE = ("random", "biggest")
CRITIC_BASED = ("min-q", "min-oa-q")
ZERO_GRAD_SHARE = 0.5


@dataclass(frozen=True)
class SanityFlag:
    """One warning: which check fired, where, and a one-line human explanation."""

    check: str
    policy: str
    attack: str
    eps: float | None
    message: str

    def __str__(self) -> str:
        return f"[{self.check}] {self.message}"


def _stats(returns: pd.Series) -> tuple[float, float, int]:
    r = returns.to_numpy(dtype=float)
    n = len(r)
    se = float(np.std(r, ddof=1) / np.sqrt(n)) if n > 1 else 0.0
    return float(np.mean(r)), se, n


def _label(attack: str, source: str | None) -> str:
    return f"{attack} ({source} critic)" if source and source != "none" else attack


def _significant(x: float, digits: int) -> str:
    """`x` to `digits` significant digits, in plain notation where returns usually are (1000, not 1e+03)."""
    if math.isfinite(x) and 1e-3 <= abs(x) < 1e7:
        return f"{x:.{max(0, digits - 1 - math.floor(math.log10(abs(x))))}f}"
    return f"{x:.{digits}g}"


def _distinct(a: float, b: float) -> tuple[str, str]:
    """`a` and `b` with as few significant digits (at least 3) as show that they differ."""
    for digits in range(3, 12):
        fa, fb = _significant(a, digits), _significant(b, digits)
        if fa != fb:
            return fa, fb
    return fa, fb


def sanity_flags(
    table: pd.DataFrame,
    grad_stats: Mapping[tuple[str, str, str], Mapping[str, float]] | None = None,
    *,
    rel_tol: float = 0.01,
    zero_share: float = ZERO_GRAD_SHARE,
) -> list[SanityFlag]:
    """Run the three checks on a tidy results table; returns the flags (empty list: nothing suspicious).

    `table` needs the columns policy, attack, eps and return (critic_source optional). `grad_stats`
    maps (policy, attack, critic_source) to the dict of
    :func:`robustbench_rl.attacks.critic.critic_gradient_stats`; a critic whose ``frac_zero``
    exceeds `zero_share` is flagged. Differences must exceed the noise (see the module docs).
    """
    flags: list[SanityFlag] = []
    if "critic_source" not in table.columns:
        table = table.assign(critic_source="none")
    unit = ["policy", "env_id"] if "env_id" in table.columns else ["policy"]  # one policy on two envs: two curves
    for keys, ptab in table.groupby(unit, sort=False):
        policy = keys[0]
        nominal = ptab.loc[ptab["attack"] == "none", "return"]
        nom = _stats(nominal) if len(nominal) else None
        floor = rel_tol * abs(nom[0]) if nom else 0.0

        def exceeds(a: tuple[float, float, int], b: tuple[float, float, int], floor: float = floor) -> bool:
            """True when mean a is below mean b by more than the noise."""
            return b[0] - a[0] > max(2.0 * float(np.hypot(a[1], b[1])), floor)

        cells = {
            (att, src, float(eps)): _stats(g["return"])
            for (att, src, eps), g in ptab.groupby(["attack", "critic_source", "eps"], sort=False)
        }
        # 1. a critic-free attack stronger than a critic attack at the same eps
        for (att, src, eps), crit in cells.items():
            if att not in CRITIC_BASED:
                continue
            for free in CRITIC_FREE:
                other = cells.get((free, "none", eps))
                if other is not None and exceeds(other, crit):
                    m_free, m_crit = _distinct(other[0], crit[0])
                    flags.append(SanityFlag(
                        "critic_free_beats_critic", str(policy), att, eps,
                        f"{policy}: {free} (mean {m_free}) beats {_label(att, src)} (mean {m_crit}) "
                        f"at eps {eps:g}: weak critic or weak gradients; try --critic fitted or more --pgd-steps",
                    ))
        # 3. mean return rising with eps (the nominal return is the eps-0 point of every attack)
        for (att, src), _ in ptab.groupby(["attack", "critic_source"], sort=False):
            if att == "none":
                continue
            curve = sorted((eps, s) for (a, c, eps), s in cells.items() if a == att and c == src)
            if nom is not None and (not curve or curve[0][0] > 0):
                curve = [(0.0, nom), *curve]
            for (e0, s0), (e1, s1) in itertools.pairwise(curve):
                if exceeds(s0, s1):
                    m0, m1 = _distinct(s0[0], s1[0])
                    flags.append(SanityFlag(
                        "return_rises_with_eps", str(policy), att, e1,
                        f"{policy}: under {_label(att, src)} the mean return rises from {m0} at eps {e0:g} "
                        f"to {m1} at eps {e1:g}: the attack misses the worst case (or noise helps this policy)",
                    ))
    # 2. zero critic gradients
    for (policy, att, src), st in (grad_stats or {}).items():
        share = float(st.get("frac_zero", 0.0))
        if share > zero_share:
            flags.append(SanityFlag(
                "zero_critic_gradient", str(policy), att, None,
                f"{policy}: the {src} critic behind {att} has a ~zero action gradient on {100 * share:.0f}% of "
                f"{int(st.get('states', 0))} states: PGD cannot move there (saturated or dead critic)",
            ))
    return flags


def format_flags(flags: list[SanityFlag]) -> str:
    """The flags as printed under a results table ("sanity flags: none" when there are none)."""
    if not flags:
        return "sanity flags: none"
    return "\n".join([f"sanity flags ({len(flags)}):", *(f"  ! {f}" for f in flags)])


__all__ = ["SanityFlag", "format_flags", "sanity_flags"]
