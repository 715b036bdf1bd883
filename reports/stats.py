"""Statistics over the tidy results table: pure functions, reproducible through `random_state`.

Conventions (rliable's, adapted to one results table):

- The unit of aggregation is a *group* of policies (by default the algorithm; the training seeds of
  one configuration). A group's score at (attack, eps) pools all episodes of all its policies; the
  suite gives every policy the same episodes, so this equals the mean of the per-policy means.
- Confidence intervals are percentile bootstrap 95% intervals with a fixed `random_state`. With
  several policies in a group the bootstrap is hierarchical: resample policies (training seeds), then
  episodes within each, so seed-to-seed variation is part of the interval, not just episode noise.
- The *worst case* at a given eps is taken per episode: every attack of a policy runs on the same
  reset seeds, so an episode's worst case is its lowest return over the attacks (AutoAttack's
  per-sample worst case), which is never above the attack with the lowest mean. It enters the table
  as a pseudo-attack ``worst-case``; ``worst_attack`` names the attack that gave each episode's
  minimum. Only episodes that every attack of that (policy, eps) ran are counted.
- Episodes are pooled as independent samples only when they are: rows of one (policy, attack, eps)
  that share a ``reset_seed`` started from the same state (tables written under the older
  ``eval_seed + episode`` scheme, where eval seeds 0 and 1 share all but one start state), so they are
  averaged into one sample before the statistics and the bootstrap.
- *Robustness AUC* is the area under the mean-return-vs-eps curve (nominal at eps 0, trapezoids)
  divided by the eps range: the average return over budgets in [0, eps_max], in return units.
- *% of nominal* divides each return by the policy's own nominal mean (meaningful for positive
  returns, e.g. MuJoCo locomotion; NaN where the nominal mean is <= 0).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

WORST = "worst-case"
NOMINAL = "none"


def iqm(x: Sequence[float] | np.ndarray, axis: int = -1) -> np.ndarray | float:
    """Interquartile mean: the mean of the values left after cutting floor(n/4) from each end.

    The same convention as ``scipy.stats.trim_mean(x, 0.25)`` (used by rliable): robust to a few
    outlier episodes, less noisy than the median.
    """
    a = np.sort(np.asarray(x, dtype=float), axis=axis)
    n = a.shape[axis]
    if n == 0:
        raise ValueError("iqm of an empty array")
    k = int(0.25 * n)
    out = np.take(a, np.arange(k, n - k), axis=axis).mean(axis=axis)
    return float(out) if np.ndim(out) == 0 else out


def _statistic(name: str | Callable) -> Callable[[np.ndarray], np.ndarray]:
    """A statistic over the last axis: 'mean', 'iqm', or a callable f(array, axis=-1)."""
    if callable(name):
        return lambda a: name(a, axis=-1)
    if name == "mean":
        return lambda a: np.mean(a, axis=-1)
    if name == "iqm":
        return lambda a: iqm(a, axis=-1)
    raise ValueError(f"unknown statistic {name!r}; use 'mean' or 'iqm'")


def bootstrap_distribution(
    values: Sequence[float] | np.ndarray,
    statistic: str | Callable = "mean",
    *,
    groups: Sequence | np.ndarray | None = None,
    n_resamples: int = 2000,
    random_state: int = 0,
) -> np.ndarray:
    """`n_resamples` bootstrap replicates of `statistic` over `values` (see :func:`bootstrap_ci`).

    Without `groups`, episodes are resampled with replacement. With `groups` (one label per value,
    e.g. the policy / training seed), the resampling is hierarchical: draw groups with replacement,
    then values within each drawn group.
    """
    x = np.asarray(values, dtype=float)
    if x.ndim != 1 or len(x) == 0:
        raise ValueError("bootstrap_ci needs a non-empty 1-D array of values")
    stat = _statistic(statistic)
    rng = np.random.default_rng(random_state)
    if groups is None:
        return stat(x[rng.integers(0, len(x), size=(n_resamples, len(x)))])
    labels = np.asarray(groups)
    if labels.shape != x.shape:
        raise ValueError("groups needs one label per value")
    members = [x[labels == g] for g in pd.unique(labels)]
    n_g = len(members)
    if len({len(m) for m in members}) == 1:  # balanced: one vectorised draw
        data = np.stack(members)  # (G, m)
        m = data.shape[1]
        gi = rng.integers(0, n_g, size=(n_resamples, n_g))
        ei = rng.integers(0, m, size=(n_resamples, n_g, m))
        return stat(data[gi[..., None], ei].reshape(n_resamples, n_g * m))
    rows = []  # unbalanced groups: resample each draw separately (rare; only small arrays)
    for _ in range(n_resamples):
        pick = rng.integers(0, n_g, size=n_g)
        rows.append(np.concatenate([members[g][rng.integers(0, len(members[g]), len(members[g]))] for g in pick]))
    return np.array([stat(r[None])[0] for r in rows])


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    statistic: str | Callable = "mean",
    *,
    groups: Sequence | np.ndarray | None = None,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    random_state: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of `statistic` over `values`.

    Without `groups`, episodes are resampled with replacement. With `groups` (one label per value,
    e.g. the policy / training seed), the resampling is hierarchical: draw groups with replacement,
    then values within each drawn group. Same inputs and `random_state` give the same interval. A
    single value gives a zero-width interval at that value.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    dist = bootstrap_distribution(values, statistic, groups=groups, n_resamples=n_resamples,
                                  random_state=random_state)
    return _percentiles(dist, confidence)


def difference_ci(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    *,
    a_groups: Sequence | np.ndarray | None = None,
    b_groups: Sequence | np.ndarray | None = None,
    statistic: str | Callable = "mean",
    relative: bool = False,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    random_state: int = 0,
) -> tuple[float, float, float]:
    """Effect of A over B: (point, ci_low, ci_high) of stat(A) - stat(B), or with `relative` of
    100 * (stat(A) - stat(B)) / |stat(B)| (a % change).

    A and B are bootstrapped independently (hierarchically over their `*_groups`, e.g. training
    seeds, as in :func:`bootstrap_ci`) and the interval is the percentile interval of the replicate
    differences, so it carries the seed-to-seed spread of both sides.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    stat = _statistic(statistic)
    pa, pb = float(stat(np.asarray(a, float)[None])[0]), float(stat(np.asarray(b, float)[None])[0])
    da = bootstrap_distribution(a, statistic, groups=a_groups, n_resamples=n_resamples, random_state=random_state)
    db = bootstrap_distribution(b, statistic, groups=b_groups, n_resamples=n_resamples,
                                random_state=random_state + 1)
    if relative:
        with np.errstate(divide="ignore", invalid="ignore"):
            point = 100.0 * (pa - pb) / abs(pb) if pb != 0 else float("nan")
            dist = 100.0 * (da - db) / np.abs(db)
        dist = dist[np.isfinite(dist)]
        if not len(dist):
            return point, float("nan"), float("nan")
    else:
        point, dist = pa - pb, da - db
    lo, hi = _percentiles(dist, confidence)
    return point, lo, hi


