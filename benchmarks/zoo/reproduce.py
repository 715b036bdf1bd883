"""Write REPRODUCTION.md: the paper's comparison (robust vs baseline policies) on the bundled zoo.

    rbrl bench full --out runs/bench-full                # TD3, OA-TD3, PPO, OA-PPO x 3 seeds per env
    rbrl bench ablations --out runs/bench-ablations      # OA-TD3 without surgery, at eps_train 0.05 / 0.2
    python benchmarks/zoo/reproduce.py runs/bench-full runs/bench-ablations

Every number comes from those bench runs (pooled; the ablation suite shares the full suite's
attacks, budgets and episodes) and from the zoo's manifest (training cost). Claims are decided by
the fixed rules of :mod:`robustbench_rl.reports.claims`; nothing here is tuned to a result. Figures
go to docs/reproduction/ and are linked from the document. A claim whose policies are not in the
results yet reads "not measured".
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # figures go to files
import gymnasium as gym
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from robustbench_rl import zoo
from robustbench_rl.files import atomic_write_bytes
from robustbench_rl.reports import plots, pool_results, tables
from robustbench_rl.reports.claims import (
    MIXED,
    NOT_MEASURED,
    NOT_SUPPORTED,
    SUPPORTED,
    Claim,
    matters_claim,
    nominal_claim,
    robustness_claim,
)
from robustbench_rl.reports.stats import NOMINAL, WORST, summarize

ROOT = Path(__file__).resolve().parents[2]
MAIN_GROUPS = ["TD3", "OA-TD3", "PPO", "OA-PPO"]
NO_SURGERY = "OA-TD3 no surgery"
EPS_TRAIN_GROUPS = {0.05: "OA-TD3 eps_train 0.05", 0.1: "OA-TD3", 0.2: "OA-TD3 eps_train 0.2"}
ENVS = ["InvertedPendulum-v5", "Hopper-v5", "Walker2d-v5"]
ABLATION_ENV = "InvertedPendulum-v5"
SCHEDULE_ENV = "Hopper-v5"
PAPER_SCHEDULE = "OA-TD3 paper schedule"
NOMINAL_TOLERANCE = 5.0
ROBUST_OF = {"a": "OA-TD3", "c": "OA-PPO"}
"""The main robustness claims' keys and the OA group each is about."""
MARK = {SUPPORTED: "**supported**", NOT_SUPPORTED: "**not supported**", MIXED: "mixed", NOT_MEASURED: "not measured"}


def eps_train_of(table: pd.DataFrame, group: str) -> float | None:
    """The eps_train the zoo manifest records for the policies of `group` (None when they differ)."""
    policies = zoo.read_manifest()["policies"]
    names = {p.removeprefix("zoo:") for p in table.loc[table["group"] == group, "policy"].unique()}
    values = {policies[n]["hyperparameters"].get("eps_train") for n in names if n in policies}
    return values.pop() if len(values) == 1 else None


def decide(table: pd.DataFrame) -> list[Claim]:
    """Every claim of the reproduction, per env where its groups were measured."""
    claims: list[Claim] = []
    grid = sorted(e for e in table["eps"].unique() if e > 0)
    for env in ENVS:
        t = table[table["env_id"] == env]
        for key, robust, base in (("a", ROBUST_OF["a"], "TD3"), ("c", ROBUST_OF["c"], "PPO")):
            eps_train = eps_train_of(t, robust) or 0.1
            at_or_above = [e for e in grid if e >= eps_train - 1e-9]
            claims.append(robustness_claim(
                key, f"{robust} beats {base} under min-oa-q and the worst case at eps >= eps_train ({eps_train:g})",
                t, env, robust, base, ["min-oa-q", WORST], at_or_above))
            claims.append(nominal_claim(
                "b" if key == "a" else "c", f"{robust} keeps {base}'s nominal return (within {NOMINAL_TOLERANCE:g}%)",
                t, env, robust, base, tolerance=NOMINAL_TOLERANCE))
    t = table[table["env_id"] == ABLATION_ENV]
    at_or_above = [e for e in grid if e >= 0.1 - 1e-9]
    claims.append(matters_claim("d", "gradient surgery matters: OA-TD3 (omega 0.5) with surgery beats it without",
                                t, ABLATION_ENV, "OA-TD3", NO_SURGERY, ["min-oa-q", WORST], at_or_above))
    claims.append(robustness_claim(
        "e", "robustness grows with eps_train: OA-TD3 at eps_train 0.2 beats it at 0.05 in the worst case",
        t, ABLATION_ENV, EPS_TRAIN_GROUPS[0.2], EPS_TRAIN_GROUPS[0.05], [WORST], at_or_above))
    return claims


