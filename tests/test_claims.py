"""Claims decided by effect sizes: the verdict follows the sign of each interval, by fixed rules."""

from __future__ import annotations

import pytest
from test_reports import synthetic_table

from robustbench_rl.reports.claims import (
    MIXED,
    NOT_MEASURED,
    NOT_SUPPORTED,
    SUPPORTED,
    effect,
    matters_claim,
    nominal_claim,
    robustness_claim,
)
from robustbench_rl.reports.stats import WORST

ENV = "Hopper-v5"


@pytest.fixture(scope="module")
def table():
    # OA-TD3: nominal ~960, loses 1000 per unit eps (x1.5 under biggest); TD3: nominal ~1010, loses 3000
    return synthetic_table(episodes=8)


def test_an_effect_is_the_difference_of_group_means_with_an_interval_around_it(table):
    e = effect(table, "OA-TD3", "TD3", "biggest", 0.2)
    oa = table[(table["group"] == "OA-TD3") & (table["attack"] == "biggest") & (table["eps"] == 0.2)]["return"]
    td3 = table[(table["group"] == "TD3") & (table["attack"] == "biggest") & (table["eps"] == 0.2)]["return"]
    assert e.point == pytest.approx(oa.mean() - td3.mean())
    assert e.low < e.point < e.high and e.sign == 1 and e.n_treatment == e.n_control == 16
    assert effect(table, "OA-TD3", "TD3", "min-q", 0.2) is None  # no such cell


def test_robustness_claims_follow_the_sign_of_every_interval(table):
    claim = robustness_claim("a", "OA-TD3 beats TD3", table, ENV, "OA-TD3", "TD3", ["biggest", WORST], [0.1, 0.2])
    assert claim.verdict == SUPPORTED and len(claim.effects) == 4 and all(e.sign == 1 for e in claim.effects)
    backwards = robustness_claim("a", "TD3 beats OA-TD3", table, ENV, "TD3", "OA-TD3", ["biggest"], [0.1, 0.2])
    assert backwards.verdict == NOT_SUPPORTED
    partly = robustness_claim("a", "", table, ENV, "OA-TD3", "TD3", ["biggest", "min-q"], [0.2])
    assert partly.verdict == MIXED  # a cell that was never measured cannot support the claim
    assert robustness_claim("a", "", table, "Walker2d-v5", "OA-TD3", "TD3", ["biggest"], [0.2]).verdict == NOT_MEASURED


def test_nominal_claims_use_the_tolerance_on_the_percent_change(table):
    loose = nominal_claim("b", "", table, ENV, "OA-TD3", "TD3", tolerance=10)
    (e,) = loose.effects
    assert e.relative and -6.5 < e.point < -3.5  # ~960 vs ~1010
    assert loose.verdict == SUPPORTED
    assert nominal_claim("b", "", table, ENV, "OA-TD3", "TD3", tolerance=1).verdict == NOT_SUPPORTED
    assert nominal_claim("b", "", table, ENV, "TD3", "OA-TD3", tolerance=0).verdict == SUPPORTED


def test_matters_claims_need_a_gain_somewhere_and_a_loss_nowhere(table):
    # OA-TD3 gains under attack but loses nominal return: mixed
    assert matters_claim("d", "", table, ENV, "OA-TD3", "TD3", ["biggest"], [0.2]).verdict == MIXED
    attacked_only = table[table["attack"] != "none"]
    assert matters_claim("d", "", attacked_only, ENV, "OA-TD3", "TD3", ["biggest"], [0.2]).verdict == SUPPORTED
    assert matters_claim("d", "", attacked_only, ENV, "TD3", "OA-TD3", ["biggest"], [0.2]).verdict == NOT_SUPPORTED
