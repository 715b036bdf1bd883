"""evaluate(): exact episode counts and seeds, determinism, the bound assertion."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robustbench_rl.attacks import ThreatModelViolation, make_attack
from robustbench_rl.policy import load_policy
from robustbench_rl.rollout import episode_seed, evaluate


@pytest.fixture
def hopper_policy(random_checkpoint):
    return load_policy(str(random_checkpoint("Hopper-v5")))


@pytest.mark.parametrize("num_envs", [1, 3, 8, 20])
def test_exactly_n_episodes_with_their_own_seeds(hopper_policy, num_envs):
    res = evaluate(hopper_policy, "none", 0.0, episodes=7, seed=100, num_envs=num_envs)
    assert len(res.returns) == len(res.lengths) == 7
    assert list(res.episode_seeds) == [100 * 2**20 + i for i in range(7)]
    assert (res.lengths > 0).all()


def test_deterministic_attack_results_do_not_depend_on_num_envs(hopper_policy):
    # episode i is always reset with episode_seed(seed, i), so nominal and biggest results are slot-independent
    # (up to float32 rounding: a different batch size changes the matmul's summation order)
    for attack in (None, make_attack("biggest")):
        a = evaluate(hopper_policy, attack, 0.1, episodes=6, seed=3, num_envs=1)
        b = evaluate(hopper_policy, attack, 0.1, episodes=6, seed=3, num_envs=4)
        np.testing.assert_allclose(a.returns, b.returns, rtol=1e-5)
        np.testing.assert_array_equal(a.lengths, b.lengths)


def test_attacks_are_objects_and_none_is_the_nominal_policy(hopper_policy):
    kw = {"episodes": 2, "seed": 0, "num_envs": 2, "max_episode_steps": 5}
    nominal = evaluate(hopper_policy, None, 0.0, **kw)
    assert nominal.attack == "none" and np.array_equal(nominal.returns, evaluate(hopper_policy, "none", 0.0, **kw).returns)
    with pytest.raises(TypeError, match=r"make_attack\('random'\)"):
        evaluate(hopper_policy, "random", 0.1, **kw)


def test_same_seed_same_numbers_and_different_seed_differs(hopper_policy):
    a = evaluate(hopper_policy, make_attack("random"), 0.3, episodes=5, seed=7, num_envs=2)
    b = evaluate(hopper_policy, make_attack("random"), 0.3, episodes=5, seed=7, num_envs=2)
    c = evaluate(hopper_policy, make_attack("random"), 0.3, episodes=5, seed=8, num_envs=2)
    np.testing.assert_array_equal(a.returns, b.returns)
    assert not np.array_equal(a.returns, c.returns)


def test_short_episodes_do_not_bias_the_sample():
    """With a policy whose episode length depends on the seed, the N episodes are exactly seeds 0..N-1."""
    class SeedEcho:
        name, env_id, obs_dim, act_dim, critics = "zero", "InvertedPendulum-v5", 4, 1, {}

        def act(self, obs):
            return torch.zeros(obs.shape[0], 1)

    ref = evaluate(SeedEcho(), "none", 0.0, episodes=12, seed=0, num_envs=1).returns  # one by one, in order
    batched = evaluate(SeedEcho(), "none", 0.0, episodes=12, seed=0, num_envs=5).returns
    np.testing.assert_array_equal(batched, ref)


def test_attack_violating_the_bound_is_caught(hopper_policy):
    class Cheater:
        name, needs_critic = "cheater", None

        def perturb(self, obs, act, eps, generator=None):
            return (act + 2 * eps).clamp(-1, 1)

    with pytest.raises(ThreatModelViolation, match=r"moved the action by 0\.2 > eps 0\.1"):
        evaluate(hopper_policy, Cheater(), 0.1, episodes=1, seed=0, num_envs=1)


def test_perturbation_reaches_the_env():
    """On Ledge (reward = executed action), the return is the attacked action, not the policy's."""

    class Half:
        name, env_id, obs_dim, act_dim, critics = "half", "rbrl/Ledge-v0", 1, 1, {}

        def act(self, obs):
            return torch.full((obs.shape[0], 1), 0.45)

    nominal = evaluate(Half(), "none", 0.0, episodes=3, seed=0, num_envs=3).returns
    pushed = evaluate(Half(), make_attack("biggest"), 0.2, episodes=3, seed=0, num_envs=3).returns
    np.testing.assert_allclose(nominal, 0.45, atol=1e-6)
    np.testing.assert_allclose(pushed, 0.25, atol=1e-6)  # biggest pushes a > 0 towards -1


def test_episode_seeds_of_different_eval_seeds_never_overlap():
    seeds = [set(episode_seed(s, np.arange(1000)).tolist()) for s in (0, 1, 2, 2**32 - 1)]
    assert sum(len(x) for x in seeds) == len(set().union(*seeds)) == 4000
    assert episode_seed(0, 5) == 5  # eval seed 0 keeps the seeds 0, 1, 2, ...


@pytest.mark.parametrize("kw, message", [
    ({"episodes": 0}, "episodes must be >= 1, got 0"),
    ({"num_envs": 0}, "num_envs must be >= 1, got 0"),
    ({"seed": -1}, r"eval seed must be an integer in \[0, 4294967295\], got -1"),
    ({"seed": 2**70}, r"eval seed must be an integer in \[0, 4294967295\], got 1180591620717411303424"),
    ({"seed": 1.5}, r"eval seed must be an integer in \[0, 4294967295\], got 1\.5"),
    ({"episodes": 2**20 + 1}, "episodes must be <= 1048576 per eval seed, got 1048577"),
])
def test_bad_arguments(hopper_policy, kw, message):
    args = {"episodes": 2, "seed": 0, "num_envs": 1, **kw}
    with pytest.raises(ValueError, match=message):
        evaluate(hopper_policy, "none", 0.0, **args)


def test_a_checkpoint_env_module_is_imported_only_when_the_user_names_it(tmp_path, monkeypatch):
    import sys

    from robustbench_rl.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
    from tests.conftest import write_random_checkpoint

    flag = tmp_path / "imported"
    (tmp_path / "rbrl_planted_mod.py").write_text(f"import pathlib\npathlib.Path({str(flag)!r}).write_text('ran')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "rbrl_planted_mod", raising=False)
    path = write_random_checkpoint(tmp_path / "p.safetensors", hidden=(4,))
    tensors, meta = load_checkpoint(path)
    save_checkpoint(path, tensors, {**meta, "env_id": "rbrl_planted_mod:Pendulum-v1"})
    with pytest.raises(CheckpointError, match=r"will not import on a file.s say-so; pass --env rbrl_planted_mod:Pendulum-v1"):
        evaluate(load_policy(str(path)), "none", 0.0, episodes=1, seed=0, max_episode_steps=2)
    assert not flag.exists()
    named = load_policy(str(path), env_id="rbrl_planted_mod:Pendulum-v1")
    assert evaluate(named, "none", 0.0, episodes=1, seed=0, max_episode_steps=2).returns.shape == (1,)
    assert flag.exists()