def claims_table(claims: list[Claim]) -> list[str]:
    lines = ["| claim | env | verdict | effect, 95% CI (treatment - control) | decided by |", "|---|---|---|---|---|"]
    for c in claims:
        if c.verdict == NOT_MEASURED:
            effects = "policies not in the results yet"
        else:
            effects = "; ".join(f"{'nominal' if e.attack == NOMINAL else e.attack}"
                                f"{'' if e.attack == NOMINAL else f' @{e.eps:g}'}: {e.text(1 if e.relative else 0)}"
                                for e in c.effects)
        lines.append(f"| ({c.key}) {c.text} | {c.env_id} | {MARK[c.verdict]} | {effects} | {c.criterion} |")
    return lines


def training_costs() -> pd.DataFrame:
    """(f): one row per main zoo policy with its training wall time per env step, from the manifest."""
    rows = []
    for e in zoo.read_manifest()["policies"].values():
        if not Path(e["config"]).stem.endswith(e["algo"]):
            continue  # ablations (invpend-oa-td3-nosurgery, hopper-oa-td3-paper, ...): not the main configurations
        rows.append({"env": e["env_id"], "algo": e["algo"], "seed": e["seed"], "steps": e["training"]["steps"],
                     "wall_s": e["training"]["wall_s"], "ms_per_step": 1000 * e["training"]["wall_s"] / e["training"]["steps"],
                     "oa_batch_size": e["hyperparameters"].get("oa_batch_size"),
                     "machine": e["training"].get("machine", "")})
    return pd.DataFrame(rows, columns=["env", "algo", "seed", "steps", "wall_s", "ms_per_step", "oa_batch_size", "machine"])


def cost_ratio(costs: pd.DataFrame, env: str, algo: str) -> float | None:
    """Wall time per env step of an OA algorithm over its baseline's on `env`, each at its fastest seed
    (None if either is missing). Other work on the machine only ever adds time to a run, so the fastest
    seed is the least disturbed measurement of what the algorithm itself costs."""
    base = {"oa-td3": "td3", "oa-ppo": "ppo"}[algo]
    per = costs[costs["env"] == env].groupby("algo")["ms_per_step"].min()
    return float(per[algo] / per[base]) if algo in per.index and base in per.index else None


def cheap_schedule(costs: pd.DataFrame, env: str) -> str:
    """"oa_batch_size N" when the zoo's OA-TD3 on `env` was trained on a cheaper OA schedule than the
    paper's, else ""."""
    sizes = sorted(set(costs.loc[(costs["env"] == env) & (costs["algo"] == "oa-td3"), "oa_batch_size"].dropna()) - {0})
    return f"oa_batch_size {', '.join(str(int(n)) for n in sizes)}" if sizes else ""


def algo_label(costs: pd.DataFrame, env: str, algo: str, name: str) -> str:
    """`name` for `algo` on `env`, with its cheaper OA schedule in brackets where it had one."""
    cheap = cheap_schedule(costs, env) if algo == "oa-td3" else ""
    return f"{name} ({cheap})" if cheap else name


