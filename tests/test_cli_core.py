"""`rbrl info` and `rbrl attack` (critic-free) through click's runner and one real subprocess."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import click
import pandas as pd
import pytest
from click.testing import CliRunner

from robustbench_rl.cli import main
from robustbench_rl.results import RESULT_COLUMNS


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_info_prints_metadata(random_checkpoint):
    res = run("info", random_checkpoint("Pendulum-v1"))
    assert res.exit_code == 0
    assert "Pendulum-v1" in res.output and "twin_critic" in res.output and "torch" in res.output


def test_attack_table_and_tidy_csv(random_checkpoint, tmp_path):
    out = tmp_path / "res.csv"
    res = run("attack", "--policy", random_checkpoint("Pendulum-v1"), "--eps", "0.1,0.2",
              "--attack", "random,biggest", "--episodes", "3", "--num-envs", "2", "--out", out)
    assert res.exit_code == 0, res.output
    assert "% nominal" in res.output and "biggest" in res.output
    df = pd.read_csv(out)
    assert list(df.columns) == RESULT_COLUMNS
    assert len(df) == 3 * (1 + 2 * 2)
    assert set(df["attack"]) == {"none", "random", "biggest"}
    assert sorted(df.loc[df.attack == "random", "eps"].unique()) == [0.1, 0.2]
    assert (df.groupby(["attack", "eps"])["episode"].apply(sorted).map(list) == [[0, 1, 2]] * 5).all()
    assert (df["eval_seed"] == 0).all() and (df["length"] == 200).all()


@pytest.mark.parametrize("args, message", [
    (["--eps", "-0.1"], "eps must be in [0, 2.0]"),
    (["--eps", "3"], "eps must be in [0, 2.0]"),
    (["--eps", "abc"], "eps must be a number"),
    (["--attack", "fgsm"], "unknown attack 'fgsm'; known attacks: none, random, biggest"),
    (["--episodes", "0"], "0 is not in the range x>=1"),
    (["--env", "Hoper-v5"], "Did you mean"),
    (["--env", "Hopper-v5"], "trained for Pendulum-v1"),
    (["--out", "res.txt"], "use a .csv or .parquet file name"),
])
def test_bad_input_is_one_line_error(random_checkpoint, tmp_path, args, message):
    out = tmp_path / "res.csv"
    res = run("attack", "--policy", random_checkpoint("Pendulum-v1"), "--episodes", "1",
              *(["--out", out] if "--out" not in args else []), *args)
    assert res.exit_code != 0
    assert message in res.output
    assert "Traceback" not in res.output
    assert not out.exists() and not Path("res.txt").exists()  # nothing half-written (cwd: the test's own folder)


def test_missing_and_corrupt_checkpoints(tmp_path):
    res = run("attack", "--policy", tmp_path / "nope.safetensors")
    assert res.exit_code == 1 and "checkpoint not found" in res.output
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x80\x04not a checkpoint")
    res = run("attack", "--policy", bad)
    assert res.exit_code == 1 and "not a valid safetensors checkpoint" in res.output
    res = run("info", bad)
    assert res.exit_code == 1 and res.output.count("\n") == 1


def test_real_subprocess(random_checkpoint, tmp_path):
    exe = str(Path(sys.executable).parent / "rbrl")
    exe = exe if Path(exe).exists() else shutil.which("rbrl")
    out = tmp_path / "r.parquet"
    proc = subprocess.run([exe, "attack", "--policy", str(random_checkpoint("rbrl/Ledge-v0")), "--eps", "0.2",
                           "--attack", "random,biggest", "--episodes", "2", "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "biggest" in proc.stdout
    df = pd.read_parquet(out)
    assert len(df) == 2 * 3 and set(df["attack"]) == {"none", "random", "biggest"}  # nominal + 2 attacks, 2 episodes
    bad = subprocess.run([exe, "attack", "--policy", str(tmp_path / "x.safetensors")], capture_output=True, text=True)
    assert bad.returncode == 1 and bad.stderr.strip().startswith("Error: checkpoint not found")


def _summary_table(nominal: float, attacked: float) -> pd.DataFrame:
    rows = [("none", 0.0, nominal), ("random", 0.1, attacked)]
    return pd.DataFrame([{"policy": "p", "algo": "td3", "env_id": "Pendulum-v1", "attack": a, "critic_source": "none",
                          "eps": e, "return": r} for a, e, r in rows for _ in range(2)])


def test_summary_shows_the_change_and_no_percentage_of_a_negative_nominal():
    from robustbench_rl.summaries import format_summary

    negative = format_summary(_summary_table(-1000.0, -1160.0))  # worse: a ratio would read 116%
    row = next(line for line in negative.splitlines() if line.startswith("random"))
    assert "-160.0" in row and "n/a" in row and "%" not in row
    assert "change" in negative.splitlines()[1]
    positive = format_summary(_summary_table(200.0, 150.0))
    row = next(line for line in positive.splitlines() if line.startswith("random"))
    assert "-50.0" in row and "75%" in row


def test_summary_adds_the_worst_case_per_episode_over_attacks():
    from robustbench_rl.summaries import format_summary

    rows = [("none", 0.0, [10.0, 10.0]), ("random", 0.1, [9.0, 2.0]), ("biggest", 0.1, [4.0, 8.0])]
    table = pd.DataFrame([{"policy": "p", "algo": "td3", "env_id": "Pendulum-v1", "attack": a, "critic_source": "none",
                           "eps": e, "eval_seed": 0, "episode": i, "return": r}
                          for a, e, rets in rows for i, r in enumerate(rets)])
    out = format_summary(table)
    worst = next(line for line in out.splitlines() if line.startswith("worst-case"))
    assert "3.0 ± 1.0" in worst and "-7.0" in worst  # episodes' minima 4 and 2: below both attacks' means (5.5, 6)
    assert "worst-case" not in format_summary(table[table["attack"] != "biggest"])


def test_attack_list_expands_all_among_other_names():
    from robustbench_rl.cli import parse_attack_list

    everything = parse_attack_list(None, None, "all")
    assert parse_attack_list(None, None, "all,min-q") == everything and "min-q" in everything
    assert parse_attack_list(None, None, "biggest,random,biggest") == ["biggest", "random"]
    with pytest.raises(click.BadParameter, match="unknown attack 'foo'"):
        parse_attack_list(None, None, "all,foo")
