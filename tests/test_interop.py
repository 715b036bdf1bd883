"""Interop: SB3 policies through the CLI, several seeds in one `rbrl train`, TensorBoard events."""

from __future__ import annotations

import re

import pandas as pd
import pytest
from click.testing import CliRunner

from robustbench_rl.cli import main

TINY_TD3 = ["--learning-starts", "50", "--hidden", "16,16", "--batch-size", "16", "--log-every", "100"]


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def sb3_zips(tmp_path_factory):
    sb3 = pytest.importorskip("stable_baselines3", reason="the [sb3] extra is not installed")
    from stable_baselines3.common.logger import configure

    root = tmp_path_factory.mktemp("sb3cli")
    td3 = sb3.TD3("MlpPolicy", "Pendulum-v1", seed=0, learning_starts=50, policy_kwargs={"net_arch": [32, 32]})
    td3.set_logger(configure(str(root / "td3-log"), []))  # not SB3's default folder in /tmp
    td3.learn(100)
    td3.save(root / "td3.zip")
    ppo = sb3.PPO("MlpPolicy", "Pendulum-v1", seed=0, n_steps=64, batch_size=32, n_epochs=1,
                  policy_kwargs={"net_arch": [16, 16]})
    ppo.set_logger(configure(str(root / "ppo-log"), []))
    ppo.learn(64)
    ppo.save(root / "ppo.zip")
    return root


def test_attack_sb3_td3_with_its_own_q_heads(sb3_zips, tmp_path):
    out = tmp_path / "td3.csv"
    res = run("attack", "--policy", f"sb3:{sb3_zips / 'td3.zip'}", "--env", "Pendulum-v1", "--eps", "0.2",
              "--attack", "random,biggest,min-q", "--critic", "own", "--pgd-steps", "5", "--episodes", "2",
              "--out", out)
    assert res.exit_code == 0, res.output
    df = pd.read_csv(out)
    assert set(df["attack"]) == {"none", "random", "biggest", "min-q"}
    assert (df.loc[df["attack"] == "min-q", "critic_source"] == "own").all()
    assert (df["algo"] == "sb3-td3").all() and (df["length"] == 200).all()


def test_attack_sb3_ppo_with_a_fitted_critic(sb3_zips, tmp_path):
    out = tmp_path / "ppo.csv"
    res = run("attack", "--policy", f"sb3:{sb3_zips / 'ppo.zip'}", "--env", "Pendulum-v1", "--eps", "0.2",
              "--attack", "min-q", "--critic", "auto", "--fit-steps", "200", "--pgd-steps", "5", "--episodes", "2",
              "--cache-dir", tmp_path / "cache", "--out", out)
    assert res.exit_code == 0, res.output
    df = pd.read_csv(out)
    assert (df.loc[df["attack"] == "min-q", "critic_source"] == "fitted").all()
    own = run("attack", "--policy", f"sb3:{sb3_zips / 'ppo.zip'}", "--env", "Pendulum-v1", "--attack", "min-q",
              "--critic", "own", "--episodes", "1")
    assert own.exit_code == 1 and "--critic fitted" in own.output


def test_sb3_cli_errors(sb3_zips, tmp_path):
    res = run("attack", "--policy", f"sb3:{sb3_zips / 'td3.zip'}", "--episodes", "1")
    assert res.exit_code == 1 and "--env" in res.output
    pkl = tmp_path / "vn.pkl"
    pkl.write_bytes(b"\x80\x04N.")
    res = run("attack", "--policy", f"sb3:{sb3_zips / 'td3.zip'}", "--env", "Pendulum-v1", "--vecnormalize", pkl)
    assert res.exit_code == 1 and "--trust-pickle" in res.output


def test_train_several_seeds_locally_with_tensorboard(tmp_path):
    out = tmp_path / "runs"
    res = run("train", "--algo", "td3", "--env", "rbrl/Ledge-v0", "--steps", "200", "--seeds", "0,1",
              "--workers", "1", "--tensorboard", "--out", out, *TINY_TD3)
    assert res.exit_code == 0, res.output
    for seed in (0, 1):
        assert (out / f"seed_{seed}" / "policy.safetensors").is_file()
        assert f"seed = {seed}" in (out / f"seed_{seed}" / "config.toml").read_text()
    a = pd.read_csv(out / "seed_0" / "progress.csv")
    b = pd.read_csv(out / "seed_1" / "progress.csv")
    assert not a["critic_loss"].equals(b["critic_loss"])  # really different seeds

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(out / "seed_0" / "tb"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"charts/episodic_return", "charts/SPS", "losses/critic_loss", "losses/actor_loss"} <= tags
    logged = [(e.step, e.value) for e in acc.Scalars("losses/critic_loss")]
    assert [s for s, _ in logged] == a["step"].tolist()
    assert [v for _, v in logged] == pytest.approx(a["critic_loss"].tolist(), rel=1e-4)


def test_oa_td3_tensorboard_has_pgd_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    res = run("train", "--algo", "oa-td3", "--env", "rbrl/Ledge-v0", "--steps", "100", "--tensorboard",
              "--pgd-steps", "2", "--out", tmp_path / "oa", *TINY_TD3)
    assert res.exit_code == 0, res.output
    acc = EventAccumulator(str(tmp_path / "oa" / "tb"))
    acc.Reload()
    assert {"pgd/q_drop", "pgd/conflict_share", "losses/critic_adv_loss"} <= set(acc.Tags()["scalars"])


def test_seeds_usage_errors(tmp_path):
    res = run("train", "--algo", "td3", "--env", "rbrl/Ledge-v0", "--seeds", "0,x", "--out", tmp_path / "r")
    assert res.exit_code == 2 and "comma-separated integers" in res.output
    res = run("train", "--algo", "td3", "--env", "rbrl/Ledge-v0", "--seed", "1", "--seeds", "0,1", "--out", tmp_path / "r")
    assert res.exit_code == 2 and "either --seed or --seeds" in res.output
    res = run("train", "--algo", "td3", "--env", "rbrl/Ledge-v0", "--executor", "ray", "--out", tmp_path / "r")
    assert res.exit_code == 2 and "--seeds" in res.output


@pytest.mark.parametrize("workers", [1, 2])
def test_train_seeds_shows_a_progress_bar_per_seed(tmp_path, workers):
    out = tmp_path / "runs"
    res = run("train", "--algo", "td3", "--env", "rbrl/Ledge-v0", "--steps", "300", "--seeds", "0,1",
              "--workers", workers, "--progress", "--out", out, *TINY_TD3)
    assert res.exit_code == 0, res.output
    for seed in (0, 1):  # each seed's bar reaches its total, and its summary line follows
        assert re.search(rf"seed {seed}[^\n\r]*300/300", res.stderr), res.stderr
        assert f"seed {seed}: 300 steps" in res.stdout
    quiet = run("train", "--algo", "td3", "--env", "rbrl/Ledge-v0", "--steps", "300", "--seeds", "0,1",
                "--workers", workers, "--no-progress", "--out", tmp_path / "quiet", *TINY_TD3)
    assert quiet.exit_code == 0 and "300/300" not in quiet.stderr


def test_logged_steps_reads_the_last_progress_row(tmp_path):
    from robustbench_rl.training import logged_steps

    assert logged_steps(tmp_path) == 0
    (tmp_path / "progress.csv").write_text("step,episodes\n1000,3\n2000,7\n30")
    assert logged_steps(tmp_path) == 30  # a row being written still names its step
    (tmp_path / "progress.csv").write_text("step,episodes\n")
    assert logged_steps(tmp_path) == 0