def cost_table(costs: pd.DataFrame) -> list[str]:
    """(f) as a markdown table: per env and algorithm, ms per env step and the OA / baseline ratio."""
    lines = ["| env | algo | seeds | ms per env step, fastest seed (mean, slowest) | OA / baseline (fastest seeds) | machine |",
             "|---|---|---:|---:|---:|---|"]
    for env in ENVS:
        d = costs[costs["env"] == env]
        for algo in ["td3", "oa-td3", "ppo", "oa-ppo"]:
            v = d.loc[d["algo"] == algo, "ms_per_step"]
            if v.empty:
                continue
            ratio = cost_ratio(costs, env, algo) if algo.startswith("oa-") else None
            machines = ", ".join(sorted(set(d.loc[d["algo"] == algo, "machine"])))
            lines.append(f"| {env} | {algo_label(costs, env, algo, algo)} | {len(v)} | {v.min():.2f} ({v.mean():.2f}, {v.max():.2f}) | "
                         f"{'' if ratio is None else f'{ratio:.1f}x'} | {machines} |")
    return lines


def summary_row(summary: pd.DataFrame, group: str, attack: str, eps: float) -> pd.Series | None:
    """The summary's row of `group` under `attack` at `eps` (eps 0 for the nominal return), or None."""
    r = summary[(summary["group"] == group) & (summary["attack"] == attack) & np.isclose(summary["eps"], eps)]
    return None if r.empty else r.iloc[0]


def group_table(summary: pd.DataFrame, env: str, first: str, rows: list[tuple[str, str]]) -> list[str]:
    """Nominal and worst-case return (mean [95% CI]) per eps of the groups `rows` ((label, group) pairs) on
    `env`, one row each; a group not in the results reads "not measured"."""
    s = summary[summary["env_id"] == env]
    grid = sorted(e for e in s["eps"].unique() if e > 0)
    lines = [f"| {first} | seeds | nominal | " + " | ".join(f"worst case @{e:g}" for e in grid) + " |",
             "|" + "---|" * (3 + len(grid))]
    for label, group in rows:
        g = s[s["group"] == group]
        if g.empty:
            lines.append(f"| {label} | 0 | not measured |" + " |" * len(grid))
            continue

        def cell(attack: str, eps: float, group: str = group) -> str:
            r = summary_row(s, group, attack, eps)
            return "" if r is None else f"{r['value']:.0f} [{r['ci_low']:.0f}, {r['ci_high']:.0f}]"

        lines.append(f"| {label} | {g['n_policies'].max()} | {cell(NOMINAL, 0.0)} | "
                     + " | ".join(cell(WORST, e) for e in grid) + " |")
    return lines


def schedule_verdict(summary: pd.DataFrame, env: str, cheap: str, eps_train: float) -> str | None:
    """One sentence comparing OA-TD3 on the paper's schedule with the zoo's cheaper setting on `env`:
    nominal and worst-case return at eps_train, mean of each, and how many seeds back the paper's."""
    s = summary[summary["env_id"] == env]

    def mean(group: str, attack: str, eps: float) -> float | None:
        r = summary_row(s, group, attack, eps)
        return None if r is None else float(r["value"])

    paper = [mean(PAPER_SCHEDULE, NOMINAL, 0.0), mean(PAPER_SCHEDULE, WORST, eps_train)]
    cheaper = [mean("OA-TD3", NOMINAL, 0.0), mean("OA-TD3", WORST, eps_train)]
    if None in paper or None in cheaper:
        return None
    seeds = int(s.loc[s["group"] == PAPER_SCHEDULE, "n_policies"].max())
    better = all(p > c for p, c in zip(paper, cheaper, strict=True))
    return (f"On these seeds the paper's schedule does {'better' if better else 'not do better'}: nominal "
            f"{paper[0]:.0f} and worst case at eps_train ({eps_train:g}) {paper[1]:.0f}, against {cheaper[0]:.0f} "
            f"and {cheaper[1]:.0f} with {cheap}"
            + (f" ({seeds} seed{'s' if seeds > 1 else ''} of the paper's schedule: preliminary)." if seeds < 3 else "."))


