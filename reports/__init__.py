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


def sanity_flags(table, manifest: dict | None = None) -> list[str]:
    """Sanity flags for the results, as one-line strings.

    The checks live with the attacks (robustbench_rl.attacks.sanity): a critic-free attack beating a
    critic attack (weak gradients or a weak critic), return rising with eps, and a critic whose action
    gradient is ~0 on most states (from the gradient statistics `rbrl bench` stores in its manifest).
    """
    from robustbench_rl.attacks import sanity

    grads = {(g["policy"], g["attack"], g["critic_source"]): g for g in (manifest or {}).get("critic_gradients", [])}
    return [str(f) for f in sanity.sanity_flags(table, grads)]


KEY_COLUMNS = ["policy", "env_id", "attack", "critic_source", "eps", "eval_seed", "episode"]
"""What identifies one episode's row; two inputs that share a key describe the same episode."""


def pool_results(sources: Sequence[str | os.PathLike]):
    """One results table from several bench directories or results files, with their manifests.

    Rows that two inputs share exactly (e.g. the nominal episodes that two ``rbrl attack`` runs of one
    policy both evaluated) are kept once; a key with two different returns is an error naming both
    inputs, because pooling them would count one episode twice. Returns (table, [(source, manifest
    or None)], note or None), where the note says which inputs are unfinished bench runs.
    """
    import pandas as pd

    from robustbench_rl.results import read_results

    frames, manifests, partial = [], [], []
    for src in map(Path, sources):
        table = read_results(src, partial=True)
        if "partial" in table.attrs:
            done, total = table.attrs["partial"]
            partial.append(f"{done} of {total} cells" + (f" of {src}" if len(sources) > 1 else ""))
            print(f"note: {src} is an unfinished run; reporting its {done} of {total} finished cells",
                  file=sys.stderr)
        manifest = None
        if src.is_dir() and (src / "manifest.json").is_file():
            try:
                manifest = json.loads((src / "manifest.json").read_text())
            except ValueError:
                raise ValueError(f"{src / 'manifest.json'} is corrupt (not JSON); move it away to report the "
                                 "results without provenance") from None
        frames.append(table.assign(_source=str(src)))
        manifests.append((str(src), manifest))
    pooled = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    if "group" in pooled.columns:  # a bench run's groups; rows from `rbrl attack` files group by algorithm
        pooled["group"] = pooled["group"].fillna(pooled["algo"])
    if len(frames) > 1:
        pooled = pooled.drop_duplicates(subset=[*KEY_COLUMNS, "return", "length"], keep="first")
        clash = pooled.duplicated(subset=KEY_COLUMNS, keep=False)
        if clash.any():
            rows = pooled[clash]
            first = rows.iloc[0]
            same = rows[(rows[KEY_COLUMNS] == first[KEY_COLUMNS]).all(axis=1)]["_source"].unique()
            raise ValueError(
                f"policy {first['policy']!r} ({first['attack']}, eps {first['eps']:g}, episode {first['episode']}) "
                f"has different returns in {' and '.join(same[:2])}: these are two different policies with one "
                "name, or runs under different settings; report them separately or rename a run folder")
    pooled = pooled.drop(columns="_source").reset_index(drop=True)
    note = f"Unfinished run: this report covers {'; '.join(partial)}." if partial else None
    return pooled, manifests, note


def make_report(
    results: str | os.PathLike | Sequence[str | os.PathLike],
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

    `results` is a bench directory (results.parquet + manifest.json), a results .csv/.parquet file
    (e.g. from ``rbrl attack --out``), or a list of them, pooled by :func:`pool_results` (so that
    two policies attacked separately share one table and one figure); `out_dir` defaults to
    :func:`report_dir`. `eps` restricts
    the table columns and chooses the eps of the grouped-bar figures (default: all eps in tables, bars
    at the largest eps). `run_dirs` adds a training-curve figure from those runs' progress.csv.
    Everything that can fail on the input (an unwritable `out_dir`, an unreadable table, an eps not in
    the results) fails before the first file is written. Returns the written paths.
    """
    import matplotlib.pyplot as plt

    from robustbench_rl.files import atomic_write_bytes, check_writable
    from robustbench_rl.reports import html as html_mod
    from robustbench_rl.reports import plots, tables
    from robustbench_rl.reports.stats import group_column, summarize

    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise ValueError(f"unknown report format {bad[0]!r}; choose from {', '.join(FORMATS)}")
    sources = [Path(results)] if isinstance(results, (str, os.PathLike)) else [Path(r) for r in results]
    if not sources:
        raise ValueError("give at least one bench directory or results file to report")
    out = check_writable(report_dir(sources, out_dir), folder=True)
    table, manifests, note = pool_results(sources)
    if table.empty:
        raise ValueError(f"the results in {', '.join(map(str, sources))} are empty; nothing to report")
    gradients = [g for _, m in manifests for g in (m or {}).get("critic_gradients", [])]
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
    flags = sanity_flags(table, {"critic_gradients": gradients})
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
        name = " + ".join((m or {}).get("suite", {}).get("name") or Path(src).stem for src, m in manifests)
        write(out / "report.html", html_mod.render_html(f"rbrl report: {name}", sections, flags=flags,
                                                        manifests=manifests, note=note))
    if flags:
        write(out / "sanity_flags.txt", "\n".join(flags) + "\n")
    return written


def report_dir(results: str | os.PathLike | Sequence[str | os.PathLike],
               out_dir: str | os.PathLike | None = None) -> Path:
    """Where :func:`make_report` writes: `out_dir`; else DIR/report for one bench directory; else a
    folder named after the input(s) next to the first one: ``td3-report`` for ``td3.csv``,
    ``td3+oa-td3-report`` for ``td3.csv oa-td3.csv`` (so reports of different inputs in one folder
    never overwrite each other)."""
    if out_dir is not None:
        return Path(out_dir)
    sources = [Path(results)] if isinstance(results, (str, os.PathLike)) else [Path(r) for r in results]
    first = sources[0]
    if len(sources) == 1 and first.is_dir():
        return first / "report"
    names = [_slug(s.name if s.is_dir() else s.stem) or "results" for s in sources]
    if len(names) > 3:
        names = [*names[:3], f"{len(names) - 3}-more"]
    return (first if first.is_dir() and len(sources) == 1 else first.parent) / ("+".join(names) + "-report")


__all__ = ["FORMATS", "KEY_COLUMNS", "make_report", "pool_results", "report_dir", "sanity_flags"]
