"""The PGD engine: optimality against brute force, the threat model's bound, row independence."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from robustbench_rl.attacks.pgd import feasible_box, pgd_minimize, worst_case
from robustbench_rl.networks import TwinCritic


def random_critic(obs_dim: int, act_dim: int, seed: int) -> TwinCritic:
    torch.manual_seed(seed)
    return TwinCritic(obs_dim, act_dim, hidden=[32, 32]).requires_grad_(False)


def grid_minimum(critic: TwinCritic, obs: torch.Tensor, a: torch.Tensor, eps: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Brute force: min and range of min_q over an n^d grid of each row's feasible box."""
    lo, hi = feasible_box(a, eps)
    d = a.shape[1]
    t = torch.linspace(0, 1, n)
    mesh = torch.stack(torch.meshgrid(*([t] * d), indexing="ij"), dim=-1).reshape(-1, d)  # (G, d)
    pts = lo[:, None, :] + (hi - lo)[:, None, :] * mesh[None]  # (B, G, d)
    B, G = pts.shape[:2]
    with torch.no_grad():
        vals = critic.min_q(obs[:, None, :].expand(B, G, obs.shape[1]).reshape(B * G, -1), pts.reshape(B * G, d))
    vals = vals.reshape(B, G)
    return vals.min(1).values.numpy(), (vals.max(1).values - vals.min(1).values).numpy()


@pytest.mark.parametrize("act_dim,grid", [(1, 2001), (2, 121)])
def test_pgd_matches_brute_force_grid_minimum(act_dim, grid):
    obs_dim, batch, eps = 3, 256, 0.3
    g = torch.Generator().manual_seed(1)
    # Random twin critics are far from convex in a 0.6-wide box (min of two wiggly heads): one start
    # lands in a local minimum in ~15% of rows, so the engine's restarts are what make it reliable.
    for seed in range(2):  # two random critics per action size
        critic = random_critic(obs_dim, act_dim, seed)
        obs = torch.randn(batch, obs_dim, generator=g)
        a = torch.rand(batch, act_dim, generator=g) * 2 - 1
        _, v = pgd_minimize(lambda x, c=critic, o=obs: c.min_q(o, x), a, eps, steps=20, restarts=8, generator=g,
                            return_value=True)
        best, spread = grid_minimum(critic, obs, a, eps, grid)
        # "within 1%": the PGD value exceeds the grid minimum by at most 1% of the row's value range
        # (a relative-to-|value| criterion is meaningless for values near 0).
        ok = v.numpy() <= best + 0.01 * np.maximum(spread, 1e-6)
        assert ok.mean() >= 0.95, f"act_dim {act_dim}, critic {seed}: only {ok.mean():.1%} rows near the grid min"


@settings(max_examples=40, deadline=None)
@given(eps=st.floats(0.0, 2.0), steps=st.integers(1, 8), restarts=st.integers(1, 2), seed=st.integers(0, 1000),
       act_dim=st.integers(1, 4), step_size=st.one_of(st.none(), st.floats(0.01, 3.0)))
def test_pgd_respects_bound_and_action_box(eps, steps, restarts, seed, act_dim, step_size):
    g = torch.Generator().manual_seed(seed)
    critic = random_critic(2, act_dim, seed % 3)
    obs = torch.randn(16, 2, generator=g)
    # include actions on and near the box edges, where clipping matters
    a = (torch.rand(16, act_dim, generator=g) * 2.4 - 1.2).clamp(-1, 1)
    x = pgd_minimize(lambda x: critic.min_q(obs, x), a, eps, steps, step_size=step_size, restarts=restarts, generator=g)
    assert x.shape == a.shape
    assert (x - a).abs().max().item() <= eps + 1e-6
    assert x.abs().max().item() <= 1.0
    assert not x.requires_grad


