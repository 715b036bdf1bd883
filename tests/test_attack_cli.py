"""`rbrl attack` end to end: the full attack set, both critic sources, the tidy CSV, the sanity flags."""

from __future__ import annotations

import gymnasium as gym
import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import train_tiny, write_constant_ledge_policy

from robustbench_rl.checkpoint import read_metadata
from robustbench_rl.cli import main
from robustbench_rl.envs import LedgeEnv
from robustbench_rl.results import RESULT_COLUMNS

EPISODES = 3


@pytest.fixture(scope="module")
def oa_td3_policy(tmp_path_factory):
    """A tiny OA-TD3 on Ledge: it carries both critics, so every critic attack can use its own."""
    return train_tiny(tmp_path_factory.mktemp("ledge_oa"), algo="oa-td3", steps=600, learning_starts=200,
                      extra=("--pgd-steps", "3"))


def run_attack(policy, tmp_path, *extra):
    out = tmp_path / "rows.csv"
    args = ["attack", "--policy", str(policy), "--eps", "0.1,0.2", "--attack", "all", "--episodes", str(EPISODES),
            "--num-envs", "2", "--pgd-steps", "5", "--fit-steps", "200", "--cache-dir", str(tmp_path / "cache"),
            "--out", str(out), *extra]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    return res.output, pd.read_csv(out)


def check_schema(table: pd.DataFrame, sources: dict[str, str]) -> None:
    assert list(table.columns) == RESULT_COLUMNS
    assert len(table) == EPISODES * (1 + 4 * 2)  # nominal + 4 attacks x 2 eps
    cells = table.groupby(["attack", "eps"]).size()
    assert cells[("none", 0.0)] == EPISODES
    for att in ("random", "biggest", "min-q", "min-oa-q"):
        assert cells[(att, 0.1)] == cells[(att, 0.2)] == EPISODES
    got = table.groupby("attack")["critic_source"].unique().to_dict()
    assert {k: list(v) for k, v in got.items()} == {k: [v] for k, v in sources.items()}
    assert (table["episode"].groupby([table["attack"], table["eps"]]).apply(list)
            .map(lambda e: e == list(range(EPISODES))).all())
    assert table["length"].eq(1).all() and table["env_id"].eq("rbrl/Ledge-v0").all()


@pytest.mark.slow
def test_attack_all_with_auto_critics_on_a_td3_checkpoint(ledge_td3_policy, tmp_path):
    output, table = run_attack(ledge_td3_policy, tmp_path)
    check_schema(table, {"none": "none", "random": "none", "biggest": "none", "min-q": "own", "min-oa-q": "fitted"})
    assert "note: no cached oa-q critic" in output  # fitted on demand, with a note of the cost
    lines = output.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("attack"))
    assert "critic" in lines[header]
    assert any(line.split()[:3] == ["min-oa-q", "fitted", "0.1"] for line in lines)
    assert any(line.split()[:3] == ["min-q", "own", "0.2"] for line in lines)
    assert any(line.startswith("sanity flags") for line in lines)
    # the second run takes the fitted critic from the cache: no fitting note, same numbers
    again, table2 = run_attack(ledge_td3_policy, tmp_path)
    assert "note: no cached" not in again
    pd.testing.assert_frame_equal(table, table2)


@pytest.mark.slow
def test_attack_all_with_fitted_critics(ledge_td3_policy, tmp_path):
    _, table = run_attack(ledge_td3_policy, tmp_path, "--critic", "fitted")
    check_schema(table, {"none": "none", "random": "none", "biggest": "none", "min-q": "fitted",
                         "min-oa-q": "fitted"})


@pytest.mark.slow
def test_attack_all_with_own_critics_of_an_oa_checkpoint(oa_td3_policy, tmp_path):
    output, table = run_attack(oa_td3_policy, tmp_path, "--critic", "own")
    check_schema(table, {"none": "none", "random": "none", "biggest": "none", "min-q": "own", "min-oa-q": "own"})
    assert "note:" not in output  # nothing fitted


