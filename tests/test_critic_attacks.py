"""Min-Q / Min-OA-Q: they find the critic's minimum in the box, keep the threat model, and work on real policies."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import write_constant_ledge_policy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from robustbench_rl.attacks import list_attacks, make_attack
from robustbench_rl.attacks.base import check_bound
from robustbench_rl.attacks.critic import critic_gradient_stats
from robustbench_rl.attacks.fit import FitConfig
from robustbench_rl.attacks.pgd import feasible_box
from robustbench_rl.attacks.registry import make_policy_attack
from robustbench_rl.attacks.sanity import format_flags, sanity_flags
from robustbench_rl.networks import TwinCritic
from robustbench_rl.policy import load_policy
from robustbench_rl.rollout import evaluate

ALL = ["none", "random", "biggest", "min-q", "min-oa-q"]
TINY_FIT = FitConfig(steps=300, transitions=400, hidden=(32, 32), num_envs=4)


def quadratic_critic(obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
    """Q(s, a) = ||a - c(s)||^2 with the target c(s) = the observation: argmin = c projected onto the box."""
    return ((act - obs) ** 2).sum(-1)


def attack_for(name: str, critic=None, **kw):
    return make_attack(name, critic=critic, **kw) if name in ("min-q", "min-oa-q") else make_attack(name)


def test_registry_has_the_full_attack_set():
    assert list_attacks()[:5] == ALL
    with pytest.raises(ValueError, match="needs a critic"):
        make_attack("min-q")
    with pytest.raises(ValueError, match=r"min-q: PGD steps must be an integer >= 1, got 0"):
        make_attack("min-q", critic=quadratic_critic, steps=0)
    with pytest.raises(ValueError, match=r"min-oa-q: PGD restarts must be an integer >= 1, got 0"):
        make_attack("min-oa-q", critic=quadratic_critic, restarts=0)


@pytest.mark.parametrize("name", ["min-q", "min-oa-q"])
@pytest.mark.parametrize("act_dim", [1, 3])
def test_attack_finds_the_argmin_of_an_analytic_critic(name, act_dim):
    gen = torch.Generator().manual_seed(act_dim)
    act = torch.rand(512, act_dim, generator=gen) * 2 - 1
    target = torch.rand(512, act_dim, generator=gen) * 3 - 1.5  # often outside the box and outside [-1, 1]
    eps, steps = 0.3, 20
    attack = make_attack(name, critic=quadratic_critic, steps=steps)
    out = attack.perturb(target, act, eps, torch.Generator().manual_seed(0))
    lo, hi = feasible_box(act, eps)
    best = torch.minimum(torch.maximum(target, lo), hi)  # exact argmin: the projection of the target
    check_bound(act, out, eps)
    # sign steps of 2.5 eps / steps land within one step of the optimum on every coordinate
    assert (out - best).abs().max().item() <= 2.5 * eps / steps + 1e-6


@pytest.mark.parametrize("act_dim,grid", [(1, 401), (2, 81)])
def test_attack_matches_brute_force_minimum_of_a_small_mlp_critic(act_dim, grid):
    torch.manual_seed(11)
    net = TwinCritic(3, act_dim, [32, 32]).requires_grad_(False)
    obs = torch.randn(200, 3)
    act = torch.rand(200, act_dim) * 2 - 1
    eps = 0.25
    # a random twin critic is far from convex in the box: one start ends in a local minimum in ~15% of
    # rows, so this also checks that the attack's restarts reach the engine
    attack = make_attack("min-q", critic=net.min_q, steps=20, restarts=8)
    out = attack.perturb(obs, act, eps, torch.Generator().manual_seed(1))
    check_bound(act, out, eps)
    lo, hi = feasible_box(act, eps)
    t = torch.linspace(0, 1, grid)
    mesh = torch.stack(torch.meshgrid(*[t] * act_dim, indexing="ij"), -1).reshape(-1, act_dim)  # (G, d)
    cand = lo[:, None] + (hi - lo)[:, None] * mesh[None]  # (B, G, d)
    vals = net.min_q(obs[:, None].expand(-1, len(mesh), -1).reshape(-1, 3), cand.reshape(-1, act_dim))
    vals = vals.reshape(len(obs), -1)
    grid_min, grid_max = vals.min(1).values, vals.max(1).values
    found = net.min_q(obs, out)
    ok = found <= grid_min + 0.01 * (grid_max - grid_min) + 1e-6
    assert ok.float().mean().item() >= 0.95


@pytest.mark.parametrize("name", ALL)
def test_eps_zero_is_the_nominal_action_bit_for_bit(name):
    act = torch.rand(64, 3) * 2 - 1
    act[0] = torch.tensor([1.0, -1.0, 0.0])
    obs = torch.randn(64, 3)
    attack = attack_for(name, quadratic_critic)
    out = attack.perturb(obs, act, 0.0, torch.Generator().manual_seed(0))
    assert torch.equal(out, act)
    assert out.data_ptr() != act.data_ptr()  # a copy: the caller's action is never aliased


@pytest.mark.parametrize("name", ALL)
def test_eps_zero_through_evaluate_returns_nominal_returns(name, random_checkpoint):
    policy = load_policy(str(random_checkpoint("Hopper-v5", critics=("critic", "critic_adv"))))
    attack, _ = make_policy_attack(policy, name, critic="own")
    kw = {"episodes": 3, "seed": 4, "num_envs": 2, "max_episode_steps": 30}
    nominal = evaluate(policy, "none", 0.0, **kw)
    attacked = evaluate(policy, attack, 0.0, **kw)
    assert np.array_equal(nominal.returns, attacked.returns)
    assert np.array_equal(nominal.lengths, attacked.lengths)


class Recorder:
    """Wraps an attack and keeps every (action, perturbed action) pair the rollout asked for."""

    def __init__(self, inner):
        self.inner, self.name, self.needs_critic = inner, inner.name, inner.needs_critic
        self.pairs: list[tuple[torch.Tensor, torch.Tensor]] = []

    def perturb(self, obs, act, eps, generator=None):
        out = self.inner.perturb(obs, act, eps, generator)
        self.pairs.append((act.clone(), out.clone()))
        return out


@pytest.fixture(scope="module")
def hopper_policy(tmp_path_factory):
    from conftest import write_random_checkpoint

    path = write_random_checkpoint(tmp_path_factory.mktemp("hop") / "hop.safetensors", env_id="Hopper-v5",
                                   critics=("critic", "critic_adv"), seed=2)
    return load_policy(str(path))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(ALL), eps=st.sampled_from([0.0, 1e-4, 0.05, 0.3, 1.0, 2.0]) | st.floats(0, 2),
       seed=st.integers(0, 1000), num_envs=st.integers(1, 4), steps=st.integers(1, 8))
def test_bound_and_clip_hold_for_every_attack_through_evaluate(hopper_policy, name, eps, seed, num_envs, steps):
    inner = (make_policy_attack(hopper_policy, name, critic="own", pgd_steps=steps)[0])
    rec = Recorder(inner)
    evaluate(hopper_policy, rec, eps, episodes=3, seed=seed, num_envs=num_envs, max_episode_steps=6)
    assert rec.pairs
    for act, out in rec.pairs:
        assert out.shape == act.shape
        assert (out - act).abs().max().item() <= eps + 1e-6
        assert out.abs().max().item() <= 1.0


@settings(max_examples=25, deadline=None)
@given(name=st.sampled_from(["min-q", "min-oa-q"]), eps=st.floats(0, 2), d=st.integers(1, 4),
       seed=st.integers(0, 10_000), restarts=st.integers(1, 3), step_size=st.none() | st.floats(1e-3, 1.0))
def test_bound_and_clip_on_actions_at_the_box_edges(name, eps, d, seed, restarts, step_size):
    gen = torch.Generator().manual_seed(seed)
    act = (torch.rand(16, d, generator=gen) * 2 - 1)
    act[: 16 // 2] = act[: 16 // 2].sign()  # half the rows sit exactly on the box faces
    obs = torch.randn(16, d, generator=gen) * 2
    attack = make_attack(name, critic=quadratic_critic, steps=5, restarts=restarts, step_size=step_size)
    out = attack.perturb(obs, act, eps, gen)
    check_bound(act, out, eps)


def test_same_generator_seed_gives_the_same_perturbation_and_rows_are_independent():
    torch.manual_seed(0)
    net = TwinCritic(2, 2, [16]).requires_grad_(False)
    obs, act = torch.randn(10, 2), torch.rand(10, 2) * 2 - 1
    attack = make_attack("min-q", critic=net.min_q, steps=10)
    a = attack.perturb(obs, act, 0.2, torch.Generator().manual_seed(5))
    b = attack.perturb(obs, act, 0.2, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    torch.manual_seed(123)  # the global RNG plays no part
    c = attack.perturb(obs, act, 0.2, torch.Generator().manual_seed(5))
    assert torch.equal(a, c)


def test_min_q_with_td3s_own_critic_pushes_a_ledge_policy_over_the_ledge(ledge_td3_policy):
    policy = load_policy(str(ledge_td3_policy))
    nominal_action = policy.act(torch.zeros(1, 1)).item()
    assert 0.3 < nominal_action <= 0.5  # TD3 learned to stand near the ledge
    kw = {"episodes": 8, "seed": 0, "num_envs": 4}
    assert evaluate(policy, "none", 0.0, **kw).mean > 0.3
    # Ledge's critic has two local minima in the eps box: the left edge (Q ~ a) and the far side of the
    # ledge (Q ~ -1); a start left of the peak descends to the left edge, so restarts decide.
    attack, source = make_policy_attack(policy, "min-q", critic="auto", restarts=8)
    assert source == "own"
    attacked = evaluate(policy, attack, 0.2, **kw)
    assert np.all(attacked.returns == -1.0), attacked.returns  # every executed action went past 0.5
    one_start, _ = make_policy_attack(policy, "min-q", critic="auto")
    default = evaluate(policy, one_start, 0.2, **kw)
    assert np.mean(default.returns == -1.0) >= 0.25  # a single start still finds the ledge often
    # the critic-free attacks are weaker here: random rarely reaches the ledge, biggest pushes left
    assert evaluate(policy, make_attack("random"), 0.2, **kw).mean > default.mean
    assert evaluate(policy, make_attack("biggest"), 0.2, **kw).mean > attacked.mean


def test_min_q_with_a_fitted_critic_pushes_a_handmade_ledge_policy_over(tmp_path):
    policy = load_policy(str(write_constant_ledge_policy(tmp_path / "ledge.safetensors", 0.45)))
    config = FitConfig(steps=1000, transitions=2000, hidden=(64, 64), num_envs=16, pgd_steps=2)
    for name in ("min-q", "min-oa-q"):
        attack, source = make_policy_attack(policy, name, critic="auto", restarts=8, cache_dir=tmp_path / "cache",
                                            fit_config=config)
        assert source == "fitted"
        out = evaluate(policy, attack, 0.2, episodes=8, seed=0, num_envs=8)
        assert np.all(out.returns == -1.0), (name, out.returns)


def test_make_policy_attack_sources_and_errors(random_checkpoint, tmp_path):
    q_only = load_policy(str(random_checkpoint("Pendulum-v1", critics=("critic",))))
    att, src = make_policy_attack(q_only, "biggest", critic="own")
    assert (att.name, src) == ("biggest", "none")
    att, src = make_policy_attack(q_only, "min-q", critic="own", pgd_steps=7, restarts=2, step_size=0.01)
    assert (att.name, src, att.steps, att.restarts, att.step_size) == ("min-q", "own", 7, 2, 0.01)
    assert att.critic is q_only.critics["q"]
    with pytest.raises(ValueError, match="--critic fitted"):
        make_policy_attack(q_only, "min-oa-q", critic="own")
    with pytest.raises(ValueError, match="critic source"):
        make_policy_attack(q_only, "min-q", critic="mine")
    with pytest.raises(ValueError, match="unknown attack"):
        make_policy_attack(q_only, "max-q")
    att, src = make_policy_attack(q_only, "min-oa-q", critic="auto", cache_dir=tmp_path, fit_config=TINY_FIT)
    assert src == "fitted" and att.critic.kind == "oa-q"
    att, src = make_policy_attack(q_only, "min-q", critic="fitted", cache_dir=tmp_path, fit_config=TINY_FIT)
    assert src == "fitted" and att.critic.kind == "q"


def test_second_request_for_a_fitted_critic_is_free(random_checkpoint, tmp_path, monkeypatch):
    import robustbench_rl.attacks.critic_cache as fit  # where get_fitted_critic calls fit_critic

    policy = load_policy(str(random_checkpoint("Pendulum-v1", critics=())))
    calls = []
    real = fit.fit_critic
    monkeypatch.setattr(fit, "fit_critic", lambda *a, **k: calls.append(1) or real(*a, **k))
    a1, _ = make_policy_attack(policy, "min-q", cache_dir=tmp_path, fit_config=TINY_FIT)
    a2, _ = make_policy_attack(policy, "min-q", cache_dir=tmp_path, fit_config=TINY_FIT)
    assert len(calls) == 1
    obs, act = torch.randn(5, 3), torch.rand(5, 1) * 2 - 1
    assert torch.equal(a1.critic(obs, act), a2.critic(obs, act))


def test_critic_gradient_stats_tell_flat_from_informative_critics():
    obs, act = torch.randn(100, 3), torch.rand(100, 2) * 2 - 1
    flat = critic_gradient_stats(lambda o, a: 0.0 * a.sum(-1) + o.sum(-1), obs, act)
    assert flat["frac_zero"] == 1.0 and flat["states"] == 100
    torch.manual_seed(0)
    net = TwinCritic(3, 2, [16]).requires_grad_(False)
    live = critic_gradient_stats(net.min_q, obs, act)
    assert live["frac_zero"] < 0.05 and live["median_grad"] > 0


def _table(cells: dict[tuple[str, str, float], list[float]], policy: str = "p") -> pd.DataFrame:
    rows = [{"policy": policy, "attack": a, "critic_source": s, "eps": e, "return": r}
            for (a, s, e), rets in cells.items() for r in rets]
    return pd.DataFrame(rows)


def test_sanity_flags_fire_on_suspicious_tables_only():
    rng = np.random.default_rng(0)

    def noisy(m):
        return list(m + rng.normal(0, 1.0, 20))

    healthy = _table({("none", "none", 0.0): noisy(100), ("random", "none", 0.1): noisy(95),
                      ("random", "none", 0.2): noisy(90), ("min-q", "own", 0.1): noisy(70),
                      ("min-q", "own", 0.2): noisy(40)})
    assert sanity_flags(healthy) == []
    assert format_flags([]) == "sanity flags: none"

    weak = _table({("none", "none", 0.0): noisy(100), ("biggest", "none", 0.1): noisy(60),
                   ("min-q", "fitted", 0.1): noisy(90)})
    flags = sanity_flags(weak)
    assert [(f.check, f.attack, f.eps) for f in flags] == [("critic_free_beats_critic", "min-q", 0.1)]
    assert "biggest" in flags[0].message and "fitted" in flags[0].message

    rising = _table({("none", "none", 0.0): noisy(100), ("random", "none", 0.1): noisy(80),
                     ("random", "none", 0.2): noisy(95)})
    flags = sanity_flags(rising)
    assert [(f.check, f.attack, f.eps) for f in flags] == [("return_rises_with_eps", "random", 0.2)]

    # differences inside the noise are not flagged
    base = rng.normal(100, 30, 10)  # sample std ~30, so the standard error of a difference is ~13
    noisy_tab = _table({("none", "none", 0.0): list(base), ("random", "none", 0.1): list(base - 10),
                        ("min-q", "own", 0.1): list(base[::-1] + 5)})
    assert sanity_flags(noisy_tab) == []

    # one policy evaluated on two envs: each env is its own comparison
    two_envs = pd.concat([
        _table({("none", "none", 0.0): noisy(100), ("random", "none", 0.1): noisy(50)}).assign(env_id="A"),
        _table({("none", "none", 0.0): noisy(100), ("min-q", "own", 0.1): noisy(90)}).assign(env_id="B"),
    ])
    assert sanity_flags(two_envs) == []

    grad = {("p", "min-q", "own"): {"frac_zero": 0.9, "states": 256},
            ("p", "min-oa-q", "fitted"): {"frac_zero": 0.0, "states": 256}}
    flags = sanity_flags(healthy, grad)
    assert [(f.check, f.attack) for f in flags] == [("zero_critic_gradient", "min-q")]
    assert "90%" in str(flags[0]) and "sanity flags (1)" in format_flags(flags)


def test_a_screened_attack_takes_its_sample_count_and_stays_in_the_box():
    critic = TwinCritic(3, 2, [16, 16])
    view = lambda obs, act: critic.min_q(obs, act)  # noqa: E731
    gen = torch.Generator().manual_seed(0)
    obs, act = torch.randn(32, 3, generator=gen), torch.rand(32, 2, generator=gen) * 2 - 1
    few = make_attack("min-q", critic=view, start="screen", screen=8)
    out = few.perturb(obs, act, 0.2, torch.Generator().manual_seed(1))
    check_bound(act, out, 0.2)
    assert few.screen == 8 and view(obs, out).mean() < view(obs, act).mean()
    with pytest.raises(ValueError, match="screened samples must be an integer >= 0"):
        make_attack("min-q", critic=view, start="screen", screen=-1)


def test_sanity_flag_messages_show_the_difference_they_report():
    # 0.398 vs 0.438 with no noise: one decimal place would print "0.4 beats 0.4".
    close = _table({("none", "none", 0.0): [1.0] * 10, ("biggest", "none", 0.1): [0.398] * 10,
                    ("min-q", "own", 0.1): [0.438] * 10})
    (flag,) = sanity_flags(close)
    assert "mean 0.398" in flag.message and "mean 0.438" in flag.message
    far = _table({("none", "none", 0.0): [1000.0] * 10, ("biggest", "none", 0.3): [271.0] * 10,
                  ("min-q", "fitted", 0.3): [1000.0] * 10})
    (flag,) = sanity_flags(far)
    assert "mean 271" in flag.message and "mean 1000)" in flag.message and "e+" not in flag.message


def test_default_pgd_is_no_weaker_than_20_cold_steps_and_costs_fewer_gradients():
    # The attacks' default (2 starts: FGSM corner + random, 5 steps each) replaced 20 steps from one
    # random start. On random twin critics (non-convex, several local minima in the box) it must find
    # values at least as low on average, with fewer critic gradient evaluations.
    from robustbench_rl.attacks.critic import DEFAULT_PGD_RESTARTS, DEFAULT_PGD_START, DEFAULT_PGD_STEPS
    from robustbench_rl.attacks.pgd import pgd_minimize

    class Counting:
        def __init__(self, objective):
            self.objective, self.grads = objective, 0

        def __call__(self, x):
            return self.objective(x)

        def value_and_grad(self, x):
            self.grads += 1
            return self.objective.value_and_grad(x)

    found = {"default": [], "cold20": []}
    grads = {}
    for seed in range(4):
        torch.manual_seed(seed)
        critic = TwinCritic(6, 3, [64, 64]).requires_grad_(False)
        obs, act = torch.randn(512, 6), torch.rand(512, 3) * 2 - 1
        for name, kw in (("default", dict(steps=DEFAULT_PGD_STEPS, restarts=DEFAULT_PGD_RESTARTS, start=DEFAULT_PGD_START)),
                         ("cold20", dict(steps=20, restarts=1, start="random"))):
            objective = Counting(critic.action_objective(obs))
            _, v = pgd_minimize(objective, act, 0.3, return_value=True, generator=torch.Generator().manual_seed(seed), **kw)
            found[name].append(float(v.mean()))
            grads[name] = objective.grads
    assert np.mean(found["default"]) <= np.mean(found["cold20"]) + 1e-4, found
    assert grads["default"] < grads["cold20"], grads
