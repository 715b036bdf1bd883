"""Comparison tables from the results table: markdown, LaTeX (booktabs) and CSV.

One table per env. Rows are groups of policies (by default the algorithm; training seeds pooled,
see :mod:`robustbench_rl.reports.stats`), sorted by algo. Columns are the nominal return, each
attack at each eps, the worst case over attacks at each eps, and the robustness AUC of the
worst-case curve. A cell shows the statistic (mean by default) and the half-width of its 95%
bootstrap CI; the best value of each column (highest) is marked in bold.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from robustbench_rl.reports.stats import NOMINAL, WORST, auc_table, group_column, summarize


@dataclass
class Column:
    """One table column: a label and where its numbers come from."""

    key: str
    attack: str
    eps: float | None
    title: str


@dataclass
class ComparisonTable:
    """Numbers of one env's comparison table, ready to render."""

    env_id: str
    by: str
    statistic: str
    values: str
    rows: pd.DataFrame
    """index = row label; columns algo, seeds."""
    columns: list[Column]
    value: pd.DataFrame
    """row label x column key: the statistic."""
    low: pd.DataFrame
    high: pd.DataFrame

    def best(self) -> pd.DataFrame:
        """Boolean mask of the best (highest) value per column; ties are all marked."""
        top = self.value.max(axis=0)
        return self.value.ge(top - 1e-9 * top.abs().clip(lower=1.0)) & self.value.notna()


def build_tables(
    table: pd.DataFrame,
    *,
    by: str = "group",
    statistic: str = "mean",
    values: str = "return",
    eps: Sequence[float] | None = None,
    random_state: int = 0,
    summary: pd.DataFrame | None = None,
) -> dict[str, ComparisonTable]:
    """A :class:`ComparisonTable` per env. `eps` restricts the per-eps columns (AUC always uses the
    full grid); `values` is ``"return"`` or ``"pct"`` (% of each policy's own nominal)."""
    col = group_column(table, by)
    if summary is None:
        summary = summarize(table, by=col, statistic=statistic, values=values, random_state=random_state)
    aucs = auc_table(summary, by=col)
    out = {}
    for env in summary["env_id"].drop_duplicates():
        s = summary[summary["env_id"] == env]
        attacks = [a for a in s["attack"].drop_duplicates() if a not in (NOMINAL, WORST)]
        grid = sorted(e for e in s["eps"].unique() if e > 0)
        if eps is not None:
            missing = [e for e in eps if not any(math.isclose(e, g) for g in grid)]
            if missing:
                raise ValueError(f"eps {missing[0]:g} is not in the results for {env}; "
                                 f"available: {', '.join(f'{g:g}' for g in grid)}")
            grid = [g for g in grid if any(math.isclose(e, g) for e in eps)]
        columns = [Column("nominal", NOMINAL, 0.0, "nominal")] if (s["attack"] == NOMINAL).any() else []
        for attack in [*attacks, WORST]:
            columns += [Column(f"{attack}@{e:g}", attack, e, f"{attack} ε={e:g}") for e in grid
                        if ((s["attack"] == attack) & np.isclose(s["eps"], e)).any()]
        has_worst = (s["attack"] == WORST).any()
        if has_worst:
            columns.append(Column("auc", WORST, None, "AUC (worst)"))
        labels = s[list(dict.fromkeys([col, "algo"]))].drop_duplicates(col)
        labels = labels.sort_values(list(dict.fromkeys(["algo", col])), kind="stable")
        index = labels[col].tolist()
        seeds = s.groupby(col)["n_policies"].max()
        rows = pd.DataFrame({"algo": labels["algo"].to_numpy(), "seeds": seeds.reindex(index).to_numpy()}, index=index)
        value = pd.DataFrame(np.nan, index=index, columns=[c.key for c in columns])
        low, high = value.copy(), value.copy()
        for c in columns:
            if c.key == "auc":
                a = aucs[(aucs["env_id"] == env) & (aucs["attack"] == WORST)].set_index(col)["auc"]
                value[c.key] = a.reindex(index)
                continue
            cell = s[(s["attack"] == c.attack) & np.isclose(s["eps"], c.eps)].set_index(col)
            value[c.key] = cell["value"].reindex(index)
            low[c.key] = cell["ci_low"].reindex(index)
            high[c.key] = cell["ci_high"].reindex(index)
        out[env] = ComparisonTable(env, col, statistic, values, rows, columns, value, low, high)
    return out


def _num(x: float) -> str:
    if x is None or not np.isfinite(x):
        return "–"
    a = abs(x)
    return f"{x:.0f}" if a >= 100 else f"{x:.1f}" if a >= 10 else f"{x:.2f}"


def _cell_text(t: ComparisonTable, label: str, key: str) -> tuple[str, str]:
    """(value, ± half-width) strings; the half-width is empty where no CI exists (AUC)."""
    v = t.value.at[label, key]
    lo, hi = t.low.at[label, key], t.high.at[label, key]
    half = (hi - lo) / 2.0 if np.isfinite(lo) and np.isfinite(hi) else float("nan")
    return _num(v), (_num(half) if np.isfinite(half) else "")


def _caption(t: ComparisonTable) -> str:
    unit = "% of the policy's own nominal return" if t.values == "pct" else "episode return"
    return (f"{t.env_id}: {t.statistic} {unit} ± half-width of the 95% bootstrap CI "
            f"({'seeds pooled per ' + t.by if t.by != 'policy' else 'per policy'}); "
            "ε in normalised action units; best per column in bold; AUC = average return of the "
            "worst-case curve over [0, ε_max].")


