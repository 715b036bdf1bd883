"""The lookahead attack: exact simulator copies, damage where planning sees it, seeds, bound, refusals."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import write_constant_ledge_policy
from gymnasium import spaces

from robustbench_rl.attacks.lookahead import LookaheadAttack, steps_left
from robustbench_rl.attacks.registry import attack_option_names, make_policy_attack
from robustbench_rl.envs import get_sim_state, make_env, set_sim_state, sim_state_kind
from robustbench_rl.errors import EnvError
from robustbench_rl.policy import load_policy
from robustbench_rl.rollout import evaluate
from robustbench_rl.threat import check_bound


class NoStateEnv(gym.Env):
    """Ledge's spaces without a way to save its state."""

    def __init__(self) -> None:
        self.observation_space = spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        raise AssertionError("the refusal must come before the first reset")

    def step(self, action):
        raise AssertionError("never stepped")


if "rbrl-test/NoState-v0" not in gym.registry:
    gym.register(id="rbrl-test/NoState-v0", entry_point=NoStateEnv, max_episode_steps=1)


@pytest.fixture
def ledge_policy(tmp_path):
    """A Ledge policy acting 0.45 everywhere: 0.05 from the cliff."""
    return load_policy(str(write_constant_ledge_policy(tmp_path / "ledge.safetensors", 0.45)))


@pytest.mark.parametrize("env_id", ["InvertedPendulum-v5", "Hopper-v5", "Ant-v5"])
def test_a_restored_copy_continues_exactly_like_the_live_env(env_id):
    # Ant's reward reads contact forces left over in MjData: a state vector alone would not continue it
    live, copy = make_env(env_id), make_env(env_id)
    live.reset(seed=3)
    copy.reset(seed=99)
    rng = np.random.default_rng(0)
    for _ in range(15):
        live.step(rng.uniform(-1, 1, live.action_space.shape).astype(np.float32))
    snap = get_sim_state(live)
    actions = rng.uniform(-1, 1, (5, *live.action_space.shape)).astype(np.float32)
    expected = [live.step(a)[:3] for a in actions]
    for _ in range(2):  # the snapshot survives being restored
        set_sim_state(copy, snap)
        for a, (obs, reward, terminated) in zip(actions, expected, strict=True):
            o, r, term, _, _ = copy.step(a)
            assert np.array_equal(o, obs) and r == reward and term == terminated
    assert sim_state_kind(live) == "mujoco"


@pytest.mark.parametrize("spec,env_id", [("zoo:invpend-td3-s0", "InvertedPendulum-v5"), ("zoo:hopper-td3-s0", "Hopper-v5")])
def test_the_planned_one_step_return_is_the_live_envs_reward(spec, env_id):
    # horizon 1, gamma 1: the best plan's simulated return is the reward of the action perturb returns,
    # through the same wrappers (InvertedPendulum's actions are rescaled onto [-3, 3], Hopper's are not)
    policy = load_policy(spec)
    live = make_env(env_id)
    obs, _ = live.reset(seed=1)
    attack = LookaheadAttack(policy, horizon=1, samples=8, iterations=1, gamma=1.0)
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        obs_t = torch.from_numpy(np.asarray(obs, dtype=np.float32))[None]
        act = policy.act(obs_t)
        attack.attach([live])
        out = attack.perturb(obs_t, act, 0.3, gen)
        check_bound(act, out, 0.3)
        obs, reward, *_ = live.step(out.numpy()[0])
        assert reward == attack.last_returns[0]


def test_lookahead_pushes_a_ledge_policy_over_the_ledge_every_time(ledge_policy):
    # the default 16 samples of the first round miss the far side of the ledge (delta > 0.05) with
    # probability 0.625**16 < 0.001; a round that misses it moves towards the left edge instead
    attack, source = make_policy_attack(ledge_policy, "lookahead", options={"horizon": 2})
    assert source == "none" and attack.horizon == 2 and attack.samples == 16
    res = evaluate(ledge_policy, attack, 0.2, episodes=20, seed=0, num_envs=4)
    assert (res.returns == -1.0).all()
    noise = evaluate(ledge_policy, make_policy_attack(ledge_policy, "random")[0], 0.2, episodes=20, seed=0)
    assert (noise.returns > -1.0).sum() >= 5  # random noise often stays on the ledge


