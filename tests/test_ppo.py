"""PPO / OA-PPO: GAE and losses on hand values, rollout semantics, Ledge learning, checkpoints, determinism,
resume after SIGKILL, and the real `rbrl train` CLI on Pendulum-v1 and Hopper-v5."""

from __future__ import annotations

import csv
import dataclasses
import os
import signal
import subprocess
import sys
import time

import gymnasium as gym
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from robustbench_rl.agents.oa_ppo import OAPPOConfig
from robustbench_rl.agents.ppo import (
    PPOConfig,
    PPOTrainer,
    RunningMeanStd,
    clipped_policy_loss,
    gae,
    gaussian_entropy,
    gaussian_log_prob,
    value_loss,
)
from robustbench_rl.agents.registry import make_trainer
from robustbench_rl.checkpoint import save_checkpoint, state_tensors
from robustbench_rl.cli import main
from robustbench_rl.config import RunConfig
from robustbench_rl.policy import load_policy
from robustbench_rl.training import policy_metadata

CPU = torch.device("cpu")
TINY = {"hidden": [16, 16], "num_steps": 64, "num_minibatches": 4, "update_epochs": 2}
TINY_OA = {**TINY, "critic_adv_hidden": [16, 16], "critic_adv_batch": 32, "critic_adv_updates": 4, "pgd_steps": 2}
TINY_CLI = ["--hidden", "16,16", "--num-steps", "64", "--num-minibatches", "4", "--update-epochs", "2",
            "--threads", "1"]