def _percentiles(dist: np.ndarray, confidence: float) -> tuple[float, float]:
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.percentile(dist, [100 * alpha, 100 * (1 - alpha)])
    return float(lo), float(hi)


def robustness_auc(eps: Sequence[float], values: Sequence[float]) -> float:
    """Area under a return-vs-eps curve divided by its eps range (trapezoids, eps sorted first).

    Include the nominal point (eps 0) for the usual [0, eps_max] normalisation. The result is the
    curve's average return over that range: a flat curve gives its own value back. NaN for fewer
    than two points.
    """
    e = np.asarray(eps, dtype=float)
    v = np.asarray(values, dtype=float)
    if e.shape != v.shape:
        raise ValueError("eps and values must have the same length")
    if len(e) < 2 or e.max() == e.min():
        return float("nan")
    order = np.argsort(e, kind="stable")
    e, v = e[order], v[order]
    area = float(np.sum((e[1:] - e[:-1]) * (v[1:] + v[:-1]) / 2.0))
    return area / float(e[-1] - e[0])


# ----------------------------------------------------------------------------------------------------
# Over the results table


def group_column(table: pd.DataFrame, by: str = "group") -> str:
    """The column that labels rows and lines: `by` when present, else algo (tables from `rbrl attack`)."""
    if by in table.columns:
        return by
    if by == "group":
        return "algo"
    raise ValueError(f"results table has no column {by!r}; use 'group', 'algo' or 'policy'")