def held(summary: pd.DataFrame, env: str, group: str, eps_min: float) -> tuple[int, int]:
    """(cells, of all attacked cells at eps >= eps_min) where `group` kept >= 95% of its nominal mean
    return: how much room the budgets left for robust training to show a difference."""
    s = summary[(summary["env_id"] == env) & (summary["group"] == group)]
    nominal = s.loc[s["attack"] == NOMINAL, "value"]
    cells = s[(s["attack"] != NOMINAL) & (s["eps"] >= eps_min - 1e-9)]
    if nominal.empty or cells.empty:
        return 0, 0
    return int((cells["value"] >= 0.95 * float(nominal.iloc[0])).sum()), len(cells)


def nominal_lengths(table: pd.DataFrame, env: str) -> pd.Series:
    """Mean nominal episode length per group on `env`."""
    nominal = table[(table["env_id"] == env) & (table["attack"] == NOMINAL)]
    return nominal.groupby("group")["length"].mean()


def env_notes(table: pd.DataFrame, env: str, costs: pd.DataFrame) -> list[str]:
    """What a reader of one env's section needs besides its table: how long the nominal episodes last
    (a policy that falls early scores low whatever the attack), the main groups not trained yet, and
    any OA-TD3 setting cheaper than the paper's schedule, from the zoo's manifest."""
    lengths = nominal_lengths(table, env)
    out = ["Nominal episode length (mean steps; episodes end at the env's time limit or when the agent "
           "falls): " + ", ".join(f"{g} {lengths[g]:.0f}" for g in MAIN_GROUPS if g in lengths.index) + "."]
    if absent := [g for g in MAIN_GROUPS if g not in set(table["group"])]:
        out += ["", f"Not in the results yet on {env}: {', '.join(absent)} (their zoo policies are still to be trained)."]
    if cheap := cheap_schedule(costs, env):
        out += ["", f"OA-TD3 on {env} was trained with {cheap} (its OA critic "
                   "target and OA actor term on that many rows of each batch, not all of them as in the paper's "
                   "schedule) to fit the compute; "
                   + ("the section on OA-TD3's schedule below compares it with the paper's." if env == SCHEDULE_ENV
                      else "the paper's schedule was not run on this env.")]
    return [*out, ""]


def seed_caveat(table: pd.DataFrame) -> list[str]:
    """A warning for every env where a main group has fewer than 3 training seeds so far."""
    seeds = table.groupby(["env_id", "group"])["policy"].nunique()
    out = []
    for env in ENVS:
        if env not in seeds.index.get_level_values(0):
            continue
        few = {g: int(n) for g, n in seeds[env].items() if n < 3}
        if few:
            counts = ", ".join(f"{g} {n}" for g, n in few.items())
            out += [f"**{env} has fewer than 3 training seeds per algorithm so far** ({counts}): an interval "
                    "over so few training runs barely measures the variation between them that the claim is "
                    "about (over one, only episode-to-episode noise). Read its verdicts as preliminary.", ""]
    return out


def weak_baselines(table: pd.DataFrame, env: str) -> list[str]:
    """The baseline groups (TD3, PPO) whose nominal episodes on `env` last under half its time limit:
    they did not learn the task (an env without a time limit has none)."""
    lengths, limit = nominal_lengths(table, env), gym.spec(env).max_episode_steps
    return [g for g in ("TD3", "PPO") if g in lengths.index and limit and lengths[g] < limit / 2]


def early_falls(table: pd.DataFrame, env: str) -> str | None:
    """A sentence when the OA policies' nominal episodes on `env` last under half as long as the longest
    baseline's (they learned to fall early, so an attack has little left to take from them), and one
    when a baseline's last under half the env's time limit (the comparison is then between policies
    that did not learn the task)."""
    lengths = nominal_lengths(table, env)
    base = max((lengths[g] for g in ("TD3", "PPO") if g in lengths.index), default=None)
    short = [f"{g} {lengths[g]:.0f}" for g in ("OA-TD3", "OA-PPO") if g in lengths.index and base and lengths[g] < base / 2]
    weak = [f"{g} {lengths[g]:.0f}" for g in weak_baselines(table, env)]
    out = []
    if short:
        out.append(f"The OA policies fall early: their nominal episodes last {', '.join(short)} steps against the "
                   f"baselines' longest {base:.0f}. A policy that ends its episode early has little for an attack "
                   "to take: their flat robustness curves show how little they have to lose, not robustness.")
    if weak:
        out.append(f"A baseline falls early too: {', '.join(weak)} steps of the "
                   f"{gym.spec(env).max_episode_steps}-step time limit. Its OA "
                   "comparison is between policies that did not learn the task, so it says little about OA "
                   "training on a policy that has.")
    if not out:
        return None
    return "  " + " ".join(out) + (" What the training logs show: [docs/training.md](docs/training.md), the "
                                   "\"A known limit\" paragraphs.")


