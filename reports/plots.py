"""Figures from the results table: robustness curves, grouped bars and training curves.

Every plotting function takes an optional ``ax=`` and returns the Axes it drew on, so figures can
be composed freely (rliable's plot_utils style); the ``*_figure`` helpers build the standard
multi-panel figures. Numbers come from :func:`robustbench_rl.reports.stats.summarize` (the same
numbers as the tables). A group keeps its colour across every figure of a report.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from robustbench_rl.files import atomic_write_bytes
from robustbench_rl.reports.stats import NOMINAL, WORST, curve, group_column, summarize

EPS_LABEL = "attack budget ε (normalised action units)"


def _summary(data: pd.DataFrame, by: str, statistic: str, random_state: int) -> tuple[pd.DataFrame, str]:
    """Accept either the raw results table or a summarize() table."""
    if {"value", "ci_low", "ci_high"} <= set(data.columns):
        col = by if by in data.columns else group_column(data, by)
        return data, col
    col = group_column(data, by)
    return summarize(data, by=col, statistic=statistic, random_state=random_state), col


def group_colors(labels: Sequence[str]) -> dict[str, tuple]:
    """A stable colour per group label (sorted order over the tab10 / tab20 palette)."""
    labels = sorted(dict.fromkeys(labels))
    cmap = plt.get_cmap("tab10" if len(labels) <= 10 else "tab20")
    return {lab: cmap(i % cmap.N) for i, lab in enumerate(labels)}


def _y_label(statistic: str, values: str) -> str:
    what = "return (% of own nominal)" if values == "pct" else "episode return"
    return f"{what}, {statistic} ± 95% CI"


def robustness_curve(
    data: pd.DataFrame,
    attack: str,
    *,
    env_id: str | None = None,
    by: str = "group",
    statistic: str = "mean",
    random_state: int = 0,
    colors: Mapping[str, tuple] | None = None,
    ax: Axes | None = None,
) -> Axes:
    """Return vs eps under one attack: one line per group (nominal at eps 0) with its CI band.

    `data` is the results table or a summarize() table; `env_id` is needed when it holds several envs.
    """
    summary, col = _summary(data, by, statistic, random_state)
    env_id = _one_env(summary, env_id)
    ax = ax or plt.figure(figsize=(5, 3.5)).add_subplot()
    s = summary[summary["env_id"] == env_id]
    labels = list(dict.fromkeys(s.sort_values(list(dict.fromkeys(["algo", col])), kind="stable")[col]))
    colors = colors or group_colors(labels)
    for label in labels:
        c = curve(summary, env_id, label, attack, by=col)
        if c.empty:
            continue
        ax.plot(c["eps"], c["value"], marker="o", ms=3.5, lw=1.6, color=colors[label], label=str(label))
        ax.fill_between(c["eps"], c["ci_low"], c["ci_high"], color=colors[label], alpha=0.18, lw=0)
    ax.set_title(f"{attack}" if attack != WORST else "worst case over attacks")
    ax.set_xlabel(EPS_LABEL)
    ax.set_ylabel(_y_label(statistic, "return"))
    ax.grid(alpha=0.3)
    return ax


def robustness_figure(
    data: pd.DataFrame,
    env_id: str | None = None,
    *,
    attacks: Sequence[str] | None = None,
    by: str = "group",
    statistic: str = "mean",
    random_state: int = 0,
) -> Figure:
    """One panel per attack (and the worst case), shared y axis, legend outside the data on the right."""
    summary, col = _summary(data, by, statistic, random_state)
    env_id = _one_env(summary, env_id)
    s = summary[summary["env_id"] == env_id]
    attacks = list(attacks) if attacks is not None else [a for a in s["attack"].drop_duplicates() if a != NOMINAL]
    if WORST in attacks:  # always last
        attacks = [a for a in attacks if a != WORST] + [WORST]
    n = max(1, len(attacks))
    ncols = min(n, 3)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols + 1.8, 3.3 * nrows + 0.6), sharey=True,
                             squeeze=False)
    colors = group_colors(s[col])
    for i, attack in enumerate(attacks):
        ax = axes.flat[i]
        robustness_curve(summary, attack, env_id=env_id, by=col, colors=colors, statistic=statistic, ax=ax)
        if i % ncols:
            ax.set_ylabel("")
    for ax in list(axes.flat)[len(attacks):]:
        ax.set_visible(False)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), title=col, frameon=False)
    fig.suptitle(f"{env_id}: robustness to action perturbations")
    fig.tight_layout()
    return fig


def comparison_bars(
    data: pd.DataFrame,
    eps: float,
    *,
    env_id: str | None = None,
    attacks: Sequence[str] | None = None,
    by: str = "group",
    statistic: str = "mean",
    random_state: int = 0,
    colors: Mapping[str, tuple] | None = None,
    ax: Axes | None = None,
) -> Axes:
    """Paper-style grouped bars at one eps: nominal, each attack and the worst case on the x axis,
    one bar per group with its 95% CI as an error bar."""
    summary, col = _summary(data, by, statistic, random_state)
    env_id = _one_env(summary, env_id)
    s = summary[summary["env_id"] == env_id]
    at_eps = s[np.isclose(s["eps"], eps)]
    if at_eps.empty:
        grid = ", ".join(f"{e:g}" for e in sorted(s.loc[s["eps"] > 0, "eps"].unique()))
        raise ValueError(f"no results at eps {eps:g} for {env_id}; available: {grid}")
    attacks = list(attacks) if attacks is not None else [a for a in at_eps["attack"].drop_duplicates()]
    if WORST in attacks:
        attacks = [a for a in attacks if a != WORST] + [WORST]
    cats = [NOMINAL, *attacks]
    labels = list(dict.fromkeys(s.sort_values(list(dict.fromkeys(["algo", col])), kind="stable")[col]))
    colors = colors or group_colors(labels)
    ax = ax or plt.figure(figsize=(1.2 + 1.1 * len(cats) * max(1, len(labels)) / 2, 3.8)).add_subplot()
    width = 0.8 / max(1, len(labels))
    x = np.arange(len(cats))
    for j, label in enumerate(labels):
        vals, lo, hi = [], [], []
        for cat in cats:
            row = s[(s[col] == label) & (s["attack"] == cat) & (np.isclose(s["eps"], 0.0 if cat == NOMINAL else eps))]
            if row.empty:
                vals.append(np.nan)
                lo.append(np.nan)
                hi.append(np.nan)
            else:
                vals.append(row["value"].iloc[0])
                lo.append(row["ci_low"].iloc[0])
                hi.append(row["ci_high"].iloc[0])
        vals, lo, hi = map(np.asarray, (vals, lo, hi))
        err = np.vstack([vals - lo, hi - vals])
        ax.bar(x + (j - (len(labels) - 1) / 2) * width, vals, width, yerr=err, capsize=2.5, color=colors[label],
               label=str(label), error_kw={"lw": 1})
    ax.set_xticks(x, ["nominal" if c == NOMINAL else "worst case" if c == WORST else c for c in cats])
    ax.set_ylabel(_y_label(statistic, "return"))
    ax.set_title(f"{env_id} at ε = {eps:g}")
    ax.axhline(0, color="black", lw=0.6)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), title=col, frameon=False)
    return ax


# ----------------------------------------------------------------------------------------------------
# Training curves


def read_progress(run_dir: str | os.PathLike) -> tuple[pd.DataFrame, dict]:
    """A training run's progress.csv and its [run] config (algo, env, seed) from config.toml."""
    run_dir = Path(run_dir)
    path = run_dir / "progress.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} has no progress.csv; pass run directories written by `rbrl train`")
    df = pd.read_csv(path)
    if "step" not in df.columns:
        raise ValueError(f"{path} has no 'step' column; is it a progress.csv written by `rbrl train`?")
    config: dict = {}
    cfg = run_dir / "config.toml"
    if cfg.is_file():
        import tomllib

        try:
            config = dict(tomllib.loads(cfg.read_text()).get("run", {}))
        except tomllib.TOMLDecodeError:
            config = {}
    return df, config