def test_own_critic_that_the_checkpoint_lacks_is_a_one_line_error(ledge_td3_policy, tmp_path):
    res = CliRunner().invoke(main, ["attack", "--policy", str(ledge_td3_policy), "--attack", "min-oa-q",
                                    "--critic", "own", "--out", str(tmp_path / "x.csv")])
    assert res.exit_code != 0
    assert res.output.startswith("Error:") and "--critic fitted" in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "x.csv").exists()  # no half-written output
    res = CliRunner().invoke(main, ["attack", "--policy", str(ledge_td3_policy), "--critic", "mine"])
    assert res.exit_code != 0 and "Traceback" not in res.output
    res = CliRunner().invoke(main, ["attack", "--policy", str(ledge_td3_policy), "--pgd-steps", "0"])
    assert res.exit_code != 0 and "Traceback" not in res.output
    res = CliRunner().invoke(main, ["attack", "--policy", str(ledge_td3_policy), "--pgd-start", "zero"])
    assert res.exit_code != 0 and "--pgd-start" in res.output and "Traceback" not in res.output


@pytest.mark.parametrize("command", ["attack", "fit-critic"])
@pytest.mark.parametrize("device,message", [("tpu", "unknown device 'tpu'"), ("cuda:x", "unknown device"),
                                            ("meta", "unsupported device 'meta'")])
def test_bad_device_is_a_usage_error_naming_the_choices(ledge_td3_policy, tmp_path, command, device, message):
    res = CliRunner().invoke(main, [command, "--policy", str(ledge_td3_policy), "--device", device,
                                    "--cache-dir", str(tmp_path / "cache")])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert f"Invalid value for --device: {message}" in res.output and "cpu, cuda, cuda:N or auto" in res.output
    assert not (tmp_path / "cache").exists()


def test_device_names_resolve_against_what_torch_sees(monkeypatch):
    import torch

    from robustbench_rl.device import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu") and resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="torch sees no CUDA GPU; use --device cpu"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto") == torch.device("cuda") and resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(ValueError, match=r"torch sees 2 GPU\(s\); use cuda:0..cuda:1"):
        resolve_device("cuda:2")


def test_cuda_without_a_gpu_says_so(ledge_td3_policy, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    res = CliRunner().invoke(main, ["attack", "--policy", str(ledge_td3_policy), "--device", "cuda"])
    assert res.exit_code == 2 and "torch sees no CUDA GPU; use --device cpu" in res.output


class _LowLedge(LedgeEnv):
    """Ledge with the cliff at 0.3: the same sizes, other rewards."""

    ledge = 0.3


if "rbrl_test/LowLedge-v0" not in gym.registry:
    gym.register(id="rbrl_test/LowLedge-v0", entry_point=_LowLedge, max_episode_steps=1)


@pytest.mark.slow
@pytest.mark.slow
def test_the_standard_attack_set_runs_every_attack_on_fitted_critics(ledge_td3_policy, tmp_path):
    from robustbench_rl.threat import STANDARD, STANDARD_VERSION

    out = tmp_path / "rows.csv"
    res = CliRunner().invoke(main, ["attack", "--policy", str(ledge_td3_policy), "--eps", "0.1,0.2", "--attack",
                                    "standard", "--episodes", str(EPISODES), "--num-envs", "2", "--cache-dir",
                                    str(tmp_path / "cache"), "--out", str(out)])
    assert res.exit_code == 0, res.output
    output, table = res.output, pd.read_csv(out)
    check_schema(table, {"none": "none", "random": "none", "biggest": "none", "min-q": "fitted", "min-oa-q": "fitted"})
    assert f"standard attack set v{STANDARD_VERSION}: {', '.join(STANDARD['attacks'])}" in output
    assert any(line.startswith("worst-case") for line in output.splitlines())


def test_a_fitted_critic_is_fitted_on_the_env_the_policy_is_attacked_on(tmp_path):
    policy = write_constant_ledge_policy(tmp_path / "ledge.safetensors", 0.45)
    cache = tmp_path / "cache"
    args = ["attack", "--policy", str(policy), "--attack", "min-q", "--critic", "fitted", "--eps", "0.1",
            "--episodes", "2", "--num-envs", "1", "--pgd-steps", "2", "--fit-steps", "20", "--cache-dir", str(cache)]
    res = CliRunner().invoke(main, [*args, "--env", "rbrl_test/LowLedge-v0"])
    assert res.exit_code == 0, res.output
    (entry,) = cache.rglob("q-*.safetensors")
    meta = read_metadata(entry)
    assert meta["env_id"] == meta["policy_context"]["env_id"] == "rbrl_test/LowLedge-v0"
    assert meta["stats"]["behaviour_return_mean"] < 0  # gathered past LowLedge's cliff, not on Ledge