def with_worst_case(table: pd.DataFrame) -> pd.DataFrame:
    """The table plus ``worst-case`` rows: per (policy, env, eps > 0) and episode, the row of the
    attack with the lowest return on that episode (ties: the first attack in table order).

    An episode is identified by (eval_seed, episode); only episodes that every attack of that
    (policy, env, eps) ran get a worst-case row, so the minimum is always over the same attacks.
    """
    attacked = table[table["attack"] != NOMINAL]
    if attacked.empty:
        return table.copy()
    cell = ["policy", "env_id", "eps"]
    episode = ["eval_seed", "episode"]
    n_attacks = attacked.groupby(cell, sort=False)["attack"].transform("nunique")
    per_episode = attacked.groupby([*cell, *episode], sort=False)["attack"].transform("nunique")
    complete = attacked[per_episode == n_attacks]
    ret = complete["return"].astype(float)
    # NaN returns never win the minimum; an episode whose returns are all NaN keeps its first row.
    order = complete.assign(_r=ret.fillna(np.inf)).reset_index(drop=True)
    pick = order.groupby([*cell, *episode], sort=False)["_r"].idxmin()
    rows = order.loc[pick.to_numpy()].drop(columns="_r")
    rows["worst_attack"] = rows["attack"]
    rows["attack"] = WORST
    return pd.concat([table, rows[[*table.columns, "worst_attack"]]], ignore_index=True)


def independent_episodes(table: pd.DataFrame) -> pd.DataFrame:
    """Rows that are independent samples: rows of one (policy, env, attack, eps) sharing a reset seed
    are averaged into one (they started from the same state). Without a ``reset_seed`` column the
    older ``eval_seed + episode`` scheme is assumed. Tables from current evaluations pass unchanged."""
    seeds = table["reset_seed"] if "reset_seed" in table.columns else table["eval_seed"] + table["episode"]
    keys = ["policy", "env_id", "attack", "eps"]
    dup = pd.concat([table[keys], seeds.rename("_seed")], axis=1).duplicated(keep=False)
    if not dup.any():
        return table
    t = table.assign(_seed=seeds)
    first = t.groupby([*keys, "_seed"], sort=False, dropna=False).first().reset_index()
    means = t.groupby([*keys, "_seed"], sort=False, dropna=False)["return"].mean().to_numpy()
    first["return"] = means
    return first.drop(columns="_seed")[table.columns]


def pct_of_nominal(table: pd.DataFrame) -> pd.Series:
    """Each row's return as % of its policy's own nominal mean return (NaN where that is <= 0 or absent)."""
    nominal = table[table["attack"] == NOMINAL].groupby(["policy", "env_id"])["return"].mean()
    base = pd.Series(list(zip(table["policy"], table["env_id"], strict=True)), index=table.index).map(nominal)
    base = base.where(base > 0)
    return 100.0 * table["return"] / base