TINY_OA_CLI = [*TINY_CLI, "--critic-adv-hidden", "16,16", "--critic-adv-batch", "32", "--critic-adv-updates", "4",
               "--pgd-steps", "2"]


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def rbrl(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def progress_rows(run_dir) -> list[dict[str, str]]:
    with open(run_dir / "progress.csv", newline="") as fh:
        return list(csv.DictReader(fh))


# --------------------------------------------------------------------------------------------------
# Pure pieces on hand-computed values
# --------------------------------------------------------------------------------------------------

def test_gae_on_a_hand_computed_trajectory_with_a_done_in_the_middle():
    # env 0: the episode ends after step 1 (no bootstrap, no credit across); env 1: no done at all.
    rewards = torch.tensor([[1.0, 1.0], [2.0, 1.0], [3.0, 1.0], [4.0, 1.0]])
    values = torch.tensor([[0.5, 0.0], [1.0, 0.0], [1.5, 0.0], [2.0, 0.0]])
    dones = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    last_value = torch.tensor([3.0, 0.0])
    adv, ret = gae(rewards, values, dones, last_value, gamma=0.9, lam=0.8)
    # env 0, backwards: d3 = 4 + .9*3 - 2 = 4.7; d2 = 3 + .9*2 - 1.5 = 3.3, A2 = 3.3 + .72*4.7 = 6.684;
    # d1 = 2 - 1 = 1 (done: no bootstrap, trace cut); d0 = 1 + .9*1 - .5 = 1.4, A0 = 1.4 + .72*1 = 2.12.
    # env 1: every delta is 1, A_t = 1 + .72 A_{t+1}.
    expected = torch.tensor([[2.12, 2.611648], [1.0, 2.2384], [6.684, 1.72], [4.7, 1.0]])
    torch.testing.assert_close(adv, expected)
    torch.testing.assert_close(ret, expected + values)


def test_clipped_policy_loss_on_hand_values_and_its_gradient():
    ratio = torch.tensor([0.5, 1.0, 1.5, 1.1], requires_grad=True)
    adv = torch.tensor([1.0, -1.0, 1.0, -2.0])
    loss = clipped_policy_loss(ratio, adv, clip_coef=0.2)
    # rows: max(-.5, -.8) = -.5; max(1, 1) = 1; max(-1.5, -1.2) = -1.2; max(2.2, 2.2) = 2.2 -> mean .375
    assert loss.item() == pytest.approx(0.375)
    loss.backward()
    # row 2 is clipped (ratio 1.5 > 1.2 with A > 0): no gradient; the others get -A / 4.
    torch.testing.assert_close(ratio.grad, torch.tensor([-0.25, 0.25, 0.0, 0.5]))


def test_value_loss_with_and_without_clipping_on_hand_values():
    new, old, ret = torch.tensor([1.0, 3.0]), torch.tensor([0.0, 2.9]), torch.tensor([2.0, 2.0])
    assert value_loss(new, old, ret, None).item() == pytest.approx(0.5)
    # clipped: V_clip = [0.2, 3.0] -> (1.8^2 = 3.24, 1) vs unclipped (1, 1): 0.5 * mean(3.24, 1) = 1.06
    assert value_loss(new, old, ret, 0.2).item() == pytest.approx(1.06)


def test_gaussian_log_prob_and_entropy_match_torch_distributions():
    mean, log_std, act = torch.randn(7, 3), torch.tensor([-2.0, 0.0, 0.5]), torch.randn(7, 3) * 3
    normal = torch.distributions.Normal(mean, log_std.exp().expand_as(mean))
    torch.testing.assert_close(gaussian_log_prob(mean, log_std, act), normal.log_prob(act).sum(-1))
    torch.testing.assert_close(gaussian_entropy(log_std).expand(7), normal.entropy().sum(-1))


def test_running_mean_std_matches_numpy_over_batches():
    rng = np.random.default_rng(0)
    data = rng.normal(3.0, 2.0, size=(500, 3))
    rms = RunningMeanStd((3,))
    for chunk in np.array_split(data, [1, 7, 100, 101, 300]):
        rms.update(chunk)
    np.testing.assert_allclose(rms.mean, data.mean(0), rtol=1e-5)
    np.testing.assert_allclose(rms.var, data.var(0), rtol=1e-4)


# --------------------------------------------------------------------------------------------------
# Rollout semantics: no dummy autoreset steps, truncation bootstraps, clipped execution
# --------------------------------------------------------------------------------------------------

class CountEnv(gym.Env):
    """obs = [steps taken in the episode], reward 1; terminates after 3 steps unless `terminate` is off."""

    def __init__(self, terminate: bool = True) -> None:
        self.observation_space = gym.spaces.Box(-100.0, 100.0, shape=(1,), dtype=np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
        self.terminate = terminate
        self.t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.array([0.0], dtype=np.float32), {}

    def step(self, action):
        assert -1.0 <= float(action[0]) <= 1.0, "the env must receive the clipped action"
        self.t += 1
        return np.array([self.t], dtype=np.float32), 1.0, self.terminate and self.t == 3, False, {}


gym.register("rbrl_test/CountTerm-v0", entry_point=CountEnv, kwargs={"terminate": True})
gym.register("rbrl_test/CountTrunc-v0", entry_point=CountEnv, kwargs={"terminate": False}, max_episode_steps=3)


@pytest.mark.parametrize("env_id", ["rbrl_test/CountTerm-v0", "rbrl_test/CountTrunc-v0"])
def test_rollout_stores_only_real_steps_and_bootstraps_truncation_from_the_final_obs(env_id):
    cfg = OAPPOConfig(**{**TINY_OA, "num_steps": 7, "num_minibatches": 1}, num_envs=2, norm_obs=False,
                      norm_reward=False, log_std_init=1.0, gamma=0.9)
    trainer = make_trainer(cfg, env_id, seed=0, total_steps=10_000, device=CPU)
    finished = trainer.collect_rollout()
    buf = trainer.buffer
    # Gymnasium's next-step autoreset would insert a dummy step (action ignored, reward 0) after each done.
    assert buf.obs[:, :, 0].T.tolist() == [[0, 1, 2, 0, 1, 2, 0]] * 2
    assert buf.done.T.tolist() == [[0, 0, 1, 0, 0, 1, 0]] * 2
    assert trainer.global_step == 14 and sorted(finished) == [(3.0, 3)] * 4
    with torch.no_grad():
        v_final = trainer.value(torch.tensor([[3.0]]))[0].item()
    expected_done_reward = 1.0 if "Term" in env_id else 1.0 + 0.9 * v_final  # time-limit cut: r + gamma V(s_T)
    torch.testing.assert_close(buf.rew[[2, 5]], torch.full((2, 2), expected_done_reward))
    assert torch.all(buf.rew[[0, 1, 3, 4, 6]] == 1.0)
    # The OA replay holds real next states, termination (not truncation) flags and the executed clipped actions.
    rep = trainer.replay
    assert rep.size == 14
    assert rep.next_obs[:14, 0].tolist() == [float(t) for t in [1, 1, 2, 2, 3, 3, 1, 1, 2, 2, 3, 3, 1, 1]]
    assert rep.done[:14].tolist() == [float("Term" in env_id and t == 3) for t in [1, 1, 2, 2, 3, 3, 1, 1, 2, 2, 3, 3, 1, 1]]
    assert buf.act.abs().max() > 1.0  # std e^1: the Gaussian sample is unbounded...
    torch.testing.assert_close(rep.act[:14], buf.act.reshape(14, 1).clamp(-1.0, 1.0))  # ...the env gets it clipped


# --------------------------------------------------------------------------------------------------
# Learning on the one-step Ledge (nominal optimum 0.5 at the cliff, robust optimum 0.3 for eps 0.2)
# --------------------------------------------------------------------------------------------------

# The default log-std 0 keeps PPO far from the ledge for long; std e^-2 and lr 2e-3 learn in seconds.
LEDGE_KW = {"hidden": [16, 16], "log_std_init": -2.0, "learning_rate": 2e-3, "anneal_lr": False, "num_envs": 8,
            "num_steps": 32, "num_minibatches": 4, "update_epochs": 10}


def ledge_mean_action(config, steps: int, seed: int = 0) -> float:
    trainer = make_trainer(config, "rbrl/Ledge-v0", seed, steps, CPU)
    trainer.advance(steps)
    with torch.no_grad():
        return float(trainer.actor(torch.zeros(1, 1))[0, 0])


@pytest.mark.slow
def test_ppo_learns_to_stand_near_the_ledge():
    assert ledge_mean_action(PPOConfig(**LEDGE_KW), steps=12_288) > 0.4


@pytest.mark.slow
def test_oa_ppo_with_omega_0_stays_back_from_the_ledge():
    # The replay keeps the whole (short) run: the cliff is seen early, while the policy still explores widely.
    cfg = OAPPOConfig(**LEDGE_KW, omega=0.0, eps_train=0.2, pgd_steps=5, critic_adv_hidden=[64, 64],
                      critic_adv_lr=1e-3, critic_adv_batch=128, critic_adv_updates=16, replay_rollouts=40)
    assert 0.15 <= ledge_mean_action(cfg, steps=10_240) <= 0.38


# --------------------------------------------------------------------------------------------------
# Checkpoints, determinism, resume
# --------------------------------------------------------------------------------------------------

def save_trainer_policy(trainer: PPOTrainer, algo: str, path) -> None:
    """What `rbrl train` writes, through the same public pieces."""
    modules, networks, extra_tensors, extra_meta = trainer.policy_state()
    run = RunConfig(algo=algo, env=trainer.env_id, seed=trainer.seed)
    meta = policy_metadata(run, trainer.config, networks, extra_meta, trainer.global_step)
    save_checkpoint(path, {**state_tensors(modules), **extra_tensors}, meta)


def test_checkpoint_round_trip_applies_the_saved_obs_statistics(tmp_path):
    trainer = make_trainer(OAPPOConfig(**TINY_OA), "Hopper-v5", seed=3, total_steps=128, device=CPU)
    trainer.advance(128)
    path = tmp_path / "oa.safetensors"
    save_trainer_policy(trainer, "oa-ppo", path)
    policy = load_policy(str(path))
    assert policy.algo == "oa-ppo" and set(policy.critics) == {"q_adv"} and policy.meta["obs_norm"] is True
    obs = torch.as_tensor(np.random.default_rng(0).normal(0.0, 2.0, size=(64, 11)), dtype=torch.float32)
    with torch.no_grad():
        expected = trainer.actor(trainer.normalize(obs)).clamp(-1.0, 1.0)
        unnormalised = trainer.actor(obs).clamp(-1.0, 1.0)
        act = torch.rand(64, 3) * 2 - 1
        q_expected = trainer.critic_adv.min_q(trainer.normalize(obs), act)
    assert torch.equal(policy.act(obs), expected)  # bit for bit, on raw observations
    assert not torch.allclose(policy.act(obs), unnormalised)  # the statistics matter: they were applied
    assert torch.equal(policy.critics["q_adv"](obs, act), q_expected)
    assert not torch.allclose(policy.normalize.var, torch.ones(11))


@pytest.mark.parametrize("norm_adv", [False, True])
def test_oa_ppo_at_omega_1_standardises_advantages_only_when_asked(monkeypatch, norm_adv):
    import robustbench_rl.agents.ppo as ppo_module

    calls = []
    real = ppo_module.standardize
    monkeypatch.setattr(ppo_module, "standardize", lambda x: calls.append(1) or real(x))
    trainer = make_trainer(OAPPOConfig(**TINY_OA, omega=1.0, norm_adv=norm_adv), "Pendulum-v1", 0, 1000, CPU)
    trainer.advance(64)  # one rollout and one update
    assert (len(calls) > 0) == norm_adv


def test_same_seed_same_first_updates_and_another_seed_differs():
    def run(seed: int) -> dict[str, torch.Tensor]:
        trainer = make_trainer(OAPPOConfig(**TINY_OA, num_envs=2), "Pendulum-v1", seed, 1000, CPU)
        trainer.advance(256)  # two rollouts and two updates
        return {**state_tensors({"a": trainer.actor, "v": trainer.value, "q": trainer.critic_adv}),
                "obs": trainer.buffer.obs.clone()}

    first, again, other = run(5), run(5), run(6)
    assert first.keys() == again.keys()
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not torch.equal(first["a.mean.0.weight"], other["a.mean.0.weight"])


@pytest.mark.slow
def test_sigkill_then_resume_equals_a_clean_stop_and_resume(tmp_path):
    """A run SIGKILLed after a checkpoint resumes to exactly the policy of a run cleanly stopped at that
    checkpoint and resumed (resume restores networks, optimisers, statistics, replay and RNG)."""
    common = ["--algo", "oa-ppo", "--env", "Pendulum-v1", "--checkpoint-every", "64", "--log-every", "64",
              "--no-anneal-lr", *TINY_OA_CLI]
    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "robustbench_rl.cli", "train", "--steps", "50000", "--out", str(killed),
           "--no-progress", *common]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.time() + 120
    try:
        while time.time() < deadline and proc.poll() is None and not (killed / "state.pt").exists():
            time.sleep(0.02)
        assert proc.poll() is None, f"run ended before it could be killed: {proc.stdout.read().decode()}"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    saved = torch.load(killed / "state.pt", weights_only=True)["trainer"]["global_step"]
    assert saved % 64 == 0 and saved > 0 and not (killed / "policy.safetensors").exists()
    final = str(saved + 192)
    res = rbrl("train", "--out", str(killed), "--resume", "--steps", final)
    assert res.exit_code == 0, res.output
    assert f"resuming {killed} from step {saved}" in res.output

    clean = tmp_path / "clean"
    assert rbrl("train", "--out", str(clean), "--steps", str(saved), "--seed", "0", *common).exit_code == 0
    assert rbrl("train", "--out", str(clean), "--resume", "--steps", final).exit_code == 0
    a, b = load_policy(str(killed / "policy.safetensors")), load_policy(str(clean / "policy.safetensors"))
    for name in ("actor", "value", "critic_adv"):
        sa, sb = a.modules[name].state_dict(), b.modules[name].state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa), name
    assert torch.equal(a.normalize.mean, b.normalize.mean)
    assert [r["step"] for r in progress_rows(killed)] == [str(s) for s in range(64, int(final) + 1, 64)]