def _lead(t: ComparisonTable) -> list[str]:
    """The label columns: algo and the row label (just algo when rows are algorithms)."""
    return ["algo"] if t.by == "algo" else ["algo", t.by]


def _lead_values(t: ComparisonTable, label: str) -> list[str]:
    return [str(label)] if t.by == "algo" else [str(t.rows.at[label, "algo"]), str(label)]


def to_markdown(t: ComparisonTable) -> str:
    """A GitHub-flavoured markdown table with a caption line."""
    lead = _lead(t)
    head = [*lead, "seeds", *[c.title for c in t.columns]]
    lines = [f"**{_caption(t)}**", "", "| " + " | ".join(head) + " |",
             "|" + "|".join([":--"] * len(lead) + ["--:"] * (1 + len(t.columns))) + "|"]
    best = t.best()
    for label in t.value.index:
        cells = []
        for c in t.columns:
            v, half = _cell_text(t, label, c.key)
            text = f"{v} ± {half}" if half else v
            cells.append(f"**{text}**" if best.at[label, c.key] else text)
        row = [*_lead_values(t, label), str(t.rows.at[label, "seeds"]), *cells]
        lines.append("| " + " | ".join(r.replace("|", "\\|") for r in row) + " |")
    return "\n".join(lines) + "\n"


_TEX_ESCAPE = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
               "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def tex_escape(s: str) -> str:
    """Escape LaTeX's special characters in a label."""
    return "".join(_TEX_ESCAPE.get(ch, ch) for ch in str(s))


def to_latex(t: ComparisonTable) -> str:
    """A booktabs table (needs ``\\usepackage{booktabs}``): attacks as spanning headers over their
    eps columns, a rule between algorithms, best per column in bold."""
    spans: list[tuple[str, list[Column]]] = []
    for c in t.columns:
        name = "nominal" if c.key == "nominal" else "AUC" if c.key == "auc" else c.attack
        if spans and spans[-1][0] == name and c.key not in ("nominal", "auc"):
            spans[-1][1].append(c)
        else:
            spans.append((name, [c]))
    lead = _lead(t)
    n = len(lead) + 1 + len(t.columns)
    top, sub, rules = [""] * (len(lead) + 1), [*(tex_escape(h.capitalize()) for h in lead), "Seeds"], []
    pos = len(lead) + 2
    for name, cols in spans:
        if name in ("nominal", "AUC"):
            top.append("")
            sub.append("Nominal" if name == "nominal" else "AUC")
        else:
            top.append(rf"\multicolumn{{{len(cols)}}}{{c}}{{{tex_escape(name)}}}")
            rules.append(rf"\cmidrule(lr){{{pos}-{pos + len(cols) - 1}}}")
            sub += [f"$\\epsilon={c.eps:g}$" for c in cols]
        pos += len(cols)
    best = t.best()
    body = []
    prev_algo = None
    for label in t.value.index:
        algo = t.rows.at[label, "algo"]
        if prev_algo is not None and algo != prev_algo:
            body.append(r"\midrule")
        cells = []
        for c in t.columns:
            v, half = _cell_text(t, label, c.key)
            inner = f"{v} \\pm {half}" if half else v
            inner = inner.replace("–", "--")
            cells.append(f"$\\mathbf{{{inner}}}$" if best.at[label, c.key] else f"${inner}$")
        names = [tex_escape(algo) if algo != prev_algo else ""] if len(lead) == 2 else []
        body.append(" & ".join([*names, tex_escape(label), str(t.rows.at[label, "seeds"]), *cells]) + r" \\")
        prev_algo = algo
    caption = tex_escape(_caption(t)).replace("ε", r"$\epsilon$").replace("±", r"$\pm$")
    lines = [
        r"\begin{table}[t]", r"\centering", r"\small",
        r"\caption{" + caption + "}",
        rf"\begin{{tabular}}{{{'l' * len(lead)}{'r' * (n - len(lead))}}}", r"\toprule",
        " & ".join(top) + r" \\", *rules, " & ".join(sub) + r" \\", r"\midrule", *body,
        r"\bottomrule", r"\end{tabular}", r"\end{table}",
    ]
    return "\n".join(lines) + "\n"


def to_csv(t: ComparisonTable) -> str:
    """Machine-readable wide CSV: per column key, the value, its CI bounds and a best flag."""
    best = t.best()
    df = pd.DataFrame({"env_id": t.env_id, "algo": t.rows["algo"], t.by: t.value.index, "seeds": t.rows["seeds"]},
                      index=t.value.index)
    for c in t.columns:
        df[c.key] = t.value[c.key]
        if c.key != "auc":
            df[f"{c.key} ci_low"] = t.low[c.key]
            df[f"{c.key} ci_high"] = t.high[c.key]
        df[f"{c.key} best"] = best[c.key]
    return df.to_csv(index=False)


def to_html(t: ComparisonTable) -> str:
    """An HTML table (for the report page), best per column in bold."""
    from html import escape

    best = t.best()
    head = "".join(f"<th>{escape(h)}</th>" for h in [*_lead(t), "seeds", *[c.title for c in t.columns]])
    body = []
    for label in t.value.index:
        cells = []
        for c in t.columns:
            v, half = _cell_text(t, label, c.key)
            text = escape(f"{v} ± {half}" if half else v)
            cells.append(f"<td><b>{text}</b></td>" if best.at[label, c.key] else f"<td>{text}</td>")
        lead = "".join(f"<td>{escape(v)}</td>" for v in _lead_values(t, label))
        body.append(f"<tr>{lead}<td>{t.rows.at[label, 'seeds']}</td>{''.join(cells)}</tr>")
    return (f"<table><caption>{escape(_caption(t))}</caption><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>")