def test_rows_are_independent():
    """A row's result does not depend on the other rows of the batch (same start, other rows changed)."""
    critic = random_critic(3, 2, 0)
    g = torch.Generator().manual_seed(0)
    obs = torch.randn(64, 3, generator=g)
    a = torch.rand(64, 2, generator=g) * 2 - 1
    x1 = pgd_minimize(lambda x: critic.min_q(obs, x), a, 0.2, 10, generator=torch.Generator().manual_seed(5))
    obs2, a2 = obs.clone(), a.clone()
    obs2[1:] = torch.randn(63, 3, generator=g)
    a2[1:] = torch.rand(63, 2, generator=g) * 2 - 1
    x2 = pgd_minimize(lambda x: critic.min_q(obs2, x), a2, 0.2, 10, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(x1[0], x2[0], rtol=0, atol=1e-6)
    alone = pgd_minimize(lambda x: critic.min_q(obs[:1], x), a[:1], 0.2, 10, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(alone[0], x1[0], rtol=0, atol=1e-6)


def test_no_gradient_reaches_the_critic_and_value_matches():
    torch.manual_seed(0)
    critic = TwinCritic(3, 2, hidden=[16, 16])  # parameters DO require grad here
    obs, a = torch.randn(32, 3), torch.rand(32, 2) * 2 - 1
    x, v = pgd_minimize(lambda x: critic.min_q(obs, x), a, 0.1, 5, return_value=True)
    assert all(p.grad is None for p in critic.parameters())
    torch.testing.assert_close(v, critic.min_q(obs, x).detach())
    # the returned value is never worse than the unperturbed action's in expectation over rows
    assert v.mean() <= critic.min_q(obs, a).detach().mean() + 1e-6


def test_eps_zero_returns_the_action_and_a_seed_fixes_the_result():
    critic = random_critic(3, 2, 0)
    obs, a = torch.randn(8, 3), torch.rand(8, 2) * 2 - 1
    assert torch.equal(pgd_minimize(lambda x: critic.min_q(obs, x), a, 0.0, 10), a)
    r1 = pgd_minimize(lambda x: critic.min_q(obs, x), a, 0.1, 5, generator=torch.Generator().manual_seed(3))
    r2 = pgd_minimize(lambda x: critic.min_q(obs, x), a, 0.1, 5, generator=torch.Generator().manual_seed(3))
    assert torch.equal(r1, r2)


def test_bad_arguments_are_one_line_errors():
    critic = random_critic(3, 2, 0)
    obs, a = torch.randn(8, 3), torch.rand(8, 2) * 2 - 1
    with pytest.raises(ValueError, match="eps"):
        pgd_minimize(lambda x: critic.min_q(obs, x), a, -0.1, 5)
    with pytest.raises(ValueError, match="steps"):
        pgd_minimize(lambda x: critic.min_q(obs, x), a, 0.1, -1)
    with pytest.raises(ValueError, match=r"\(B, d\)"):
        pgd_minimize(lambda x: critic.min_q(obs, x), a[0], 0.1, 5)
    with pytest.raises(ValueError, match="start"):
        pgd_minimize(lambda x: critic.min_q(obs, x), a, 0.1, 5, start="zero")


# ---------------------------------------------------------------------------------------------------
# The analytic objective and the fgsm start


@pytest.mark.parametrize("activation,hidden", [("relu", [32, 32]), ("relu", [16]), ("tanh", [16, 16, 16])])
@pytest.mark.parametrize("heads", [("q1", "q2"), ("q1",)])
def test_action_objective_matches_autograd(activation, hidden, heads):
    torch.manual_seed(1)
    critic = TwinCritic(5, 3, hidden, activation)  # parameters require grad: none may reach them
    obs, a = torch.randn(64, 5), torch.rand(64, 3) * 2 - 1
    objective = critic.action_objective(obs, heads)
    value, grad = objective.value_and_grad(a)
    x = a.clone().requires_grad_(True)
    qs = [getattr(critic, h)(torch.cat([obs, x], -1)).squeeze(-1) for h in heads]
    ref = torch.stack(qs).amin(0)
    (ref_grad,) = torch.autograd.grad(ref.sum(), x)
    torch.testing.assert_close(value, ref.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(objective(a), ref.detach(), rtol=1e-5, atol=1e-5)
    assert all(p.grad is None for p in critic.parameters())


def test_pgd_gives_the_same_answer_through_the_analytic_objective_and_autograd():
    critic = random_critic(4, 2, 3)
    obs, a = torch.randn(128, 4), torch.rand(128, 2) * 2 - 1
    for start in ("random", "fgsm"):
        x1, v1 = pgd_minimize(critic.action_objective(obs), a, 0.2, 8, start=start, return_value=True,
                              generator=torch.Generator().manual_seed(0))
        x2, v2 = pgd_minimize(lambda x: critic.min_q(obs, x), a, 0.2, 8, start=start, return_value=True,
                              generator=torch.Generator().manual_seed(0))
        assert (x1 - x2).abs().max() < 1e-5 or (v1 - v2).abs().max() < 1e-4
        torch.testing.assert_close(v1, v2, rtol=1e-4, atol=1e-4)


class UntiledObjective:
    """The same analytic objective without `tile`: PGD then runs its restarts one after the other."""

    def __init__(self, objective) -> None:
        self.objective = objective
        self.value_and_grad = objective.value_and_grad

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.objective(x)


def test_tiled_objective_repeats_its_rows():
    critic = random_critic(4, 2, 5)
    obs, a = torch.randn(6, 4), torch.rand(6, 2) * 2 - 1
    objective = critic.action_objective(obs)
    tiled = objective.tile(3)
    v, g = tiled.value_and_grad(a.repeat(3, 1))
    v1, g1 = objective.value_and_grad(a)
    torch.testing.assert_close(v, v1.repeat(3))
    torch.testing.assert_close(g, g1.repeat(3, 1))
    # another action for each block: block k is row i's objective at the k-th action
    b = torch.rand(18, 2) * 2 - 1
    torch.testing.assert_close(tiled(b), torch.cat([objective(part) for part in b.split(6)]))


@pytest.mark.parametrize("start", ["fgsm", "random"])
@pytest.mark.parametrize("restarts", [2, 3])
def test_restarts_in_one_batch_find_what_they_find_one_after_the_other(start, restarts):
    # A wiggly critic (tanh, narrow), so that restarts land in different local minima and the best one
    # has to be picked per row: any mix-up of rows between restarts or blocks changes the answer.
    torch.manual_seed(7)
    critic = TwinCritic(4, 3, [16, 16], "tanh").requires_grad_(False)
    for layer in (critic.q1[0], critic.q2[0]):
        layer.weight.mul_(6.0)
    obs, a = torch.randn(200, 4), torch.rand(200, 3) * 2 - 1
    objective = critic.action_objective(obs)
    batched = pgd_minimize(objective, a, 0.3, 4, restarts=restarts, start=start, return_value=True,
                           generator=torch.Generator().manual_seed(1))
    serial = pgd_minimize(UntiledObjective(objective), a, 0.3, 4, restarts=restarts, start=start, return_value=True,
                          generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(batched, serial, rtol=1e-5, atol=1e-6)
    single = pgd_minimize(objective, a, 0.3, 4, restarts=1, start=start, return_value=True,
                          generator=torch.Generator().manual_seed(1))[1]
    assert (serial[1] < single - 1e-4).float().mean() > 0.05  # the restarts matter on this critic


def test_unsupported_activation_is_refused_by_the_objective():
    critic = TwinCritic(3, 2, [8], "elu")
    with pytest.raises(ValueError, match="ReLU and tanh"):
        critic.action_objective(torch.randn(4, 3))


def test_fgsm_start_finds_the_worst_corner_of_a_linear_objective_without_steps():
    w = torch.tensor([1.0, -2.0, 0.5])
    a = torch.tensor([[0.0, 0.0, 0.0], [0.95, -0.95, 0.2]])
    x, v = pgd_minimize(lambda x: x @ w, a, 0.1, 0, start="fgsm", return_value=True)
    expected = torch.tensor([[-0.1, 0.1, -0.1], [0.85, -0.85, 0.1]])
    torch.testing.assert_close(x, expected)
    torch.testing.assert_close(v, expected @ w)


def test_fgsm_start_needs_its_random_restart_for_a_cliff_the_gradient_points_away_from():
    # A smoothed ledge, like a learned critic of Ledge: the value rises with the action and falls off
    # a cliff at 0.5. From a = 0.35 the gradient says "go down" (the FGSM corner is 0.15); the worst point
    # is over the cliff. The FGSM restart alone never finds it; with a random restart beside it, the
    # same budget of gradient steps finds it at least as often as random starts do.
    def ledge(x: torch.Tensor) -> torch.Tensor:
        a = x[:, 0]
        return a - 1.5 * torch.sigmoid((a - 0.5) / 0.03)

    a = torch.full((4000, 1), 0.35)
    runs = {"fgsm alone": dict(steps=6, restarts=1, start="fgsm"),
            "fgsm + random": dict(steps=3, restarts=2, start="fgsm"),
            "random": dict(steps=6, restarts=1, start="random")}
    found = {}
    for name, kw in runs.items():
        _, v = pgd_minimize(ledge, a, 0.2, return_value=True, generator=torch.Generator().manual_seed(0), **kw)
        found[name] = float((v < 0).float().mean())
    assert found["fgsm alone"] == 0.0, found
    assert found["fgsm + random"] >= found["random"] - 0.03, found
    assert found["fgsm + random"] > 0.3, found


def test_screened_start_finds_the_cliff_in_every_row():
    # The same smoothed ledge: the gradient points away from the cliff, so fgsm + random finds it in
    # some rows only; screening the box (its corner 0.55 is over the cliff) finds it in all of them.
    def ledge(x: torch.Tensor) -> torch.Tensor:
        a = x[:, 0]
        return a - 1.5 * torch.sigmoid((a - 0.5) / 0.03)

    a = torch.full((4000, 1), 0.35)
    _, v = pgd_minimize(ledge, a, 0.2, 3, restarts=2, start="screen", return_value=True,
                        generator=torch.Generator().manual_seed(0))
    assert bool((v < 0).all())


@pytest.mark.parametrize("act_dim", [2, 7])  # with and without the box corners among the candidates
def test_screened_start_is_never_worse_than_its_candidates_and_stays_in_the_box(act_dim):
    torch.manual_seed(3)
    critic = TwinCritic(4, act_dim, [16, 16], "tanh").requires_grad_(False)
    obs = torch.randn(300, 4)
    a = (torch.rand(300, act_dim) * 2.4 - 1.2).clamp(-1, 1)
    objective = critic.action_objective(obs)
    x, v = pgd_minimize(objective, a, 0.3, 3, restarts=2, start="screen", return_value=True,
                        generator=torch.Generator().manual_seed(1))
    assert (x - a).abs().max() <= 0.3 + 1e-6 and x.abs().max() <= 1.0
    torch.testing.assert_close(v, objective(x))
    assert bool((v <= objective(a) + 1e-6).all())  # the clean action is a candidate
    # The same answer through an objective without tile (one call per candidate).
    serial = pgd_minimize(UntiledObjective(objective), a, 0.3, 3, restarts=2, start="screen", return_value=True,
                          generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close((x, v), serial, rtol=1e-5, atol=1e-6)


def test_worst_case_never_exceeds_the_clean_value_and_matches_pgd_where_pgd_scores_the_clean_action():
    """The OA inner minimisation: a random start that finds nothing better keeps the clean action; with
    the fgsm start (OA-TD3's default) it is pgd_minimize's own result, bit for bit."""
    critic = random_critic(3, 2, seed=4)
    g = torch.Generator().manual_seed(0)
    obs = torch.randn(512, 3, generator=g)
    a = torch.rand(512, 2, generator=g) * 2 - 1
    f = critic.action_objective(obs)
    clean = f(a)
    # One random start and no steps: a random point of the box, above the clean value in many rows.
    x_pgd, v_pgd = pgd_minimize(f, a, 0.3, 0, generator=torch.Generator().manual_seed(1), return_value=True)
    assert (v_pgd > clean).float().mean() > 0.2  # the case worst_case exists for
    x, v = worst_case(f, a, 0.3, 0, generator=torch.Generator().manual_seed(1))
    assert torch.all(v <= clean) and torch.all(v <= v_pgd)
    kept = v_pgd > clean
    assert torch.equal(x[kept], a[kept]) and torch.equal(x[~kept], x_pgd[~kept])
    assert torch.allclose(f(x), v)
    x_f, v_f = pgd_minimize(f, a, 0.3, 2, restarts=2, start="fgsm", generator=torch.Generator().manual_seed(2),
                            return_value=True)
    x_w, v_w = worst_case(f, a, 0.3, 2, restarts=2, start="fgsm", generator=torch.Generator().manual_seed(2))
    assert torch.equal(x_f, x_w) and torch.equal(v_f, v_w)
