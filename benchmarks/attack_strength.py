"""Attack strength study: how low each attack pushes each policy, what it costs, and whether a
robust policy's advantage holds under the attacks that do not use a critic.

Reads a finished (or partial) `rbrl bench` run of a suite such as benchmarks/strength/hopper.toml and
prints Markdown tables:

1. mean return per policy group, attack and eps (the worst case is per episode, over every attack);
2. cost per episode: the cell's wall time over its episodes, plus, for rl-adversary, the one-off fit of
   its adversary (read from the adversary cache) spread over the suite's episodes at that eps;
3. the gap between the critic attacks and the critic-free strong attacks (lookahead, rl-adversary):
   min over {min-q, min-oa-q} minus min over {lookahead, rl-adversary}, per group and eps
   (positive: the critic attacks miss damage that planning or learning finds);
4. each group's return minus the first group's, per attack (the robust-vs-baseline question).

    rbrl bench benchmarks/strength/hopper.toml --out runs/strength-hopper
    python benchmarks/attack_strength.py benchmarks/strength/hopper.toml runs/strength-hopper
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from robustbench_rl.results import read_results

CRITIC_ATTACKS = ("min-q", "min-oa-q")
CRITIC_FREE_STRONG = ("lookahead", "rl-adversary")


def markdown(df: pd.DataFrame) -> str:
    """A DataFrame as a Markdown table (index columns first), without optional dependencies."""
    flat = df.reset_index()
    cols = [str(c) for c in flat.columns]
    rows = [["" if pd.isna(v) else f"{v:g}" if isinstance(v, float) else str(v) for v in r]
            for r in flat.itertuples(index=False)]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def cell_costs(run: Path) -> pd.DataFrame:
    """Seconds per episode of every finished cell (policy, attack, eps), from the cell records."""
    rows = []
    for f in sorted((run / "cells").glob("*.json")):
        rec = json.loads(f.read_text())
        episodes = len(rec["rows"]["episode"])
        rows.append({"policy": rec["policy"], "attack": rec["attack"], "eps": rec["eps"],
                     "s_per_episode": rec["wall_s"] / max(episodes, 1), "episodes": episodes})
    return pd.DataFrame(rows)


def adversary_fit_seconds(suite_file: Path) -> dict[tuple[str, float], float]:
    """Wall time of each (policy, eps) adversary fit, read from the cached adversaries' metadata."""
    from robustbench_rl.attacks.adversary import get_adversary, is_cached
    from robustbench_rl.attacks.adversary_fit import AdversaryConfig
    from robustbench_rl.policy import load_policy
    from robustbench_rl.suite import load_suite

    suite = load_suite(suite_file)
    if "rl-adversary" not in suite.attacks:
        return {}
    config = AdversaryConfig(**suite.options_of("rl-adversary"))
    out = {}
    for entry in suite.policies:
        try:
            policy = load_policy(entry.spec)
        except (ValueError, OSError):  # a policy the run has not reached (e.g. not in this zoo)
            continue
        for eps in suite.eps:
            if eps > 0 and is_cached(policy, eps, config, suite.critic_cache):
                adv = get_adversary(policy, eps, config=config, cache_dir=suite.critic_cache)
                out[(entry.name or policy.name, eps)] = adv.meta["stats"]["wall_s"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("suite", type=Path, help="the suite file the run was made from")
    ap.add_argument("run", type=Path, help="its `rbrl bench` output folder")
    args = ap.parse_args()
    table = read_results(args.run, partial=True)
    attacked = table[table["attack"] != "none"]
    nominal = table[table["attack"] == "none"].groupby("group")["return"].mean()
    worst = (attacked.groupby(["group", "policy", "eps", "reset_seed"])["return"].min().reset_index()
             .assign(attack="worst-case"))
    scored = pd.concat([attacked, worst], ignore_index=True)
    means = scored.groupby(["group", "eps", "attack"])["return"].mean().unstack("attack")
    order = [a for a in ("random", "biggest", "min-q", "min-oa-q", "lookahead", "rl-adversary", "worst-case")
             if a in means.columns]
    means = means[order]
    print("## Mean return (nominal in the first column)\n")
    shown = means.copy()
    shown.insert(0, "nominal", [nominal.get(g) for g, _ in shown.index])
    print(markdown(shown.round(1)))

    costs = cell_costs(args.run)
    costs = costs[costs["attack"] != "none"] if not costs.empty else costs
    if not costs.empty:
        policy_group = table.drop_duplicates("policy").set_index("policy")["group"]
        costs["group"] = costs["policy"].map(policy_group)
        fits = adversary_fit_seconds(args.suite)
        if fits:
            per_cell = costs["attack"].eq("rl-adversary")
            fit_s = [fits.get((p, e), 0.0) for p, e in zip(costs["policy"], costs["eps"], strict=True)]
            costs.loc[per_cell, "s_per_episode"] += (pd.Series(fit_s, index=costs.index)[per_cell]
                                                     / costs.loc[per_cell, "episodes"])
        print("\n## Cost: seconds per episode (rl-adversary includes its fit, spread over the cell's episodes)\n")
        print(markdown(costs.groupby(["group", "eps", "attack"])["s_per_episode"].mean().unstack("attack")
                       .reindex(columns=[a for a in order if a != "worst-case"]).round(1)))

    have = [a for a in CRITIC_FREE_STRONG if a in means.columns]
    if have and all(a in means.columns for a in CRITIC_ATTACKS):
        gap = means[list(CRITIC_ATTACKS)].min(axis=1) - means[have].min(axis=1)
        print("\n## Better critic attack minus better of lookahead and rl-adversary (positive: the critic attacks miss damage)\n")
        print(markdown(gap.unstack("eps").round(1)))

    groups = list(dict.fromkeys(table["group"]))
    if len(groups) > 1:
        base = groups[0]
        print(f"\n## Return minus {base}'s, per attack\n")
        diff = means.sub(means.xs(base, level="group"), level="eps").drop(index=base, level="group")
        print(markdown(diff.round(1)))


if __name__ == "__main__":
    main()
