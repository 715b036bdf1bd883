"""Text summaries the command line prints: a checkpoint's metadata and a policy's attack table."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd


def format_metadata(meta: dict) -> str:
    """Human-readable multi-line summary of checkpoint metadata."""
    lines = [
        f"algo:        {meta.get('algo')}",
        f"env:         {meta.get('env_id')}  (obs {meta.get('obs_dim')}, act {meta.get('act_dim')})",
    ]
    if "action_low" in meta:
        lines.append(f"env bounds:  low {meta['action_low']}  high {meta['action_high']}")
    lines += [
        f"seed:        {meta.get('seed')}",
        f"steps:       {meta.get('steps')}",
        f"created:     {meta.get('created')}",
        f"format:      v{meta.get('format_version')}",
        "networks:",
    ]
    for name, spec in meta.get("networks", {}).items():
        rest = ", ".join(f"{k}={v}" for k, v in spec.items() if k != "type")
        lines.append(f"  {name:<11}{spec.get('type')} ({rest})")
    if meta.get("obs_norm"):
        lines.append("obs norm:    yes (running mean/var stored in the checkpoint)")
    if meta.get("config"):
        lines.append("config:")
        lines += [f"  {k} = {v}" for k, v in sorted(meta["config"].items())]
    if meta.get("versions"):
        lines.append("versions:    " + ", ".join(f"{k} {v}" for k, v in sorted(meta["versions"].items())))
    return "\n".join(lines)


def format_summary(table: pd.DataFrame) -> str:
    """Mean +- std return per (attack, critic source, eps), with its change from the nominal mean and
    that mean as % of the nominal one ("n/a" where the nominal mean is <= 0, as in the reports: a
    ratio of negative returns reads upside down). With two or more attacks, a ``worst-case`` row per
    eps takes each episode's lowest return over the attacks (every attack ran the same episodes)."""
    import pandas as pd

    from robustbench_rl.reports.stats import WORST, with_worst_case

    nominal = table.loc[table["attack"] == "none", "return"].mean()
    if "critic_source" not in table.columns:
        table = table.assign(critic_source="none")
    if table.loc[table["attack"] != "none", "attack"].nunique() > 1 and {"eval_seed", "episode"} <= set(table):
        worst = with_worst_case(table)
        worst = worst[worst["attack"] == WORST].assign(critic_source="none")
        table = pd.concat([table, worst[table.columns]], ignore_index=True)
    # enough decimals to tell rows apart whether returns are ~0.3 (Ledge) or ~3000 (Hopper)
    scale = float(table["return"].abs().max()) if len(table) else 1.0
    dec = int(min(4, max(1, 2 - math.floor(math.log10(scale))))) if scale > 0 else 1
    rows = []
    for (att, src, eps), grp in table.groupby(["attack", "critic_source", "eps"], sort=False):
        mean, std = grp["return"].mean(), grp["return"].std(ddof=0)
        change = f"{mean - nominal:+.{dec}f}" if pd.notna(nominal) else "n/a"
        pct = f"{100.0 * mean / nominal:.0f}%" if pd.notna(nominal) and nominal > 0 else "n/a"
        rows.append((att, "-" if src == "none" else src, eps, f"{mean:.{dec}f} ± {std:.{dec}f}", change, pct,
                     len(grp)))
    header = (f"{'attack':<10} {'critic':<7} {'eps':>6} {'return (mean ± std)':>22} {'change':>10} "
              f"{'% nominal':>10} {'episodes':>9}")
    body = [f"{a:<10} {c:<7} {e:>6g} {r:>22} {d:>10} {p:>10} {n:>9}" for a, c, e, r, d, p, n in rows]
    first = table.iloc[0]
    title = f"{first['policy']} ({first['algo']}) on {first['env_id']}"
    return "\n".join([title, header, "-" * len(header), *body])
