"""Report statistics against hand-computed values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from robustbench_rl.reports.stats import (
    WORST,
    auc_table,
    bootstrap_ci,
    independent_episodes,
    iqm,
    pct_of_nominal,
    robustness_auc,
    summarize,
    with_worst_case,
)


def test_iqm_hand_values():
    assert iqm(np.arange(1, 9)) == pytest.approx(4.5)  # cut 2 each end: mean(3, 4, 5, 6)
    assert iqm([100, 1, 3, 2, 4]) == pytest.approx(3.0)  # n=5 cuts 1 each end: mean(2, 3, 4)
    assert iqm([7.0]) == 7.0 and iqm([1.0, 2.0, 3.0]) == pytest.approx(2.0)  # n<4 cuts nothing
    rows = iqm(np.array([[1, 2, 3, 4, 5, 6, 7, 8], [1000, 2, 3, 4, 5, 6, 7, 1]]), axis=1)
    np.testing.assert_allclose(rows, [4.5, 4.5])  # an outlier episode does not move it
    with pytest.raises(ValueError, match="iqm of an empty array"):
        iqm([])


def test_bootstrap_ci_is_deterministic_for_a_seed():
    x = np.random.default_rng(3).normal(100.0, 10.0, size=40)
    a = bootstrap_ci(x, random_state=0)
    assert a == bootstrap_ci(x, random_state=0)
    assert a != bootstrap_ci(x, random_state=1)
    lo, hi = a
    assert lo < x.mean() < hi
    # the percentile interval of the mean is about +-1.96 standard errors wide
    se = x.std(ddof=1) / np.sqrt(len(x))
    assert (hi - lo) == pytest.approx(2 * 1.96 * se, rel=0.2)
    lo_i, hi_i = bootstrap_ci(x, "iqm", random_state=0)
    assert lo_i < iqm(x) < hi_i


def test_bootstrap_ci_hand_cases():
    assert bootstrap_ci([5.0, 5.0, 5.0]) == (5.0, 5.0)
    assert bootstrap_ci([2.0]) == (2.0, 2.0)
    # two values {0, 1}: resampled means lie in {0, .5, 1} with P(0) = P(1) = 1/4, so the 95% interval is [0, 1]
    assert bootstrap_ci([0.0, 1.0], n_resamples=4000) == (0.0, 1.0)
    with pytest.raises(ValueError, match="bootstrap_ci needs a non-empty 1-D array"):
        bootstrap_ci([])


def test_hierarchical_bootstrap_includes_seed_variation():
    rng = np.random.default_rng(0)
    # two training seeds with very different returns, tiny episode noise
    x = np.concatenate([100 + rng.normal(0, 1, 20), 200 + rng.normal(0, 1, 20)])
    seeds = np.repeat(["s0", "s1"], 20)
    flat = bootstrap_ci(x, random_state=0)
    nested = bootstrap_ci(x, groups=seeds, random_state=0)
    assert (nested[1] - nested[0]) > 2.5 * (flat[1] - flat[0])
    assert nested[0] == pytest.approx(100, abs=3) and nested[1] == pytest.approx(200, abs=3)
    unbalanced = bootstrap_ci(x[:-5], groups=seeds[:-5], random_state=0, n_resamples=300)
    assert unbalanced == bootstrap_ci(x[:-5], groups=seeds[:-5], random_state=0, n_resamples=300)


def test_robustness_auc_hand_values():
    # trapezoids: 0.1 * (100 + 80) / 2 + 0.1 * (80 + 40) / 2 = 15, over the range 0.2 -> 75
    assert robustness_auc([0, 0.1, 0.2], [100, 80, 40]) == pytest.approx(75.0)
    assert robustness_auc([0.2, 0, 0.1], [40, 100, 80]) == pytest.approx(75.0)  # order does not matter
    assert robustness_auc([0, 0.05, 0.3], [7, 7, 7]) == pytest.approx(7.0)
    assert np.isnan(robustness_auc([0.1], [3.0]))


def _table(rows):
    cols = ["policy", "algo", "env_id", "train_seed", "attack", "critic_source", "eps", "eval_seed", "episode",
            "return", "length"]
    out = []
    for policy, algo, attack, eps, returns in rows:
        for i, r in enumerate(returns):
            out.append([policy, algo, "E-v0", 0, attack, "none", eps, 0, i, float(r), 10])
    return pd.DataFrame(out, columns=cols)


def test_worst_case_and_pct_of_nominal():
    t = _table([
        ("p", "td3", "none", 0.0, [100, 100]),
        ("p", "td3", "random", 0.1, [90, 80]),
        ("p", "td3", "biggest", 0.1, [70, 90]),   # per episode: biggest on 0, random on 1
        ("p", "td3", "random", 0.2, [50, 50]),
        ("p", "td3", "biggest", 0.2, [60, 60]),   # random is the worst at 0.2
        ("q", "td3", "none", 0.0, [-10, -10]),
        ("q", "td3", "random", 0.1, [-20, -20]),
    ])
    w = with_worst_case(t)
    worst = w[w["attack"] == WORST]
    p = worst[worst["policy"] == "p"].set_index(["eps", "episode"])
    assert p.loc[(0.1, 0), "return"] == 70 and p.loc[(0.1, 0), "worst_attack"] == "biggest"
    # The per-episode minimum (mean 75) is below the attack with the lowest mean (biggest, 80).
    assert p.loc[(0.1, 1), "return"] == 80 and p.loc[(0.1, 1), "worst_attack"] == "random"
    assert p.loc[(0.2, 1), "return"] == 50 and p.loc[(0.2, 1), "worst_attack"] == "random"
    pct = pct_of_nominal(t)
    assert pct.iloc[2] == pytest.approx(90.0) and pct.iloc[4] == pytest.approx(70.0)
    assert pct[t["policy"] == "q"].isna().all()  # negative nominal: % is meaningless


def test_summarize_pools_seeds_and_auc():
    t = pd.concat([
        _table([("a0", "td3", "none", 0.0, [10, 20]), ("a0", "td3", "random", 0.5, [0, 10])]),
        _table([("a1", "td3", "none", 0.0, [30, 40]), ("a1", "td3", "random", 0.5, [20, 30])]),
    ], ignore_index=True)
    s = summarize(t, by="group")  # no group column: falls back to algo
    nominal = s[(s["attack"] == "none")].iloc[0]
    assert (nominal["n_policies"], nominal["n_episodes"], nominal["mean"]) == (2, 4, 25.0)
    assert nominal["iqm"] == pytest.approx(25.0) and nominal["std"] == pytest.approx(np.std([10, 20, 30, 40], ddof=1))
    rnd = s[(s["attack"] == "random")].iloc[0]
    assert rnd["mean"] == 15.0 and rnd["pct_nominal"] == pytest.approx(np.mean([0, 10 / 15 * 100, 20 / 35 * 100,
                                                                               30 / 35 * 100]))
    assert rnd["ci_low"] <= 15.0 <= rnd["ci_high"]
    auc = auc_table(s, by="algo").set_index("attack")
    assert auc.loc["random", "auc"] == pytest.approx((25 + 15) / 2)
    assert auc.loc["random", "auc_pct_nominal"] == pytest.approx(80.0)
    assert auc.loc[WORST, "auc"] == pytest.approx(20.0)
    per_policy = summarize(t, by="policy")
    assert set(per_policy["policy"]) == {"a0", "a1"} and (per_policy["n_policies"] == 1).all()
    assert summarize(t, by="group", random_state=3).equals(summarize(t, by="group", random_state=3))


def test_worst_case_counts_only_episodes_every_attack_ran():
    t = _table([
        ("p", "td3", "random", 0.1, [5, 1, 9]),
        ("p", "td3", "biggest", 0.1, [3, 4]),   # ran episodes 0 and 1 only
    ])
    worst = with_worst_case(t)
    worst = worst[worst["attack"] == WORST].sort_values("episode")
    assert worst["return"].tolist() == [3.0, 1.0]
    assert worst["worst_attack"].tolist() == ["biggest", "random"]


def test_overlapping_reset_seeds_are_not_counted_twice():
    # Two eval seeds under the older eval_seed + episode scheme: 0..3 and 1..4 share 3 start states.
    t = pd.concat([_table([("p", "td3", "none", 0.0, [1, 2, 3, 4])]).assign(eval_seed=0),
                   _table([("p", "td3", "none", 0.0, [2, 3, 4, 5])]).assign(eval_seed=1)], ignore_index=True)
    s = summarize(t, by="policy")
    assert s.iloc[0]["n_episodes"] == 5 and s.iloc[0]["mean"] == pytest.approx(3.0)
    # With the reset seeds recorded, disjoint seeds stay 8 independent episodes.
    t["reset_seed"] = t["eval_seed"] * 2**20 + t["episode"]
    assert independent_episodes(t) is t
    assert summarize(t, by="policy").iloc[0]["n_episodes"] == 8
