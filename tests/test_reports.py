"""Tables and plots from a small synthetic results table: the files exist and show the table's numbers.

The tests draw with matplotlib's Agg backend (conftest.py), as `rbrl report` does.
"""

from __future__ import annotations

import io

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from robustbench_rl.reports import make_report, plots, tables
from robustbench_rl.reports.stats import WORST, summarize
from robustbench_rl.results import BENCH_COLUMNS, write_table

EPS = [0.1, 0.2]
ATTACKS = ["random", "biggest"]


def synthetic_table(episodes: int = 6) -> pd.DataFrame:
    """Two groups x two seeds; the robust group degrades slower; biggest hurts more than random."""
    rng = np.random.default_rng(0)
    rows = []
    for group, algo, base, slope in (("TD3", "td3", 1000.0, 3000.0), ("OA-TD3", "oa-td3", 950.0, 1000.0)):
        for seed in (0, 1):
            policy = f"{algo}-s{seed}"
            cells = [("none", 0.0)] + [(a, e) for a in ATTACKS for e in EPS]
            for attack, eps in cells:
                mult = 1.0 if attack == "random" else 1.5
                mean = base + 20 * seed - mult * slope * eps
                for i in range(episodes):
                    rows.append({"policy": policy, "algo": algo, "env_id": "Hopper-v5", "train_seed": seed,
                                 "attack": attack, "critic_source": "none", "eps": eps, "eval_seed": 0, "episode": i,
                                 "reset_seed": i,
                                 "return": float(mean + rng.normal(0, 15)), "length": 1000, "group": group})
    t = pd.DataFrame(rows)[BENCH_COLUMNS]
    return t.astype({"train_seed": "Int64"})


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return synthetic_table()


def group_mean(t: pd.DataFrame, group: str, attack: str, eps: float) -> float:
    sel = (t["group"] == group) & (t["attack"] == attack) & np.isclose(t["eps"], eps)
    return float(t.loc[sel, "return"].mean())


def test_table_values_best_and_formats(table):
    built = tables.build_tables(table)
    assert list(built) == ["Hopper-v5"]
    t = built["Hopper-v5"]
    assert list(t.value.index) == ["OA-TD3", "TD3"]  # sorted by algo
    assert t.rows.loc["TD3", "seeds"] == 2
    keys = [c.key for c in t.columns]
    assert keys == ["nominal", "random@0.1", "random@0.2", "biggest@0.1", "biggest@0.2", "worst-case@0.1",
                    "worst-case@0.2", "auc"]
    for group in ("TD3", "OA-TD3"):
        assert t.value.at[group, "nominal"] == pytest.approx(group_mean(table, group, "none", 0.0))
        assert t.value.at[group, "random@0.2"] == pytest.approx(group_mean(table, group, "random", 0.2))
        # biggest is the worst case here for both seeds
        assert t.value.at[group, "worst-case@0.2"] == pytest.approx(group_mean(table, group, "biggest", 0.2))
    best = t.best()
    assert best.at["TD3", "nominal"] and not best.at["OA-TD3", "nominal"]
    assert best.at["OA-TD3", "biggest@0.2"] and best.at["OA-TD3", "auc"]
    assert best.sum().tolist() == [1] * len(keys)

    md = tables.to_markdown(t)
    nominal_td3 = md.splitlines()[5]
    assert nominal_td3.startswith("| td3 | TD3 | 2 | **") and "biggest ε=0.2" in md
    tex = tables.to_latex(t)
    for piece in (r"\toprule", r"\midrule", r"\bottomrule", r"\cmidrule(lr){5-6}", r"\multicolumn{2}{c}{random}",
                  r"oa-td3", r"$\mathbf{"):
        assert piece in tex
    assert tex.count(r"\\") == 2 + 2  # two header rows + two body rows
    csv = pd.read_csv(io.StringIO(tables.to_csv(t)))
    assert csv.set_index("group").loc["TD3", "random@0.1"] == pytest.approx(group_mean(table, "TD3", "random", 0.1))
    assert csv.set_index("group").loc["OA-TD3", "auc best"]


def test_latex_escapes_labels(table):
    t = table.assign(group=table["group"].str.replace("OA-TD3", "OA_TD3 & 50%"))
    tex = tables.to_latex(tables.build_tables(t)["Hopper-v5"])
    assert r"OA\_TD3 \& 50\%" in tex


def test_pct_table_and_eps_filter(table):
    t = tables.build_tables(table, values="pct", eps=[0.2])["Hopper-v5"]
    assert [c.key for c in t.columns] == ["nominal", "random@0.2", "biggest@0.2", "worst-case@0.2", "auc"]
    assert t.value.at["TD3", "nominal"] == pytest.approx(100.0)
    with pytest.raises(ValueError, match=r"eps 0\.15 is not in the results"):
        tables.build_tables(table, eps=[0.15])