def summarize(
    table: pd.DataFrame,
    *,
    by: str = "group",
    statistic: str = "mean",
    values: str = "return",
    n_resamples: int = 2000,
    confidence: float = 0.95,
    random_state: int = 0,
    worst_case: bool = True,
) -> pd.DataFrame:
    """One row per (env, group, attack, eps): mean, std, IQM, bootstrap CI of `statistic`, % of nominal.

    `values` is ``"return"`` or ``"pct"`` (each return as % of its policy's nominal mean first). The
    nominal row has attack ``none`` and eps 0; ``worst-case`` rows are added when `worst_case`.
    Columns: env_id, algo, <by>, attack, eps, n_policies, n_episodes, mean, std, iqm, value (the
    chosen statistic), ci_low, ci_high, pct_nominal, worst_attack. ``n_episodes`` counts independent
    episodes (see :func:`independent_episodes`).
    """
    col = group_column(table, by)
    t = with_worst_case(table) if worst_case else table.copy()
    t = independent_episodes(t)
    if "worst_attack" not in t.columns:
        t["worst_attack"] = None
    pct = pct_of_nominal(t)
    if values == "pct":
        t = t.assign(**{"return": pct})
    elif values != "return":
        raise ValueError(f"values must be 'return' or 'pct', got {values!r}")
    t = t.assign(_pct=pct)
    stat = _statistic(statistic)
    rows = []
    for (env, label, attack, eps), grp in t.groupby(["env_id", col, "attack", "eps"], sort=False):
        v = grp["return"].to_numpy(dtype=float)
        finite = np.isfinite(v)
        v, members = v[finite], grp["policy"].to_numpy()[finite]
        algos = sorted(set(grp["algo"]))
        if len(v):
            point = float(stat(v[None])[0])
            lo, hi = bootstrap_ci(v, statistic, groups=members if len(set(members)) > 1 else None,
                                  n_resamples=n_resamples, confidence=confidence, random_state=random_state)
        else:
            point = lo = hi = float("nan")
        worst = grp["worst_attack"].dropna().unique()
        rows.append({
            "env_id": env, "algo": algos[0] if len(algos) == 1 else "mixed", col: label, "attack": attack,
            "eps": float(eps), "n_policies": grp["policy"].nunique(), "n_episodes": len(grp),
            "mean": float(np.mean(v)) if len(v) else float("nan"),
            "std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0,
            "iqm": float(iqm(v)) if len(v) else float("nan"),
            "value": point, "ci_low": lo, "ci_high": hi,
            "pct_nominal": float(grp["_pct"].mean()),
            "worst_attack": ",".join(sorted(worst)) if len(worst) else None,
        })
    cols = ["env_id", "algo", col, "attack", "eps", "n_policies", "n_episodes", "mean", "std", "iqm", "value",
            "ci_low", "ci_high", "pct_nominal", "worst_attack"]
    return pd.DataFrame(rows, columns=list(dict.fromkeys(cols)))  # by="algo": one algo column


def curve(summary: pd.DataFrame, env_id: str, label: str, attack: str, *, by: str = "group") -> pd.DataFrame:
    """The return-vs-eps curve of one group under one attack: the nominal point at eps 0, then the
    attack's eps in increasing order (columns eps, value, ci_low, ci_high)."""
    s = summary[(summary["env_id"] == env_id) & (summary[by] == label)]
    nominal = s[s["attack"] == NOMINAL]
    points = s[(s["attack"] == attack) & (s["eps"] > 0)].sort_values("eps")
    return pd.concat([nominal, points])[["eps", "value", "ci_low", "ci_high"]].reset_index(drop=True)


def auc_table(summary: pd.DataFrame, *, by: str = "group") -> pd.DataFrame:
    """Robustness AUC per (env, group, attack) from a :func:`summarize` table, with AUC as % of nominal."""
    rows = []
    keys = summary[["env_id", by]].drop_duplicates().itertuples(index=False)
    for env, label in keys:
        s = summary[(summary["env_id"] == env) & (summary[by] == label)]
        nominal = s.loc[s["attack"] == NOMINAL, "value"]
        nom = float(nominal.iloc[0]) if len(nominal) else float("nan")
        for attack in [a for a in s["attack"].unique() if a != NOMINAL]:
            c = curve(summary, env, label, attack, by=by)
            auc = robustness_auc(c["eps"], c["value"])
            rows.append({"env_id": env, by: label, "attack": attack, "auc": auc, "eps_max": float(c["eps"].max()),
                         "auc_pct_nominal": 100.0 * auc / nom if nom > 0 else float("nan")})
    return pd.DataFrame(rows, columns=["env_id", by, "attack", "auc", "eps_max", "auc_pct_nominal"])