# --------------------------------------------------------------------------------------------------
# The real CLI
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("algo,env_id", [("ppo", "Pendulum-v1"), ("oa-ppo", "Pendulum-v1"), ("ppo", "Hopper-v5"),
                                         ("oa-ppo", "Hopper-v5")])
def test_cli_train_smoke(tmp_path, algo, env_id):
    out = tmp_path / "run"
    extra = ["--omega", "0.5", "--eps-train", "0.05"] if algo == "oa-ppo" else []
    res = rbrl("train", "--algo", algo, "--env", env_id, "--steps", "200", "--seed", "1", "--out", str(out),
               "--eval-every", "128", "--eval-episodes", "2", "--checkpoint-every", "128", "--log-every", "64",
               "--num-envs", "2", *(TINY_OA_CLI if algo == "oa-ppo" else TINY_CLI), *extra)
    assert res.exit_code == 0, res.output
    assert "done: 256 steps" in res.output  # whole rollouts: 2 envs x 64 steps each, until >= 200
    rows = progress_rows(out)
    assert [r["step"] for r in rows] == ["128", "256"] and rows[-1]["eval_return"]
    assert {"policy_loss", "value_loss", "approx_kl", "explained_variance", "action_std"} <= set(rows[0])
    if algo == "oa-ppo":
        assert float(rows[-1]["pgd_q_drop"]) >= 0.0 and rows[-1]["adv_corr"]
    policy = load_policy(str(out / "policy.safetensors"))
    assert policy.algo == algo and policy.meta["steps"] == 256 and policy.meta["obs_norm"] is True
    assert policy.meta["networks"]["actor"]["type"] == "gaussian_actor"
    assert set(policy.critics) == ({"q_adv"} if algo == "oa-ppo" else set())
    obs = torch.randn(5, policy.obs_dim) * 50
    act = policy.act(obs)
    assert act.shape == (5, policy.act_dim) and act.abs().max() <= 1.0


