"""The Ray executor: same results table as the local runner, resume, and the CLI flag."""

from __future__ import annotations

import pandas as pd
import pytest
from click.testing import CliRunner

from robustbench_rl.bench import run_bench
from robustbench_rl.cli import main
from robustbench_rl.executors import make_executor
from robustbench_rl.suite import parse_suite

pytestmark = pytest.mark.slow  # starts a local Ray cluster

ray = pytest.importorskip("ray", reason="Ray is not installed (extra [ray]); the ray executor cannot run here")

FAST = {"attacks": ["random", "biggest"], "eps": [0.1, 0.3], "episodes": 3, "num_envs": 3, "max_episode_steps": 40}


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray with 2 CPUs for the whole module (starting Ray costs seconds)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_gives_the_local_table_and_resumes(tmp_path, random_checkpoint, local_ray):
    a, b = random_checkpoint(), random_checkpoint(seed=1, algo="oa-td3")
    suite = parse_suite({"policies": [str(a), str(b)], **FAST})
    serial = run_bench(suite, tmp_path / "serial", workers=1, progress=False)
    on_ray = run_bench(suite, tmp_path / "ray", progress=False, executor=make_executor("ray", workers=2))
    pd.testing.assert_frame_equal(serial.table, on_ray.table)
    assert on_ray.manifest["executor"]["kind"] == "RayExecutor"
    # resume: delete two finished cells, rerun on Ray, only those two run and the table is unchanged
    cells = sorted((tmp_path / "ray" / "cells").iterdir())
    for path in cells[:2]:
        path.unlink()
    again = run_bench(suite, tmp_path / "ray", progress=False, executor=make_executor("ray", workers=2))
    assert again.cells_run == 2 and again.cells_skipped == len(cells) - 2
    pd.testing.assert_frame_equal(serial.table, again.table)


def test_cli_executor_ray(tmp_path, random_checkpoint, local_ray):
    suite = tmp_path / "s.toml"
    suite.write_text(f'attacks = ["biggest"]\neps = [0.2]\nepisodes = 2\nnum_envs = 2\nmax_episode_steps = 30\n'
                     f'[[policies]]\nspec = "{random_checkpoint()}"\n')
    res = CliRunner().invoke(main, ["bench", str(suite), "--out", str(tmp_path / "run"), "--executor", "ray",
                                    "--workers", "2", "--quiet"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert len(pd.read_parquet(tmp_path / "run" / "results.parquet")) == 2 * 2


def test_unknown_executor_and_misplaced_address():
    with pytest.raises(ValueError, match="known executors: local, ray"):
        make_executor("dask")
    with pytest.raises(ValueError, match="ray executor only"):
        make_executor("local", workers=2, address="auto")


def test_train_seeds_on_ray(tmp_path, local_ray):
    res = CliRunner().invoke(main, ["train", "--algo", "td3", "--env", "rbrl/Ledge-v0", "--steps", "120",
                                    "--seeds", "3,4", "--executor", "ray", "--workers", "2",
                                    "--learning-starts", "50", "--hidden", "8,8", "--batch-size", "8",
                                    "--out", str(tmp_path / "runs")], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "RayExecutor" in res.output
    for seed in (3, 4):
        assert (tmp_path / "runs" / f"seed_{seed}" / "policy.safetensors").is_file()