def test_lookahead_with_a_value_at_the_horizon_runs_inside_the_bound(tmp_path):
    policy = load_policy(str(write_constant_ledge_policy(tmp_path / "q.safetensors", 0.45, critics=("critic",))))
    attack = LookaheadAttack(policy, horizon=3, critic="q")
    res = evaluate(policy, attack, 0.2, episodes=6, seed=1, num_envs=3)
    assert (res.returns == -1.0).all()  # Ledge ends after one step: the critic is never consulted


def test_lookahead_beats_random_noise_on_inverted_pendulum_and_is_seeded():
    policy = load_policy("zoo:invpend-td3-s0")
    kw = {"episodes": 4, "num_envs": 4, "max_episode_steps": 200}
    noise = evaluate(policy, make_policy_attack(policy, "random")[0], 0.3, seed=0, **kw)
    attack = LookaheadAttack(policy, horizon=3, samples=8, iterations=1)
    first = evaluate(policy, attack, 0.3, seed=0, **kw)
    again = evaluate(policy, attack, 0.3, seed=0, **kw)  # the same attack object: no state carried over
    assert np.array_equal(first.returns, again.returns)
    assert first.mean < noise.mean - 30  # about 130 against 200 (random never topples it at this eps)


def test_the_bound_holds_where_the_box_meets_the_clip():
    policy = load_policy("zoo:invpend-td3-s0")
    env = make_env("InvertedPendulum-v5")
    obs, _ = env.reset(seed=0)
    obs_t = torch.from_numpy(np.asarray(obs, dtype=np.float32))[None]
    attack = LookaheadAttack(policy, horizon=3, samples=4, iterations=1)
    for act in (torch.tensor([[0.99]]), torch.tensor([[-1.0]]), policy.act(obs_t)):
        for eps in (0.05, 0.5, 2.0):
            attack.attach([env])
            check_bound(act, attack.perturb(obs_t, act, eps, torch.Generator().manual_seed(0)), eps)
    attack.attach([env])
    act = policy.act(obs_t)
    assert torch.equal(attack.perturb(obs_t, act, 0.0), act)


def test_an_env_without_state_access_is_refused_before_the_first_reset(ledge_policy):
    attack = LookaheadAttack(ledge_policy)
    with pytest.raises(EnvError, match=r"NoState-v0.*get_sim_state\(\) / set_sim_state\(state\)"):
        evaluate(ledge_policy, attack, 0.2, episodes=2, seed=0, env_id="rbrl-test/NoState-v0")
    assert sim_state_kind(make_env("rbrl/Ledge-v0")) == "hook"


def test_perturb_without_attached_envs_says_what_to_do(ledge_policy):
    with pytest.raises(RuntimeError, match="attach"):
        LookaheadAttack(ledge_policy).perturb(torch.zeros(2, 1), torch.zeros(2, 1), 0.2)


@pytest.mark.parametrize("option,value", [("horizon", 0), ("samples", 2.5), ("iterations", -1), ("elite_frac", 0.0),
                                          ("elite_frac", 1.5), ("gamma", float("nan")), ("critic", "q_adv")])
def test_bad_options_name_the_option_and_the_range(ledge_policy, option, value):
    with pytest.raises(ValueError, match=f"lookahead option {option} must be"):
        LookaheadAttack(ledge_policy, **{option: value})


def test_options_and_time_limit():
    assert attack_option_names("lookahead") == ["horizon", "samples", "iterations", "elite_frac", "gamma", "critic"]
    env = make_env("InvertedPendulum-v5", max_episode_steps=5)
    env.reset(seed=0)
    env.step(np.zeros(1, dtype=np.float32))
    assert steps_left(env) == 4
