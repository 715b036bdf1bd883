"""Reports: statistics, tables and plots, all pure functions of the tidy results table.

:func:`make_report` is what ``rbrl report`` runs: it reads a bench directory (or a results file)
and writes the tables, figures and a self-contained ``report.html``. The pieces live in
:mod:`.stats`, :mod:`.tables`, :mod:`.plots` and :mod:`.html`, each usable on its own.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

FORMATS = ("md", "tex", "csv", "html")


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", s).strip("-")


def sanity_flags(table, manifest: dict | None = None) -> list[str] | None:
    """Sanity flags for the results, as one-line strings; None when the checks are not installed.

    The checks live with the attacks (robustbench_rl.attacks.sanity): a critic-free attack beating a
    critic attack (weak gradients or a weak critic), return rising with eps, and a critic whose action
    gradient is ~0 on most states (from the gradient statistics `rbrl bench` stores in its manifest).
    """
    try:
        from robustbench_rl.attacks import sanity
    except ImportError:
        return None
    grads = {(g["policy"], g["attack"], g["critic_source"]): g for g in (manifest or {}).get("critic_gradients", [])}
    return [str(f) for f in sanity.sanity_flags(table, grads)]


def make_report(
    results: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    *,
    formats: Sequence[str] = FORMATS,
    eps: Sequence[float] | None = None,
    run_dirs: Sequence[str | os.PathLike] = (),
    by: str = "group",
    statistic: str = "mean",
    random_state: int = 0,
) -> list[Path]:
    """Write tables (md / tex / csv), figures (PNG + SVG) and report.html for a bench run.

    `results` is a bench directory (results.parquet + manifest.json) or a results .csv/.parquet
    file (e.g. from ``rbrl attack --out``); `out_dir` defaults to :func:`report_dir`. `eps` restricts
    the table columns and chooses the eps of the grouped-bar figures (default: all eps in tables, bars
    at the largest eps). `run_dirs` adds a training-curve figure from those runs' progress.csv.
    Everything that can fail on the input (an unwritable `out_dir`, an unreadable table, an eps not in
    the results) fails before the first file is written. Returns the written paths.
    """
    import matplotlib.pyplot as plt

    from robustbench_rl.bench import check_writable, read_results
    from robustbench_rl.checkpoint import atomic_write_bytes
    from robustbench_rl.reports import html as html_mod
    from robustbench_rl.reports import plots, tables
    from robustbench_rl.reports.stats import group_column, summarize

    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise ValueError(f"unknown report format {bad[0]!r}; choose from {', '.join(FORMATS)}")
    src = Path(results)
    out = check_writable(report_dir(src, out_dir), folder=True)
    table = read_results(src, partial=True)
    note = None
    if "partial" in table.attrs:
        done, total = table.attrs["partial"]
        note = f"Unfinished run: this report covers {done} of {total} cells."
        print(f"note: {src} is an unfinished run; reporting its {done} of {total} finished cells", file=sys.stderr)
    if table.empty:
        raise ValueError(f"the results in {src} are empty; nothing to report")
    manifest = None
    if src.is_dir() and (src / "manifest.json").is_file():
        try:
            manifest = json.loads((src / "manifest.json").read_text())
        except ValueError:
            raise ValueError(f"{src / 'manifest.json'} is corrupt (not JSON); move it away to report the "
                             "results without provenance") from None
    col = group_column(table, by)
    summary = summarize(table, by=col, statistic=statistic, random_state=random_state)
    pct_summary = summarize(table, by=col, statistic=statistic, values="pct", random_state=random_state)
    main = tables.build_tables(table, by=col, statistic=statistic, eps=eps, summary=summary)
    pct = tables.build_tables(table, by=col, statistic=statistic, values="pct", eps=eps, summary=pct_summary)
    training = None
    if run_dirs:  # drawn now: a run folder without a usable progress.csv must fail before any file is written
        training = plt.figure(figsize=(6.5, 3.8))
        try:
            plots.training_curves(run_dirs, ax=training.add_subplot())
        except BaseException:
            plt.close(training)
            raise
    written: list[Path] = []

    def write(path: Path, text: str) -> None:
        atomic_write_bytes(path, text.encode())
        written.append(path)

    if "csv" in formats:
        write(out / "summary.csv", summary.to_csv(index=False))
    sections = []
    flags = sanity_flags(table, manifest)
    for env, t in main.items():
        stem = out / f"table_{_slug(env)}"
        for fmt, render in (("md", tables.to_markdown), ("tex", tables.to_latex), ("csv", tables.to_csv)):
            if fmt in formats:
                write(Path(f"{stem}.{fmt}"), render(t))
                write(Path(f"{stem}_pct.{fmt}"), render(pct[env]))
        figs = []
        fig = plots.robustness_figure(summary, env, by=col, statistic=statistic)
        written += plots.save_figure(fig, out / f"robustness_{_slug(env)}")
        figs.append((f"{env}: return vs ε, one panel per attack", plots.figure_png_bytes(fig)))
        plt.close(fig)
        s = summary[summary["env_id"] == env]
        grid = sorted(e for e in s["eps"].unique() if e > 0)
        for e in (list(eps) if eps else grid[-1:]):
            fig = plt.figure(figsize=(max(6.0, 1.4 * (s["attack"].nunique())), 3.8))
            plots.comparison_bars(summary, e, env_id=env, by=col, statistic=statistic, ax=fig.add_subplot())
            written += plots.save_figure(fig, out / f"bars_{_slug(env)}_eps{e:g}")
            figs.append((f"{env}: nominal and attacked return at ε = {e:g}", plots.figure_png_bytes(fig)))
            plt.close(fig)
        sections.append(html_mod.Section(f"{env}", tables.to_html(t) + tables.to_html(pct[env]), figs))
    if training is not None:
        written += plots.save_figure(training, out / "training_curves")
        sections.append(html_mod.Section("Training", "", [("training curves", plots.figure_png_bytes(training))]))
        plt.close(training)
    if "html" in formats:
        name = (manifest or {}).get("suite", {}).get("name") or src.stem
        write(out / "report.html", html_mod.render_html(f"rbrl report: {name}", sections, flags=flags,
                                                        manifest=manifest, note=note))
    if flags:
        write(out / "sanity_flags.txt", "\n".join(flags) + "\n")
    return written


def report_dir(results: str | os.PathLike, out_dir: str | os.PathLike | None = None) -> Path:
    """Where :func:`make_report` writes: `out_dir`, else RESULTS/report for a bench directory, else a
    ``report`` folder next to a results file."""
    if out_dir is not None:
        return Path(out_dir)
    src = Path(results)
    return src / "report" if src.is_dir() else src.parent / "report"


__all__ = ["FORMATS", "make_report", "report_dir", "sanity_flags"]
