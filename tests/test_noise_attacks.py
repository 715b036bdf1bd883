"""Critic-free attacks and the threat model: bound, clip, the documented corner, the registry."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from robustbench_rl.attacks import ThreatModelViolation, check_bound, check_eps, list_attacks, make_attack

actions = st.integers(1, 6).flatmap(
    lambda d: st.lists(st.lists(st.floats(-1, 1, allow_nan=False), min_size=d, max_size=d), min_size=1, max_size=16)
)


@settings(max_examples=200, deadline=None)
@given(acts=actions, eps=st.floats(0, 2), name=st.sampled_from(["none", "random", "biggest"]), seed=st.integers(0, 99))
def test_critic_free_attacks_respect_bound_and_clip(acts, eps, name, seed):
    act = torch.tensor(acts, dtype=torch.float32)
    out = make_attack(name).perturb(torch.zeros(len(acts), 3), act, eps, torch.Generator().manual_seed(seed))
    assert out.shape == act.shape
    assert (out - act).abs().max() <= eps + 1e-6
    assert out.abs().max() <= 1.0
    check_bound(act, out, eps)


def test_biggest_picks_the_documented_corner():
    act = torch.tensor([[0.5, -0.5, 0.0, 1.0, -1.0]])
    out = make_attack("biggest").perturb(act, act, 0.2)
    # delta_i = -eps * sign(a_i), ties (a_i = 0) -> +eps, then clip
    assert torch.allclose(out, torch.tensor([[0.3, -0.3, 0.2, 0.8, -0.8]]))
    # it displaces the executed action at least as much as any other corner, after clipping
    corners = torch.cartesian_prod(*[torch.tensor([-0.2, 0.2])] * 5)
    moved = ((act + corners).clamp(-1, 1) - act).abs().sum(-1)
    assert (out - act).abs().sum() >= moved.max() - 1e-6


def test_random_is_uniform_in_the_box_and_seeded():
    act = torch.zeros(20_000, 2)
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    a = make_attack("random").perturb(act, act, 0.1, g1)
    b = make_attack("random").perturb(act, act, 0.1, g2)
    assert torch.equal(a, b)
    assert a.min() >= -0.1 and a.max() <= 0.1
    assert abs(a.mean().item()) < 0.003 and abs(a.std().item() - 0.1 / 3**0.5) < 0.002


@pytest.mark.parametrize("name", ["none", "random", "biggest"])
def test_eps_zero_is_nominal_bit_for_bit(name):
    act = torch.rand(8, 3) * 2 - 1
    assert torch.equal(make_attack(name).perturb(act, act, 0.0, torch.Generator().manual_seed(0)), act)


def test_registry_lists_and_refuses_unknown():
    assert list_attacks()[:3] == ["none", "random", "biggest"]
    with pytest.raises(ValueError, match="known attacks: none, random, biggest"):
        make_attack("fgsm")


@pytest.mark.parametrize("bad", [-0.1, 2.5, float("nan"), "abc"])
def test_check_eps_refuses(bad):
    with pytest.raises(ValueError, match="eps must be"):
        check_eps(bad)


@pytest.mark.parametrize("act, perturbed, message", [
    ([[0.0, 0.0]], [[0.0, float("nan")]], "non-finite"),
    ([[0.0, 0.0]], [[0.0, 0.35]], "moved the action by 0.35"),
    ([[0.0, 0.0]], [[0.0, 1.05]], "moved the action"),
    ([[0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]], "shape"),
    ([[0.9, 0.0]], [[1.1, 0.0]], r"outside \[-1, 1\]"),  # within eps of the action, but out of the box
])
def test_check_bound_names_each_violation(act, perturbed, message):
    with pytest.raises(ThreatModelViolation, match=message):
        check_bound(torch.tensor(act), torch.tensor(perturbed), 0.3)


def test_check_bound_allows_the_bound_itself_and_the_clipped_box():
    act = torch.tensor([[0.0, 0.0]])
    check_bound(act, torch.tensor([[0.3, -0.3]]), 0.3)  # on the bound is allowed
    check_bound(torch.tensor([[0.9, 0.0]]), torch.tensor([[1.0, 0.0]]), 0.3)  # clipped to the box is allowed