def test_cli_attack_min_oa_q_with_the_own_critic_of_an_oa_ppo_checkpoint(tmp_path):
    out = tmp_path / "run"
    res = rbrl("train", "--algo", "oa-ppo", "--env", "Pendulum-v1", "--steps", "128", "--out", str(out), *TINY_OA_CLI)
    assert res.exit_code == 0, res.output
    res = rbrl("attack", "--policy", str(out / "policy.safetensors"), "--attack", "min-oa-q", "--critic", "own",
               "--eps", "0.1", "--episodes", "2", "--pgd-steps", "2")
    assert res.exit_code == 0, res.output
    assert "min-oa-q" in res.output and "own" in res.output


@pytest.mark.parametrize("args,message", [
    (["--algo", "ppo", "--num-minibatches", "0"], "num-minibatches must be >= 1"),
    (["--algo", "ppo", "--num-steps", "8", "--num-minibatches", "16"], "exceeds half the rollout size"),
    (["--algo", "ppo", "--activation", "sigmoid"], "activation must be one of"),
    (["--algo", "ppo", "--omega", "0.5"], "not a ppo hyperparameter"),
    (["--algo", "oa-ppo", "--omega", "1.5"], "omega must be in [0, 1]"),
    (["--algo", "oa-ppo", "--eps-train", "-0.1"], "eps"),
    (["--algo", "ppo", "--target-kl", "-1"], "target-kl is out of range"),
])
def test_bad_hyperparameters_are_one_line_errors(tmp_path, args, message):
    out = tmp_path / "run"
    res = rbrl("train", "--env", "Pendulum-v1", "--out", str(out), *args)
    assert res.exit_code != 0 and message in res.output and "Traceback" not in res.output, res.output
    assert len(res.output.strip().splitlines()) == 1, res.output
    assert not out.exists()


def test_every_hyperparameter_has_a_cli_option_and_the_defaults_are_cleanrl():
    res = rbrl("train", "--help")
    for cls in (PPOConfig, OAPPOConfig):
        for f in dataclasses.fields(cls):
            assert "--" + f.name.replace("_", "-") in res.output, f.name
    cfg = PPOConfig()
    assert (cfg.num_steps, cfg.num_minibatches, cfg.update_epochs, cfg.clip_coef, cfg.gae_lambda, cfg.hidden) == (
        2048, 32, 10, 0.2, 0.95, [64, 64])


def test_bipedal_walker_with_the_box2d_extra(tmp_path):
    pytest.importorskip("Box2D", reason="BipedalWalker-v3 needs the [box2d] extra")
    out = tmp_path / "bw"
    res = rbrl("train", "--algo", "ppo", "--env", "BipedalWalker-v3", "--steps", "64", "--out", str(out), *TINY_CLI)
    assert res.exit_code == 0, res.output
    assert load_policy(str(out / "policy.safetensors")).act(torch.zeros(1, 24)).shape == (1, 4)
