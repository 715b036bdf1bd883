"""make_env / make_vec_env: action normalisation and refusals."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from robustbench_rl.envs import EnvError, env_spec, make_env, make_vec_env

ENVS = ["Pendulum-v1", "MountainCarContinuous-v0", "InvertedPendulum-v5", "InvertedDoublePendulum-v5",
        "Hopper-v5", "Walker2d-v5", "HalfCheetah-v5", "Ant-v5", "Humanoid-v5", "rbrl/Ledge-v0"]


@pytest.mark.parametrize("env_id", ENVS)
def test_agent_acts_in_unit_box_and_env_sees_its_own_bounds(env_id):
    env = make_env(env_id, seed=0)
    try:
        assert np.all(env.action_space.low == -1.0) and np.all(env.action_space.high == 1.0)
        inner = env.unwrapped.action_space
        own_unit_box = bool(np.all(inner.low == -1.0) and np.all(inner.high == 1.0))
        assert isinstance(env, gym.wrappers.RescaleAction) != own_unit_box  # rescaled exactly when needed
        if not own_unit_box:
            # -1 and +1 map exactly onto the env's own bounds, 0 onto the midpoint
            for a, want in ((-1.0, inner.low), (1.0, inner.high), (0.0, (inner.low + inner.high) / 2)):
                got = env.action(np.full(inner.shape, a, dtype=np.float32))
                np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
        env.reset(seed=0)
        obs, reward, *_ = env.step(np.zeros(env.action_space.shape, dtype=np.float32))
        assert obs.shape == env.observation_space.shape and np.isfinite(reward)
    finally:
        env.close()


def test_humanoid_bounds_are_rescaled():
    spec = env_spec("Humanoid-v5")
    assert spec["action_high"][0] == pytest.approx(0.4)
    env = make_env("Humanoid-v5")
    np.testing.assert_allclose(env.action(np.ones(17, dtype=np.float32)), 0.4, atol=1e-6)
    env.close()


def test_discrete_action_space_is_refused_with_reason():
    with pytest.raises(EnvError, match="Discrete action space"):
        make_env("CartPole-v1")


def test_unbounded_action_space_is_refused_with_reason():
    gym.register(id="rbrl-test/Unbounded-v0", entry_point=_UnboundedEnv)
    with pytest.raises(EnvError, match="unbounded action space"):
        make_env("rbrl-test/Unbounded-v0")


def test_unknown_env_suggests_close_names():
    with pytest.raises(EnvError, match="Hopper-v5"):
        make_env("Hoper-v5")


def test_module_colon_env_syntax_imports_and_registers(tmp_path, monkeypatch):
    (tmp_path / "my_custom_envs.py").write_text(
        "import gymnasium as gym\n"
        "from robustbench_rl.envs import LedgeEnv\n"
        "gym.register(id='MyLedge-v0', entry_point=LedgeEnv, max_episode_steps=1)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    env = make_env("my_custom_envs:MyLedge-v0")
    assert env.spec.id == "MyLedge-v0" and env.spec.max_episode_steps == 1  # the module's own registration
    assert env.action_space.shape == (1,)
    env.close()


def test_make_vec_env_steps_num_envs_copies():
    venv = make_vec_env("Pendulum-v1", num_envs=3, seed=0)
    obs, _ = venv.reset(seed=0)
    assert obs.shape == (3, 3)
    _, rew, *_ = venv.step(np.zeros((3, 1), dtype=np.float32))
    assert rew.shape == (3,)
    venv.close()
    with pytest.raises(EnvError, match="num_envs must be >= 1, got 0"):
        make_vec_env("Pendulum-v1", num_envs=0)


class _UnboundedEnv(gym.Env):
    def __init__(self):
        self.observation_space = gym.spaces.Box(-1, 1, (1,), np.float32)
        self.action_space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        return np.zeros(1, np.float32), {}

    def step(self, action):
        return np.zeros(1, np.float32), 0.0, True, False, {}