def robustness_claims(claims: list[Claim], env: str | None = None) -> list[Claim]:
    """The main robustness claims, (a) and (c), of every env (or of `env`): per env and key the first
    claim, since :func:`decide` makes each before its nominal-return twin."""
    first: dict[tuple[str, str], Claim] = {}
    for c in claims:
        if c.key in ROBUST_OF and env in (None, c.env_id):
            first.setdefault((c.key, c.env_id), c)
    return list(first.values())


ROBUST_VERDICT = {
    SUPPORTED: "was more robust than {base} in every measured cell at and above its eps_train",
    MIXED: "was more robust than {base} in some cells at and above its eps_train, not in all",
    NOT_SUPPORTED: "was not measurably more robust than {base} at and above its eps_train",
}
KEPT = {SUPPORTED: "kept its nominal return", NOT_SUPPORTED: "lost nominal return",
        MIXED: "may have lost some nominal return (the interval is too wide to tell)",
        NOT_MEASURED: "has no nominal measurement"}


def meaning(claims: list[Claim], summary: pd.DataFrame, table: pd.DataFrame) -> list[str]:
    """The practitioner's summary, derived from the verdicts and the table (no hand-edited conclusions):
    per env, one sentence for each OA method measured against its baseline, and a note naming the
    pair not measured yet."""
    pairs = (("a", "b", "OA-TD3", "TD3"), ("c", "c", "OA-PPO", "PPO"))
    out = []
    for env in ENVS:
        robust_of = {c.key: c for c in robustness_claims(claims, env)}
        sentences, missing = [], []
        for robust_key, nominal_key, robust, base in pairs:
            robust_claim = robust_of.get(robust_key)
            if robust_claim is None or robust_claim.verdict == NOT_MEASURED:
                missing.append(f"{robust} vs {base}")
                continue
            nominal = next((c for c in claims if c.key == nominal_key and c.env_id == env and c is not robust_claim), None)
            kept = KEPT[nominal.verdict if nominal else NOT_MEASURED]
            sentences.append(f"{robust} {ROBUST_VERDICT[robust_claim.verdict].format(base=base)}, and {kept}")
        if not sentences:
            continue
        line = f"- **{env}**: " + "; ".join(sentences) + "."
        if missing:
            line += f" Not measured yet: {', '.join(missing)} (those policies are still to be trained)."
        out.append(line)
        room = [f"{g} in {h} of {n}" for g in ("TD3", "PPO") for h, n in [held(summary, env, g, 0.1)] if n]
        if room:
            out.append(f"  How much the budgets stress the baselines: at eps >= 0.1 (every attack and the worst case) "
                       f"each kept at least 95% of its nominal return, {', '.join(room)} cells. Where a baseline "
                       "holds, robust training has nothing to win there.")
        if (falls := early_falls(table, env)) is not None:
            out.append(falls)
    return out


