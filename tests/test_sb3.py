"""stable-baselines3 models as rbrl policies: same actions and Q values as SB3, never unpickled."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
import torch

from robustbench_rl.attacks import make_attack
from robustbench_rl.checkpoint import CheckpointError
from robustbench_rl.policy import load_policy
from robustbench_rl.rollout import evaluate

sb3 = pytest.importorskip("stable_baselines3", reason="the [sb3] extra is not installed")
from stable_baselines3.common.logger import configure  # noqa: E402


@pytest.fixture(scope="module")
def sb3_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("sb3")
    out = {}
    for name, cls, kw in [
        ("td3", sb3.TD3, {"learning_starts": 50, "policy_kwargs": {"net_arch": [32, 32]}}),
        ("sac", sb3.SAC, {"learning_starts": 50, "policy_kwargs": {"net_arch": [32, 32]}}),
        ("ppo", sb3.PPO, {"n_steps": 64, "batch_size": 32, "n_epochs": 1,
                          "policy_kwargs": {"net_arch": [16, 16], "activation_fn": torch.nn.ReLU}}),
    ]:
        model = cls("MlpPolicy", "Pendulum-v1", seed=0, device="cpu", **kw)
        model.set_logger(configure(str(root / f"{name}-log"), []))  # not SB3's default folder in /tmp
        model.learn(100)
        model.save(root / f"{name}.zip")
        out[name] = (root / f"{name}.zip", model)
    return out


@pytest.mark.parametrize("name", ["td3", "sac", "ppo"])
def test_actions_match_sb3_predict(sb3_models, name):
    path, model = sb3_models[name]
    policy = load_policy(f"sb3:{path}", env_id="Pendulum-v1")
    obs = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32)
    theirs, _ = model.predict(obs, deterministic=True)
    ours = policy.act(torch.from_numpy(obs)).numpy()
    np.testing.assert_allclose(ours, (theirs + 2.0) / 2.0 - 1.0, atol=1e-5)  # Pendulum bounds [-2, 2]


@pytest.mark.parametrize("name", ["td3", "sac"])
def test_off_policy_q_heads_are_exposed_as_own_critic(sb3_models, name):
    path, model = sb3_models[name]
    policy = load_policy(f"sb3:{path}", env_id="Pendulum-v1")
    obs, act = torch.randn(16, 3), torch.rand(16, 1) * 2 - 1
    with torch.no_grad():
        q1, q2 = model.critic(obs, act)
    torch.testing.assert_close(policy.critics["q"](obs, act), torch.minimum(q1, q2).squeeze(-1))


def test_ppo_has_no_own_critic_and_evaluates(sb3_models):
    policy = load_policy(f"sb3:{sb3_models['ppo'][0]}", env_id="Pendulum-v1")
    assert policy.critics == {}
    res = evaluate(policy, make_attack("biggest"), 0.1, episodes=2, seed=0, num_envs=2)
    assert res.attack == "biggest" and len(res.returns) == 2 and (res.lengths == 200).all()  # Pendulum's full episodes
    assert np.isfinite(res.returns).all() and (res.returns < 0).all()  # Pendulum's rewards are <= 0


def test_sb3_needs_env_and_matching_dims(sb3_models):
    path = sb3_models["td3"][0]
    with pytest.raises(CheckpointError, match="--env"):
        load_policy(f"sb3:{path}")
    with pytest.raises(CheckpointError, match="obs 3, act 1"):
        load_policy(f"sb3:{path}", env_id="Hopper-v5")


def test_vecnormalize_pickle_needs_explicit_trust(sb3_models, tmp_path):
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    vn = VecNormalize(make_vec_env("Pendulum-v1", n_envs=1), norm_reward=False)
    vn.obs_rms.mean = np.array([0.5, -0.5, 1.0])
    vn.obs_rms.var = np.array([2.0, 3.0, 4.0])
    vn.save(tmp_path / "vn.pkl")
    path = sb3_models["td3"][0]
    with pytest.raises(CheckpointError, match="--trust-pickle"):
        load_policy(f"sb3:{path}", env_id="Pendulum-v1", vecnormalize=str(tmp_path / "vn.pkl"))
    policy = load_policy(f"sb3:{path}", env_id="Pendulum-v1", vecnormalize=str(tmp_path / "vn.pkl"),
                         trust_pickle=True)
    obs = np.random.default_rng(1).normal(size=(8, 3)).astype(np.float32)
    model = sb3_models["td3"][1]
    theirs, _ = model.predict(vn.normalize_obs(obs), deterministic=True)
    np.testing.assert_allclose(policy.act(torch.from_numpy(obs)).numpy(), theirs / 2.0, atol=1e-5)


def test_a_malicious_zip_payload_never_runs(tmp_path, monkeypatch):
    import zipfile

    flag = tmp_path / "pwned"

    class Boom:
        def __reduce__(self):
            return (exec, (f"open({str(flag)!r}, 'w').write('x')",))

    path = tmp_path / "evil.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("data", '{"action_space": {":type:": "Box", ":serialized:": "x"}}')
        # Protocol 2 is torch.load's own, so torch has no protocol warning to print over the test output.
        zf.writestr("policy.pth", pickle.dumps(Boom(), protocol=2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # refused cleanly: no warning on the way either
        with pytest.raises(CheckpointError, match=r"evil\.zip is not a stable-baselines3 model zip"):
            load_policy(f"sb3:{path}", env_id="Pendulum-v1")
    assert not flag.exists()