def test_robustness_curve_lines_equal_table(table):
    fig, ax = plt.subplots()
    out = plots.robustness_curve(table, "biggest", ax=ax)
    assert out is ax
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {"TD3", "OA-TD3"}
    for group, line in lines.items():
        np.testing.assert_allclose(line.get_xdata(), [0.0, 0.1, 0.2])
        expected = [group_mean(table, group, "none", 0.0)] + [group_mean(table, group, "biggest", e) for e in EPS]
        np.testing.assert_allclose(line.get_ydata(), expected)
    assert len(ax.collections) == 2  # one CI band per group
    band = ax.collections[0].get_paths()[0].vertices[:, 1]
    assert band.min() < min(lines["OA-TD3"].get_ydata()) and band.max() > max(lines["OA-TD3"].get_ydata())
    assert "ε" in ax.get_xlabel() and "return" in ax.get_ylabel()
    plt.close(fig)


def test_robustness_figure_has_a_panel_per_attack(table):
    fig = plots.robustness_figure(table)
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert titles == ["random", "biggest", "worst case over attacks"]
    assert fig.legends and [t.get_text() for t in fig.legends[0].get_texts()] == ["OA-TD3", "TD3"]
    plt.close(fig)


def test_bars_equal_table(table):
    fig, ax = plt.subplots()
    plots.comparison_bars(table, 0.2, ax=ax)
    heights = [p.get_height() for p in ax.patches]
    expected = [group_mean(table, g, a, 0.0 if a == "none" else 0.2)
                for g in ("OA-TD3", "TD3") for a in ("none", *ATTACKS)]
    summary = summarize(table)
    worst = {g: summary[(summary["group"] == g) & (summary["attack"] == WORST) & (summary["eps"] == 0.2)]["value"].iloc[0]
             for g in ("OA-TD3", "TD3")}
    expected = [*expected[:3], worst["OA-TD3"], *expected[3:], worst["TD3"]]
    np.testing.assert_allclose(heights, expected)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["nominal", "random", "biggest", "worst case"]
    with pytest.raises(ValueError, match=r"no results at eps 0\.5"):
        plots.comparison_bars(table, 0.5, ax=ax)
    plt.close(fig)


def write_run(path, algo: str, steps, returns):
    path.mkdir(parents=True)
    pd.DataFrame({"step": steps, "episodes": 1, "episode_return": np.asarray(returns) - 5,
                  "eval_return": returns}).to_csv(path / "progress.csv", index=False)
    (path / "config.toml").write_text(f'[run]\nalgo = "{algo}"\nseed = 0\n')
    return path


def test_training_curves(tmp_path):
    runs = [write_run(tmp_path / "a0", "td3", [1000, 2000, 3000], [10, 20, 30]),
            write_run(tmp_path / "a1", "td3", [1000, 2000, 3000], [20, 40, 60]),
            write_run(tmp_path / "b0", "oa-td3", [1000, 2000], [5, 6])]
    _, ax = plt.subplots()
    plots.training_curves(runs, ax=ax)
    lines = {line.get_label(): line for line in ax.get_lines()}
    np.testing.assert_allclose(lines["td3 (2 runs)"].get_ydata(), [15, 30, 45])
    np.testing.assert_allclose(lines["td3 (2 runs)"].get_xdata(), [1000, 2000, 3000])
    np.testing.assert_allclose(lines["oa-td3 (1 run)"].get_ydata(), [5, 6])
    ax2 = plots.training_curves(runs[:1], y="episode_return", labels=["mine"])
    np.testing.assert_allclose(ax2.get_lines()[0].get_ydata(), [5, 15, 25])
    with pytest.raises(FileNotFoundError, match=r"no progress\.csv"):
        plots.training_curves([tmp_path])
    plt.close("all")


