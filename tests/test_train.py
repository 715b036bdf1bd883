"""`rbrl train` end to end: the real CLI with tiny budgets, the run directory, config, resume after SIGKILL."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from robustbench_rl.cli import main
from robustbench_rl.config import RunConfig, read_toml
from robustbench_rl.policy import load_policy

TINY = ["--hidden", "16,16", "--batch-size", "32", "--learning-starts", "50", "--threads", "1"]


def rbrl(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def progress_steps(run_dir: Path) -> list[int]:
    with open(run_dir / "progress.csv", newline="") as fh:
        return [int(row["step"]) for row in csv.DictReader(fh)]


def test_train_td3_pendulum_smoke(tmp_path):
    out = tmp_path / "run"
    res = rbrl("train", "--algo", "td3", "--env", "Pendulum-v1", "--steps", "300", "--seed", "1", "--out", str(out),
               "--eval-every", "200", "--eval-episodes", "2", "--checkpoint-every", "200", "--log-every", "100", *TINY)
    assert res.exit_code == 0, res.output
    assert "done: 300 steps" in res.output and "final eval return" in res.output
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints", "config.toml", "policy.safetensors",
                                                      "progress.csv", "replay_000000300.bin", "state.pt"]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_000000200.safetensors",
                                                                        "step_000000300.safetensors"]
    assert progress_steps(out) == [100, 200, 300]
    with open(out / "progress.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {"episode_return", "eval_return", "critic_loss", "actor_loss", "steps_per_s"} <= set(rows[0])
    assert rows[1]["eval_return"] and rows[2]["eval_return"] and not rows[0]["eval_return"]
    policy = load_policy(str(out / "policy.safetensors"))
    assert policy.algo == "td3" and policy.meta["seed"] == 1 and policy.meta["steps"] == 300
    assert set(policy.critics) == {"q"}
    cfg = read_toml(out / "config.toml")
    assert cfg["run"]["steps"] == 300 and cfg["hyperparameters"]["hidden"] == [16, 16]
    assert policy.meta["config"]["learning_starts"] == 50


def test_train_oa_td3_hopper_smoke_and_config_file_round_trip(tmp_path):
    out = tmp_path / "oa"
    res = rbrl("train", "--algo", "oa-td3", "--env", "Hopper-v5", "--steps", "200", "--out", str(out),
               "--omega", "0.3", "--eps-train", "0.05", "--pgd-steps", "2", "--no-surgery", *TINY)
    assert res.exit_code == 0, res.output
    policy = load_policy(str(out / "policy.safetensors"))
    assert set(policy.critics) == {"q", "q_adv"}
    assert policy.meta["config"]["omega"] == 0.3 and policy.meta["config"]["surgery"] is False
    with open(out / "progress.csv", newline="") as fh:
        last = list(csv.DictReader(fh))[-1]
    assert float(last["pgd_q_drop"]) >= 0.0 and 0.0 <= float(last["conflict_share"]) <= 1.0
    # A run's config.toml is a valid --config: a second run from it resolves to the same config.
    again = tmp_path / "again"
    res = rbrl("train", "--config", str(out / "config.toml"), "--out", str(again), "--steps", "100")
    assert res.exit_code == 0, res.output
    a, b = read_toml(out / "config.toml"), read_toml(again / "config.toml")
    assert a["hyperparameters"] == b["hyperparameters"]
    assert {**a["run"], "steps": 100} == b["run"]


@pytest.mark.parametrize("args,message", [
    (["--algo", "td3", "--env", "Pendulm-v1"], "Pendulum-v1"),
    (["--algo", "td3", "--env", "Pendulum-v1", "--omega", "0.5"], "not a td3 hyperparameter"),
    (["--algo", "oa-td3", "--env", "Pendulum-v1", "--omega", "2"], "omega must be in [0, 1]"),
    (["--algo", "td3", "--env", "Pendulum-v1", "--hidden", "64,x"], "comma-separated list of ints"),
    (["--algo", "td3", "--env", "Pendulum-v1", "--steps", "0"], "steps must be >= 1"),
    (["--env", "Pendulum-v1"], "no algo given"),
    (["--algo", "td3", "--env", "Pendulum-v1", "--resume"], "nothing to resume"),
    (["--algo", "td3", "--env", "Pendulum-v1", "--config", "missing.toml"], "config file not found"),
    (["--algo", "td3", "--env", "Pendulum-v1", "--device", "gpu0"], "unknown device 'gpu0'; use cpu, cuda"),
    (["--algo", "td3", "--env", "Pendulum-v1", "--seed", "-1"], "seed must be an integer in [0, 4294967295], got -1"),
    (["--algo", "td3", "--env", "Pendulum-v1", "--seed", str(2**70)], "seed must be an integer in [0, 4294967295]"),
    (["--algo", "td3", "--env", "Pendulum-v1", "--eval-every", "50", "--eval-seed", "-5"],
     "eval-seed must be an integer in [0, 4294967295], got -5"),
])
def test_bad_input_is_a_one_line_error_and_writes_nothing(tmp_path, args, message):
    out = tmp_path / "run"
    res = rbrl("train", "--out", str(out), *args)
    assert res.exit_code != 0
    assert message in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1, res.output
    assert not out.exists()


def test_out_must_be_a_new_or_empty_folder_or_a_run(tmp_path):
    """A folder holding other files is refused before anything is written into it."""
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "progress.csv").write_text("my own notes\n")
    res = rbrl("train", "--algo", "td3", "--env", "rbrl/Ledge-v0", "--steps", "20", "--out", str(busy), *TINY)
    assert res.exit_code != 0 and "is not empty and holds no training run" in res.output
    assert [p.name for p in busy.iterdir()] == ["progress.csv"]
    assert (busy / "progress.csv").read_text() == "my own notes\n"
    (tmp_path / "empty").mkdir()
    res = rbrl("train", "--algo", "td3", "--env", "rbrl/Ledge-v0", "--steps", "20", "--out", str(tmp_path / "empty"),
               *TINY)
    assert res.exit_code == 0, res.output
    assert load_policy(str(tmp_path / "empty" / "policy.safetensors")).meta["steps"] == 20  # an empty folder is used


def _files(run_dir: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(run_dir)): (p.stat().st_size, p.stat().st_mtime_ns) for p in run_dir.rglob("*")}


@pytest.mark.parametrize("algo,extra", [("td3", TINY), ("ppo", ["--num-steps", "32", "--num-minibatches", "2",
                                                                  "--update-epochs", "1", "--hidden", "8"])])
def test_resuming_a_finished_run_says_it_is_complete_and_changes_nothing(tmp_path, algo, extra):
    out = tmp_path / "run"
    res = rbrl("train", "--algo", algo, "--env", "rbrl/Ledge-v0", "--steps", "50", "--out", str(out), *extra)
    assert res.exit_code == 0, res.output
    trained = load_policy(str(out / "policy.safetensors")).meta["steps"]  # PPO stops at a rollout's end: 64
    before = _files(out)
    res = rbrl("train", "--out", str(out), "--resume")
    assert res.exit_code == 0, res.output
    assert f"is already complete: {trained} steps of {algo}" in res.output and "larger N to extend it" in res.output
    assert _files(out) == before  # not even the policy is rewritten: its sha256 ties critics and benches to it
    res = rbrl("train", "--out", str(out), "--resume", "--steps", str(trained + 20))
    assert res.exit_code == 0 and "resuming" in res.output, res.output
    assert load_policy(str(out / "policy.safetensors")).meta["steps"] >= trained + 20


def test_config_file_errors(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[hyperparameters]\nlearning_rat = 0.1\n")
    res = rbrl("train", "--algo", "td3", "--env", "Pendulum-v1", "--config", str(bad), "--out", str(tmp_path / "r"))
    assert res.exit_code != 0 and "unknown option 'learning_rat'" in res.output
    bad.write_text("[run\n")
    res = rbrl("train", "--algo", "td3", "--env", "Pendulum-v1", "--config", str(bad), "--out", str(tmp_path / "r"))
    assert res.exit_code != 0 and "not valid TOML" in res.output


def test_existing_run_needs_resume_and_resume_refuses_changed_config(tmp_path):
    out = tmp_path / "run"
    base = ["train", "--algo", "td3", "--env", "Pendulum-v1", "--steps", "100", "--out", str(out), *TINY]
    assert rbrl(*base).exit_code == 0
    res = rbrl(*base)
    assert res.exit_code != 0 and "pass --resume" in res.output
    res = rbrl("train", "--out", str(out), "--resume", "--learning-rate", "0.01")
    assert res.exit_code != 0 and "refuses a changed config" in res.output and "learning_rate" in res.output
    # Raising --steps extends the finished run; the log continues without a gap.
    res = rbrl("train", "--out", str(out), "--resume", "--steps", "150", "--log-every", "50")
    assert res.exit_code != 0 and "log_every" in res.output  # log_every is part of the experiment
    res = rbrl("train", "--out", str(out), "--resume", "--steps", "50")
    assert res.exit_code != 0 and "cannot shorten" in res.output
    res = rbrl("train", "--out", str(out), "--resume", "--steps", "250")
    assert res.exit_code == 0, res.output
    assert "resuming" in res.output
    assert progress_steps(out) == [100, 250]
    assert load_policy(str(out / "policy.safetensors")).meta["steps"] == 250


@pytest.mark.slow
def test_sigkill_mid_run_then_resume(tmp_path):
    """A real `rbrl train` process killed with SIGKILL resumes from its last checkpoint and finishes
    with a valid policy and a progress.csv without gaps or duplicated steps."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "robustbench_rl.cli", "train", "--algo", "td3", "--env", "Pendulum-v1",
           "--steps", "4000", "--out", str(out), "--checkpoint-every", "400", "--log-every", "200", "--no-progress",
           *TINY]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.time() + 120
    try:
        while time.time() < deadline and proc.poll() is None:
            if (out / "state.pt").exists() and (out / "progress.csv").exists() and max(progress_steps(out), default=0) >= 1000:
                break
            time.sleep(0.05)
        assert proc.poll() is None, f"run ended before it could be killed: {proc.stdout.read().decode()}"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    killed_at = max(progress_steps(out))
    assert not (out / "policy.safetensors").exists()
    saved = torch.load(out / "state.pt", weights_only=True)["trainer"]["global_step"]
    assert saved % 400 == 0 and 0 < saved <= killed_at
    res = subprocess.run([*cmd[:3], "train", "--out", str(out), "--resume", "--no-progress"], capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"resuming {out} from step {saved}" in res.stdout
    assert progress_steps(out) == list(range(200, 4001, 200))
    policy = load_policy(str(out / "policy.safetensors"))
    assert policy.meta["steps"] == 4000
    assert not list(out.glob(".*.tmp"))  # no temp files left behind


def test_run_config_fields_are_all_cli_options():
    res = rbrl("train", "--help")
    assert res.exit_code == 0
    for name in RunConfig.__dataclass_fields__:
        assert "--" + name.replace("_", "-") in res.output
    for flag in ("--omega", "--eps-train", "--pgd-steps", "--surgery / --no-surgery", "--learning-rate", "--resume",
                 "--config"):
        assert flag in res.output


def test_stop_when_ends_the_run_early_with_a_resumable_state(tmp_path):
    from robustbench_rl.config import resolve_config
    from robustbench_rl.training import train

    out = tmp_path / "run"
    run, hp = resolve_config(out, {"algo": "td3", "env": "Pendulum-v1", "steps": 500, "log_every": 100, "threads": 1},
                             {"hidden": [16, 16], "batch_size": 32, "learning_starts": 50})
    result = train(run, hp, out, stop_when=lambda row: row["step"] >= 200)
    assert result.steps == 200 and progress_steps(out) == [100, 200]
    assert load_policy(str(result.policy_path)).meta["steps"] == 200
    run, hp = resolve_config(out, {}, {}, resume=True)
    assert train(run, hp, out, resume=True).steps == 500
    assert progress_steps(out) == [100, 200, 300, 400, 500]


class _Payload:
    """Unpickling this would create a file: a resume state must never be unpickled as code."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_resume_state_is_never_unpickled_as_code(tmp_path):
    import pickle

    out = tmp_path / "run"
    assert rbrl("train", "--algo", "td3", "--env", "Pendulum-v1", "--steps", "100", "--out", str(out), *TINY).exit_code == 0
    marker = tmp_path / "pwned"
    (out / "state.pt").write_bytes(pickle.dumps({"format": 1, "x": _Payload(str(marker))}, protocol=2))
    res = rbrl("train", "--out", str(out), "--resume", "--steps", "200")
    assert res.exit_code != 0 and "not a usable resume state" in res.output
    assert not marker.exists()


def test_train_help_names_every_algorithm_in_the_algo_option():
    from click.testing import CliRunner

    from robustbench_rl.agents.base import _ALGOS
    from robustbench_rl.cli import main

    text = CliRunner().invoke(main, ["train", "--help"]).output
    start = text.index("--algo [")
    option = " ".join(text[start:text.index("--env", start)].split()).replace("- ", "-")
    help_text = option.split("]", 1)[1]  # after the click choice list
    assert "--help" not in help_text  # names the algorithms instead of sending the reader in a circle
    assert _ALGOS and all(name in help_text for name in _ALGOS)