def bottom_line(claims: list[Claim], costs: pd.DataFrame, table: pd.DataFrame) -> list[str]:
    """The answer to "should I train with OA?" as these numbers give it: the robustness verdicts
    counted over envs, next to what OA training cost per env step, and the limits of the evidence."""
    robust = [c for c in robustness_claims(claims) if c.verdict != NOT_MEASURED]
    if not robust:
        return []
    won = [f"{ROBUST_OF[c.key]} on {c.env_id}" for c in robust if c.verdict == SUPPORTED]
    mixed = sum(c.verdict == MIXED for c in robust)
    if won:
        answer = f"OA training paid in {len(won)} of {len(robust)} measured comparisons ({', '.join(won)})"
    else:
        answer = (f"not for robustness alone: none of the {len(robust)} measured robustness comparisons "
                  f"(OA vs its baseline per env) favours OA training in every cell it rests on")
    if mixed:
        answer += f"; {mixed} {'is' if mixed == 1 else 'are'} mixed"
    ratios = [f"{r:.1f}x for {algo_label(costs, env, algo, algo.upper())} on {env}"
              for env in ENVS for algo in ("oa-td3", "oa-ppo") if (r := cost_ratio(costs, env, algo)) is not None]
    cost = (f" Training wall time per env step, OA over its baseline: {', '.join(ratios)} (machines in (f))."
            if ratios else "")
    limits = ["a few training seeds give wide intervals",
              "where a baseline already holds its nominal return under attack there is little to win"]
    if weak := [f"{g} on {env}" for env in ENVS for g in weak_baselines(table, env)]:
        limits.append(f"where a baseline did not learn the task ({', '.join(weak)}) its comparison says little")
    return [f"- **Should you train with OA?** On these numbers, {answer}.{cost} Limits: {'; '.join(limits)}. "
            "Before deciding, score your own policy with `rbrl attack --policy CKPT --attack "
            "standard` and compare it with a baseline at the budgets your task needs."]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", help="Bench directories (the full suite, the ablation suite).")
    parser.add_argument("--out", type=Path, default=ROOT / "REPRODUCTION.md")
    parser.add_argument("--figures", type=Path, default=ROOT / "docs" / "reproduction")
    args = parser.parse_args(argv)
    table, manifests, note = pool_results(args.results)
    if note:
        print(f"note: {note}", file=sys.stderr)
    summary = summarize(table, by="group")
    claims = decide(table)
    suite = next((m or {}).get("suite", {}) for _, m in manifests)
    args.figures.mkdir(parents=True, exist_ok=True)
    rel = args.figures.relative_to(args.out.parent)
    # the ablation suite is bundled once its policies are in the zoo
    suites = [n for n in ("full", "ablations") if (zoo.SUITES / f"{n}.toml").is_file()]
    main_table = table[table["group"].isin(MAIN_GROUPS)]
    envs = [e for e in ENVS if e in set(main_table["env_id"])]
    lines = [
        "# Reproduction: action-robust policies vs baselines on the bundled zoo",
        "",
        "Does training with an optimal-adversary-aware critic (OA-TD3, OA-PPO; arXiv 2507.03372) make",
        "continuous-control policies more robust to bounded action perturbations than their baselines",
        "(TD3, PPO), and at what price? Every number below is measured on the policies that ship with rbrl",
        "(`rbrl zoo list`), 3 training seeds per algorithm where the zoo has them (each table gives the",
        "count), and regenerated by:",
        "",
        "```bash",
        *[f"rbrl bench {name} --out runs/bench-{name}" for name in suites],
        f"python benchmarks/zoo/reproduce.py {' '.join(f'runs/bench-{name}' for name in suites)}",
        "```",
        "",
        f"Settings (bundled suite `full`): attacks {', '.join(suite.get('attacks', []))}, eps "
        f"{', '.join(map(str, suite.get('eps', [])))}, {suite.get('episodes')} episodes per cell and policy "
        f"(eval seeds {suite.get('eval_seeds')}), critic attacks on critics fitted to each policy "
        f"(`critic = \"{suite.get('critic')}\"`, the same procedure for every algorithm), PGD {suite.get('pgd_steps')} "
        f"steps x {suite.get('pgd_restarts')} starts. The worst case is taken per episode over the four attacks. "
        "Intervals are 95% percentile bootstrap intervals, resampling training seeds and then episodes "
        "(2,000 resamples, fixed random state): with 3 seeds they are wide, and the verdicts say so.",
        "",
        f"Generated {dt.date.today().isoformat()} from {', '.join(str(r) for r in args.results)}.",
        "",
        "## Claims",
        "",
        "Each claim is decided by a rule fixed in advance (`robustbench_rl.reports.claims`): *supported* "
        "when every interval it rests on lies on the claimed side of 0 (for a kept nominal return: the % "
        f"change's interval lies above -{NOMINAL_TOLERANCE:g}%), *not supported* when none does, *mixed* otherwise.",
        "",
        *claims_table(claims),
        "",
        *seed_caveat(main_table),
    ]
    costs = training_costs()
    cost = cost_table(costs)
    lines += ["(f) Training cost per env step, OA vs baseline, as measured while training the zoo (two runs",
              "at once on 2 cores with other work alongside, so every time is an upper bound; other work only",
              "adds time, so the ratio compares each algorithm's fastest seed, the least disturbed run; a",
              "ratio between runs on different machines, as the machine column shows, is only indicative):",
              "", *cost, ""]
    lines += ["## What this means", "", *meaning(claims, summary, main_table), *bottom_line(claims, costs, main_table), ""]
    for env in envs:
        t = main_table[main_table["env_id"] == env]
        built = tables.build_tables(t, by="group")[env]
        fig = plots.robustness_figure(summarize(t, by="group"), env, by="group")
        stem = args.figures / f"robustness_{env.split('-')[0].lower()}"
        plots.save_figure(fig, stem, formats=("png",))
        plt.close(fig)
        lines += [f"## {env}", "", tables.to_markdown(built), "",
                  f"![{env}: return vs eps under each attack and the worst case]({rel / stem.name}.png)", "",
                  *env_notes(t, env, costs)]
    missing = [e for e in ENVS if e not in envs]
    if missing:
        lines += [f"Not in the results yet: {', '.join(missing)} (their zoo policies are still to be trained).", ""]
    lines += [f"## Ablations on {ABLATION_ENV}", "",
              "(d) Gradient surgery and (e) the training budget eps_train, OA-TD3 at omega 0.5, 3 seeds each once trained (the seeds column gives the count; a verdict on fewer seeds is preliminary); "
              "every other setting as in the zoo's OA-TD3 (configs `robustbench_rl/zoo/configs/invpend-oa-td3-*.toml`"
              ", trained by `benchmarks/zoo/train.sh`)." + ("" if "ablations" in suites else
              " The ablation policies are still being trained: their rows read \"not measured\" until they ship "
              "with the zoo, with the `ablations` suite that scores them."), "",
              "Worst-case return by eps_train (mean [95% CI]):", "",
              *group_table(summary, ABLATION_ENV, "eps_train", [(f"{e:g}", g) for e, g in sorted(EPS_TRAIN_GROUPS.items())]), ""]
    if SCHEDULE_ENV in envs and (cheap := cheap_schedule(costs, SCHEDULE_ENV)):
        lines += [f"## OA-TD3's schedule on {SCHEDULE_ENV}", "",
                  f"The zoo's OA-TD3 on {SCHEDULE_ENV} runs its OA updates on a sub-batch (`{cheap}`), a cheaper "
                  "setting than the paper's schedule (the whole batch, every update). OA-TD3 on the "
                  "paper's schedule (config `robustbench_rl/zoo/configs/hopper-oa-td3-paper.toml`, scored by the "
                  "`ablations` suite) tells whether that setting changes the result. Return (mean [95% CI]):", "",
                  *group_table(summary, SCHEDULE_ENV, "policy", [("TD3", "TD3"), (f"OA-TD3, {cheap}", "OA-TD3"),
                                                                ("OA-TD3, the paper's schedule", PAPER_SCHEDULE)]), ""]
        eps_train = eps_train_of(table[table["env_id"] == SCHEDULE_ENV], "OA-TD3") or 0.1
        if (verdict := schedule_verdict(summary, SCHEDULE_ENV, cheap, eps_train)) is not None:
            lines += [verdict, ""]
    text = "\n".join(lines).rstrip() + "\n"
    atomic_write_bytes(args.out, text.encode())
    print(f"wrote {args.out} and figures in {args.figures}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