def test_make_report_from_a_results_file(tmp_path, table):
    src = write_table(table, tmp_path / "results.parquet")
    runs = [write_run(tmp_path / "r0", "td3", [1000, 2000], [1, 2])]
    paths = make_report(src, tmp_path / "rep", run_dirs=runs)
    names = {p.name for p in paths}
    for n in ("report.html", "summary.csv", "table_Hopper-v5.md", "table_Hopper-v5.tex", "table_Hopper-v5.csv",
              "table_Hopper-v5_pct.md", "robustness_Hopper-v5.png", "robustness_Hopper-v5.svg",
              "bars_Hopper-v5_eps0.2.png", "bars_Hopper-v5_eps0.2.svg", "training_curves.png"):
        assert n in names and (tmp_path / "rep" / n).stat().st_size > 0, n
    assert (tmp_path / "rep" / "robustness_Hopper-v5.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "rep" / "robustness_Hopper-v5.svg").read_text().lstrip().startswith("<?xml")
    html = (tmp_path / "rep" / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3 and "http://" not in html.replace("http://www.w3.org", "")
    assert "Sanity flags" in html and "<table>" in html
    only_md = make_report(src, tmp_path / "md", formats=["md"])
    assert {"table_Hopper-v5.md", "table_Hopper-v5_pct.md"} <= {p.name for p in only_md}
    assert not any(p.suffix in (".tex", ".html") for p in only_md)
    assert not list((tmp_path / "md").glob("*.tex")) and not list((tmp_path / "md").glob("*.html"))
    with pytest.raises(FileNotFoundError, match=r"no results\.parquet"):
        make_report(tmp_path / "rep")


def test_several_inputs_pool_into_one_report_named_after_them(tmp_path, table):
    td3 = table[table["algo"] == "td3"].drop(columns="group")
    oa = table[table["algo"] == "oa-td3"].drop(columns="group")
    nominal_again = td3[td3["attack"] == "none"]  # a second `rbrl attack` run re-evaluated the nominal episodes
    a = write_table(td3, tmp_path / "td3.csv")
    b = write_table(pd.concat([oa, nominal_again]), tmp_path / "oa-td3.csv")
    paths = make_report([a, b], formats=["csv", "html"])
    out = tmp_path / "td3+oa-td3-report"
    assert paths and all(p.parent == out for p in paths)
    summary = pd.read_csv(out / "summary.csv")
    assert set(summary["algo"]) == {"td3", "oa-td3"}
    nominal = summary[(summary["algo"] == "td3") & (summary["attack"] == "none")]
    assert nominal["n_episodes"].iloc[0] == 12 and nominal["value"].iloc[0] == pytest.approx(
        td3[td3["attack"] == "none"].groupby("policy")["return"].mean().mean())  # each episode once
    html = (out / "report.html").read_text()
    assert "td3 + oa-td3" in html and html.count('class="meta"') == 0  # results files have no manifest
    # a single file's default report is named after it, so two files in one folder keep two reports
    make_report(a, formats=["csv"])
    make_report(b, formats=["csv"])
    assert (tmp_path / "td3-report" / "summary.csv").is_file() and (tmp_path / "oa-td3-report" / "summary.csv").is_file()


def test_pooling_a_bench_run_with_an_attack_file_groups_the_file_by_algo(tmp_path, table):
    bench = tmp_path / "bench"
    bench.mkdir()
    write_table(table[table["algo"] == "td3"], bench / "results.parquet")
    extra = table[table["algo"] == "oa-td3"].drop(columns="group")
    make_report([bench, write_table(extra, tmp_path / "oa.csv")], tmp_path / "rep", formats=["csv"])
    groups = set(pd.read_csv(tmp_path / "rep" / "summary.csv")["group"])
    assert groups == {"TD3", "oa-td3"}


def test_rows_by_algo_and_by_policy(table):
    by_algo = tables.build_tables(table, by="algo")["Hopper-v5"]
    assert tables.to_markdown(by_algo).splitlines()[2].startswith("| algo | seeds | nominal |")
    assert r"\begin{tabular}{lr" in tables.to_latex(by_algo)
    by_policy = tables.build_tables(table, by="policy")["Hopper-v5"]
    assert list(by_policy.value.index) == ["oa-td3-s0", "oa-td3-s1", "td3-s0", "td3-s1"]
    sel = (table["policy"] == "td3-s1") & (table["attack"] == "random") & (table["eps"] == 0.1)
    assert by_policy.value.at["td3-s1", "random@0.1"] == pytest.approx(table.loc[sel, "return"].mean())
    assert (by_policy.rows["seeds"] == 1).all()


def test_non_finite_returns_are_refused_naming_the_file(tmp_path, table):
    bad = table.copy()
    bad.loc[3, "return"] = float("nan")
    src = write_table(bad, tmp_path / "results.csv")
    with pytest.raises(ValueError, match=r"results\.csv has 1 row\(s\) with a missing or non-finite return"):
        make_report(src, tmp_path / "rep")
    assert not (tmp_path / "rep").exists()


def test_an_eps_absent_from_the_results_writes_nothing(tmp_path, table):
    src = write_table(table, tmp_path / "results.parquet")
    with pytest.raises(ValueError, match=r"eps 0\.7 is not in the results"):
        make_report(src, tmp_path / "rep", eps=[0.7])
    assert not (tmp_path / "rep").exists()
    (tmp_path / "afile").write_text("")
    with pytest.raises(ValueError, match="afile is a file, not a folder"):
        make_report(src, tmp_path / "afile" / "rep")


def test_training_curves_say_which_return_they_show(tmp_path):
    with_eval = write_run(tmp_path / "a", "td3", [1000, 2000], [10, 20])
    ax = plots.training_curves([with_eval])
    assert ax.get_ylabel() == "evaluation return (deterministic)" and not ax.texts
    no_eval = write_run(tmp_path / "b", "td3", [1000, 2000], [10, 20])
    df = pd.read_csv(no_eval / "progress.csv").assign(eval_return=np.nan)
    df.to_csv(no_eval / "progress.csv", index=False)
    ax = plots.training_curves([no_eval])
    assert ax.get_ylabel() == "training episode return (with exploration)"
    assert any("no evaluation return logged" in t.get_text() for t in ax.texts)
    plt.close("all")


def test_importing_the_plots_leaves_the_callers_matplotlib_backend_alone():
    import subprocess
    import sys

    code = ("import matplotlib; matplotlib.use('svg'); import robustbench_rl.reports.plots; "
            "print(matplotlib.get_backend())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "svg"