Y_LABELS = {"eval_return": "evaluation return (deterministic)",
            "episode_return": "training episode return (with exploration)"}


def training_curves(
    run_dirs: Sequence[str | os.PathLike],
    *,
    y: str | None = None,
    labels: Sequence[str] | None = None,
    ax: Axes | None = None,
) -> Axes:
    """Return vs env steps for training runs, one line per group with a min-max band over its seeds.

    Runs are grouped by `labels` (one per run) or by the algo in their config.toml. `y` defaults to
    ``eval_return`` (deterministic evaluation) where the runs logged it, else ``episode_return``
    (training episodes, with exploration noise), labelled as such on the y axis and, when it is a
    fallback, with a note in the axes. Seeds are aligned on the steps they all logged.
    """
    runs = [read_progress(d) for d in run_dirs]
    if not runs:
        raise ValueError("no run directories given")
    if labels is not None and len(labels) != len(runs):
        raise ValueError("give one label per run directory")
    fallback = False
    if y is None:
        has_eval = all("eval_return" in df and df["eval_return"].notna().any() for df, _ in runs)
        y, fallback = ("eval_return", False) if has_eval else ("episode_return", True)
    for (df, _), d in zip(runs, run_dirs, strict=True):
        if y not in df.columns:
            raise ValueError(f"{d}/progress.csv has no column {y!r}; it has: {', '.join(df.columns)}")
    names = list(labels) if labels is not None else [
        str(cfg.get("algo") or Path(d).name) for (_, cfg), d in zip(runs, run_dirs, strict=True)]
    ax = ax or plt.figure(figsize=(5.5, 3.5)).add_subplot()
    colors = group_colors(names)
    for name in dict.fromkeys(names):
        series = [df[["step", y]].dropna().drop_duplicates("step").set_index("step")[y]
                  for (df, _), n in zip(runs, names, strict=True) if n == name]
        joined = pd.concat(series, axis=1, join="inner").sort_index()
        n_runs = len(series)
        if joined.empty:  # the seeds logged no common steps: draw them separately
            for s in series:
                ax.plot(s.index, s.to_numpy(), color=colors[name], lw=1.2, alpha=0.7)
            ax.plot([], [], color=colors[name], label=f"{name} ({n_runs} runs)")
            continue
        mean = joined.mean(axis=1)
        ax.plot(mean.index, mean.to_numpy(), color=colors[name], lw=1.6, marker="o" if len(mean) <= 30 else None, ms=3,
                label=f"{name} ({n_runs} run{'s' if n_runs > 1 else ''})")
        if n_runs > 1:
            ax.fill_between(mean.index, joined.min(axis=1), joined.max(axis=1), color=colors[name], alpha=0.18, lw=0)
    ax.set_xlabel("env steps")
    ax.set_ylabel(Y_LABELS.get(y, y.replace("_", " ")))
    ax.set_title("training curves (mean over runs, band: min-max)")
    if fallback:
        ax.text(0.01, 0.01, "no evaluation return logged (train with --eval-every N):\n"
                "training episodes, exploration noise included", transform=ax.transAxes, fontsize=7,
                va="bottom", ha="left", color="0.35")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return ax


# ----------------------------------------------------------------------------------------------------
# Files


def save_figure(fig: Figure, stem: str | os.PathLike, formats: Sequence[str] = ("png", "svg"), dpi: int = 150) -> list[Path]:
    """Write `fig` as STEM.png and STEM.svg (atomically), legends outside the axes included."""
    stem = Path(stem)
    paths = []
    for fmt in formats:
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, dpi=dpi, bbox_inches="tight")
        path = stem.parent / f"{stem.name}.{fmt}"  # not with_suffix: "eps0.3" has a dot
        atomic_write_bytes(path, buf.getvalue())
        paths.append(path)
    return paths


def figure_png_bytes(fig: Figure, dpi: int = 110) -> bytes:
    """The figure as PNG bytes (for embedding in the HTML report)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def _one_env(summary: pd.DataFrame, env_id: str | None) -> str:
    envs = list(summary["env_id"].drop_duplicates())
    if env_id is None:
        if len(envs) != 1:
            raise ValueError(f"the results hold several envs ({', '.join(envs)}); pass env_id=")
        return envs[0]
    if env_id not in envs:
        raise ValueError(f"no results for env {env_id}; the results hold: {', '.join(envs)}")
    return env_id
