"""Claims about groups of policies, decided by effect sizes with confidence intervals.

A claim compares a *treatment* group (e.g. OA-TD3's training seeds) with a *control* group (TD3's)
on one env, in one or more *cells* (attack, eps). Each cell gets the effect stat(treatment) -
stat(control) with a 95% interval from :func:`~robustbench_rl.reports.stats.difference_ci`
(hierarchical bootstrap: training seeds, then episodes), and the claim a verdict from the signs of
those intervals, by rules fixed before looking at any number:

- ``better``: treatment beats control in every cell (every interval above 0): **supported**;
- ``kept``: the treatment's nominal return is within `tolerance` % of the control's (the interval of
  the % change lies above -tolerance): **supported**; entirely below -tolerance: **not supported**;
- otherwise **mixed** where some cells are significant in the claimed direction and others are not,
  and **not supported** where none is.

Episodes of different policies of a group are exchangeable only within a policy, so every interval
treats the training seed as the unit that varies; with 3 seeds the intervals are wide, and a claim
that needs more seeds to be decided reads "mixed", never "supported".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from robustbench_rl.reports.stats import NOMINAL, WORST, difference_ci, independent_episodes, with_worst_case

SUPPORTED, NOT_SUPPORTED, MIXED, NOT_MEASURED = "supported", "not supported", "mixed", "not measured"


@dataclass
class Effect:
    """One cell of a comparison: the effect of treatment over control and its 95% interval."""

    attack: str
    eps: float
    point: float
    low: float
    high: float
    relative: bool = False
    n_treatment: int = 0
    n_control: int = 0

    @property
    def sign(self) -> int:
        """+1 when the interval lies above 0, -1 below, 0 when it contains 0."""
        return 1 if self.low > 0 else -1 if self.high < 0 else 0

    def text(self, digits: int = 0) -> str:
        unit = "%" if self.relative else ""
        return f"{self.point:+.{digits}f}{unit} [{self.low:+.{digits}f}, {self.high:+.{digits}f}]"


@dataclass
class Claim:
    """A claim, its verdict and the effects it rests on."""

    key: str
    text: str
    env_id: str
    verdict: str
    effects: list[Effect] = field(default_factory=list)
    criterion: str = ""
    note: str = ""


def episodes_of(table: pd.DataFrame, group: str, attack: str, eps: float, *, by: str = "group") -> pd.DataFrame:
    """Independent episodes of one group in one cell (worst-case rows built per episode when asked)."""
    t = table[table[by] == group]
    if attack == WORST:
        t = with_worst_case(t)
    t = independent_episodes(t)
    sel = (t["attack"] == attack) & np.isclose(t["eps"].to_numpy(dtype=float), eps)
    return t[sel]


def effect(table: pd.DataFrame, treatment: str, control: str, attack: str, eps: float, *, by: str = "group",
           relative: bool = False, random_state: int = 0) -> Effect | None:
    """The effect of `treatment` over `control` in one cell, or None when either has no episodes."""
    a = episodes_of(table, treatment, attack, eps, by=by)
    b = episodes_of(table, control, attack, eps, by=by)
    if a.empty or b.empty:
        return None
    point, lo, hi = difference_ci(a["return"].to_numpy(float), b["return"].to_numpy(float),
                                  a_groups=a["policy"].to_numpy(), b_groups=b["policy"].to_numpy(),
                                  relative=relative, random_state=random_state)
    return Effect(attack, float(eps), point, lo, hi, relative, len(a), len(b))


def robustness_claim(key: str, text: str, table: pd.DataFrame, env_id: str, treatment: str, control: str,
                     attacks: Sequence[str], eps_list: Sequence[float], *, by: str = "group") -> Claim:
    """"`treatment` is more robust than `control`": its return is higher under every attack in
    `attacks` at every eps in `eps_list` (see the module's rules)."""
    t = table[table["env_id"] == env_id]
    effects = [e for a in attacks for x in eps_list if (e := effect(t, treatment, control, a, x, by=by))]
    criterion = (f"{treatment} - {control} return, 95% CI above 0 under {', '.join(attacks)} at eps "
                 f"{', '.join(f'{x:g}' for x in eps_list)}")
    if not effects:
        return Claim(key, text, env_id, NOT_MEASURED, criterion=criterion)
    signs = [e.sign for e in effects]
    verdict = SUPPORTED if all(s > 0 for s in signs) and len(effects) == len(attacks) * len(eps_list) else (
        NOT_SUPPORTED if not any(s > 0 for s in signs) else MIXED)
    return Claim(key, text, env_id, verdict, effects, criterion)


def nominal_claim(key: str, text: str, table: pd.DataFrame, env_id: str, treatment: str, control: str, *,
                  tolerance: float = 5.0, by: str = "group") -> Claim:
    """"`treatment` keeps `control`'s nominal return": the % change of the nominal mean is within
    `tolerance` % (its 95% interval lies above -tolerance)."""
    t = table[table["env_id"] == env_id]
    e = effect(t, treatment, control, NOMINAL, 0.0, by=by, relative=True)
    criterion = f"% change of {treatment}'s nominal return vs {control}'s, 95% CI above -{tolerance:g}%"
    if e is None:
        return Claim(key, text, env_id, NOT_MEASURED, criterion=criterion)
    verdict = SUPPORTED if e.low >= -tolerance else NOT_SUPPORTED if e.high < -tolerance else MIXED
    return Claim(key, text, env_id, verdict, [e], criterion)


def matters_claim(key: str, text: str, table: pd.DataFrame, env_id: str, treatment: str, control: str,
                  attacks: Sequence[str], eps_list: Sequence[float], *, by: str = "group") -> Claim:
    """"`treatment` (e.g. with a component) does better than `control` (without it)": significantly
    better in at least one of the nominal return and the attacked cells, and significantly worse in
    none (supported); better somewhere and worse elsewhere (mixed); never better (not supported)."""
    t = table[table["env_id"] == env_id]
    cells = [(NOMINAL, 0.0)] + [(a, x) for a in attacks for x in eps_list]
    effects = [e for a, x in cells if (e := effect(t, treatment, control, a, x, by=by))]
    criterion = (f"{treatment} - {control} return: some 95% CI above 0 and none below, over the nominal "
                 f"return and {', '.join(attacks)} at eps {', '.join(f'{x:g}' for x in eps_list)}")
    if not effects:
        return Claim(key, text, env_id, NOT_MEASURED, criterion=criterion)
    signs = [e.sign for e in effects]
    verdict = (SUPPORTED if any(s > 0 for s in signs) and not any(s < 0 for s in signs) else
               MIXED if any(s > 0 for s in signs) else NOT_SUPPORTED)
    return Claim(key, text, env_id, verdict, effects, criterion)


__all__ = ["MIXED", "NOT_MEASURED", "NOT_SUPPORTED", "SUPPORTED", "Claim", "Effect", "effect", "episodes_of",
           "matters_claim", "nominal_claim", "robustness_claim"]
