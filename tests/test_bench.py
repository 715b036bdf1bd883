"""The benchmark runner: suite parsing, cell expansion, resume (also after SIGKILL), critics fitted once,
and the `rbrl bench` / `rbrl report` commands end to end on tiny checkpoints."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from robustbench_rl.bench import run_bench
from robustbench_rl.cells import expand_cells, load_policies
from robustbench_rl.cli import main
from robustbench_rl.results import BENCH_COLUMNS, read_cell, read_results
from robustbench_rl.suite import load_suite, parse_suite


def write_suite(path: Path, policies: list, **fields) -> Path:
    """A suite TOML file from plain values (policies: specs or dicts)."""
    lines = []
    for key, value in fields.items():
        if isinstance(value, dict):
            continue
        lines.append(f"{key} = {json.dumps(value)}")
    for key, value in fields.items():
        if isinstance(value, dict):
            lines.append(f"[{key}]")
            lines += [f"{k} = {json.dumps(v)}" for k, v in value.items()]
    for p in policies:
        p = {"spec": str(p)} if not isinstance(p, dict) else {k: str(v) for k, v in p.items()}
        lines.append("[[policies]]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in p.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


FAST = {"attacks": ["random", "biggest"], "eps": [0.1, 0.3], "episodes": 3, "num_envs": 3, "max_episode_steps": 40}


# ---------------------------------------------------------------------------------------------------
# Suite parsing


def test_suite_defaults_and_relative_paths(tmp_path, random_checkpoint):
    ckpt = random_checkpoint()
    (tmp_path / "sub").mkdir()
    path = write_suite(tmp_path / "sub" / "s.toml", [f"../{ckpt.name}"])
    suite = load_suite(path)
    assert Path(suite.policies[0].spec) == ckpt.resolve()  # relative to the suite file, not the cwd
    assert suite.attacks == ("random", "biggest", "min-q", "min-oa-q")
    assert suite.eps == (0.05, 0.1, 0.2, 0.3)
    assert (suite.episodes, suite.eval_seeds, suite.critic, suite.pgd_steps, suite.pgd_start) == (10, (0,), "auto", 5, "fgsm")
    assert (suite.workers, suite.threads_per_worker) == (0, 1)


@pytest.mark.parametrize("data, needle", [
    ({"policies": ["a"], "episode": 5}, "unknown key 'episode'"),
    ({"policies": [{"spec": "a", "seed": 1}]}, "unknown key 'seed'"),
    ({"policies": ["a"], "fit": {"stepz": 10}}, "unknown key 'stepz' in [fit]"),
    ({}, "no policies"),
    ({"policies": [{"name": "x"}]}, "needs spec"),
    ({"policies": ["a"], "attacks": ["pgd"]}, "unknown attack 'pgd'"),
    ({"policies": ["a"], "eps": [0.1, 3.0]}, "eps"),
    ({"policies": ["a"], "episodes": 0}, "episodes must be an integer >= 1"),
    ({"policies": ["a"], "critic": "white-box"}, "critic must be one of"),
    ({"policies": ["a"], "eval_seeds": [1, 1]}, "distinct"),
    ({"policies": ["a"], "pgd_start": "zero"}, "pgd_start must be one of random, fgsm"),
    ({"policies": ["a"], "pgd_step_size": float("nan")}, "pgd_step_size must be a positive finite number"),
    ({"policies": ["a"], "pgd_step_size": float("inf")}, "pgd_step_size must be a positive finite number"),
    ({"policies": ["a"], "eval_seeds": [0, -1]}, "eval_seeds: each seed must be an integer in [0, 4294967295]"),
    ({"policies": ["a"], "eval_seeds": [2**40]}, "eval_seeds: each seed must be an integer in [0, 4294967295]"),
    ({"policies": ["a"], "episodes": 2**21}, "episodes must be <= 1048576"),
    ({"policies": ["a"], "fit": {"lr": float("inf")}}, "invalid fitting setting lr=inf"),
])
def test_suite_errors_name_the_problem(data, needle):
    with pytest.raises(ValueError) as err:
        parse_suite(data, where="s.toml")
    msg = str(err.value)
    assert needle in msg and msg.startswith("s.toml") and "\n" not in msg


def test_bad_toml_and_duplicate_names_are_one_line_cli_errors(tmp_path, random_checkpoint):
    bad = tmp_path / "bad.toml"
    bad.write_text("episodes = = 3\n")
    res = CliRunner().invoke(main, ["bench", str(bad), "--out", str(tmp_path / "o")])
    assert res.exit_code != 0 and "not valid TOML" in res.output and "Traceback" not in res.output
    ckpt = random_checkpoint()
    dup = write_suite(tmp_path / "dup.toml", [{"spec": ckpt, "name": "p"}, {"spec": ckpt, "name": "p"}], **FAST)
    res = CliRunner().invoke(main, ["bench", str(dup), "--out", str(tmp_path / "o")])
    assert res.exit_code != 0 and "both named 'p'" in res.output
    assert not (tmp_path / "o").exists()


def test_bench_without_suite_says_no_bundled_suite(tmp_path, monkeypatch):
    from robustbench_rl import zoo

    monkeypatch.setattr(zoo, "SUITES", tmp_path)  # an install without a bundled quick suite
    res = CliRunner().invoke(main, ["bench"])
    assert res.exit_code != 0
    assert "no bundled default suite" in res.output and len(res.output.strip().splitlines()) == 1


def test_cells_nominal_only_at_eps0(tmp_path, random_checkpoint):
    a, b = random_checkpoint(), random_checkpoint(seed=1)
    suite = parse_suite({"policies": [str(a), str(b)], "attacks": ["random", "biggest"], "eps": [0.0, 0.1, 0.2],
                         "eval_seeds": [0, 5]})
    cells = expand_cells(suite, load_policies(suite))
    assert len(cells) == 2 * (1 + 2 * 2) * 2
    assert {(c.eps) for c in cells if c.attack == "none"} == {0.0}
    assert all(c.eps > 0 for c in cells if c.attack != "none")
    assert len({c.filename for c in cells}) == len(cells)


# ---------------------------------------------------------------------------------------------------
# Running, resuming, refusing


@pytest.mark.slow
def test_pool_and_serial_give_identical_tables(tmp_path, random_checkpoint):
    a, b = random_checkpoint(), random_checkpoint(seed=1, algo="oa-td3")
    suite = parse_suite({"policies": [str(a), {"spec": str(b), "name": "robust", "group": "OA"}], **FAST})
    serial = run_bench(suite, tmp_path / "serial", workers=1, progress=False)
    pool = run_bench(suite, tmp_path / "pool", workers=2, progress=False)
    pd.testing.assert_frame_equal(serial.table, pool.table)
    t = serial.table
    assert list(t.columns) == BENCH_COLUMNS
    assert len(t) == 2 * (1 + 2 * 2) * 3
    assert set(t["group"]) == {"td3", "OA"} and set(t["policy"]) == {a.stem, "robust"}
    assert (t.loc[t["attack"] == "none", "eps"] == 0).all()
    pd.testing.assert_frame_equal(read_results(tmp_path / "pool"), t)
    csv = pd.read_csv(tmp_path / "pool" / "results.csv")
    assert len(csv) == len(t) and list(csv.columns) == BENCH_COLUMNS
    manifest = json.loads((tmp_path / "pool" / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["cells"] == 10
    assert {"torch", "gymnasium"} <= set(manifest["versions"]) and "cpu_count" in manifest["machine"]
    assert manifest["policies"][1]["sha256"] and "wall_s" in manifest["timings"]


def test_resume_refuses_changed_suite_and_force_keeps_matching_cells(tmp_path, random_checkpoint):
    a = random_checkpoint()
    first = parse_suite({"policies": [str(a)], **FAST})
    run_bench(first, tmp_path / "run", workers=1, progress=False)
    again = run_bench(first, tmp_path / "run", workers=1, progress=False)
    assert (again.cells_run, again.cells_skipped) == (0, 5)
    changed = parse_suite({"policies": [str(a)], **{**FAST, "eps": [0.1, 0.2]}})
    with pytest.raises(ValueError, match=r"different suite \(changed: eps\).*--force"):
        run_bench(changed, tmp_path / "run", workers=1, progress=False)
    forced = run_bench(changed, tmp_path / "run", workers=1, force=True, progress=False)
    assert (forced.cells_skipped, forced.cells_run) == (3, 2)  # nominal + eps 0.1 kept, eps 0.2 new
    assert sorted(forced.table["eps"].unique()) == [0.0, 0.1, 0.2]
    assert len(list((tmp_path / "run" / "cells").iterdir())) == 5  # the eps 0.3 cells are gone
    clean = run_bench(changed, tmp_path / "clean", workers=1, progress=False)
    pd.testing.assert_frame_equal(forced.table, clean.table)


def test_out_dir_checks(tmp_path, random_checkpoint):
    suite = parse_suite({"policies": [str(random_checkpoint())], **FAST})
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty and holds no bench run"):
        run_bench(suite, tmp_path / "busy", workers=1, progress=False)
    with pytest.raises(ValueError, match="--resume"):
        run_bench(suite, tmp_path / "new", workers=1, resume=True, progress=False)


def test_policy_file_change_is_a_changed_suite(tmp_path, random_checkpoint):
    path = random_checkpoint()
    suite = parse_suite({"policies": [str(path)], **FAST})
    run_bench(suite, tmp_path / "run", workers=1, progress=False)
    random_checkpoint(seed=7).replace(path)  # same file name, other weights
    with pytest.raises(ValueError, match="changed: policies"):
        run_bench(suite, tmp_path / "run", workers=1, progress=False)


def _descendants(pid: int) -> list[int]:
    """All processes below `pid` (the pool's workers hang off a forkserver, one level down)."""
    parent = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    out, frontier = [], [pid]
    while frontier:
        kids = [p for p, pp in parent.items() if pp in frontier]
        out += kids
        frontier = kids
    return out


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to find the worker processes")
@pytest.mark.slow
def test_sigkilled_run_resumes_to_exactly_the_clean_rows(tmp_path, random_checkpoint):
    a, b = random_checkpoint(), random_checkpoint(seed=1, algo="oa-td3")
    spec = {**FAST, "episodes": 4, "num_envs": 4, "max_episode_steps": 80, "eval_seeds": [0, 1]}
    suite_file = write_suite(tmp_path / "s.toml", [a, b], **spec)
    out = tmp_path / "run"
    cells = out / "cells"
    total = 2 * (1 + 2 * 2) * 2
    cmd = [sys.executable, "-m", "robustbench_rl.cli", "bench", str(suite_file), "--out", str(out),
           "--workers", "2", "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    done = 0
    workers: list[int] = []
    while time.monotonic() < deadline and proc.poll() is None:
        workers = sorted(set(workers) | set(_descendants(proc.pid)))
        done = len(list(cells.glob("*.json"))) if cells.is_dir() else 0
        if done >= 4:
            break
        time.sleep(0.01)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read().decode()[-500:]}"
    workers = sorted(set(workers) | set(_descendants(proc.pid)))
    os.kill(proc.pid, signal.SIGKILL)  # the parent only, as an OOM killer would
    proc.wait()
    assert 4 <= done < total
    assert len(workers) >= 3, f"the pool's processes were not found: {workers}"  # forkserver + 2 workers
    assert not (out / "results.parquet").exists()
    # the workers notice their parent is gone and exit by themselves
    for _ in range(100):
        alive = [w for w in workers if Path(f"/proc/{w}").exists()
                 and "Z" not in Path(f"/proc/{w}/stat").read_text().rsplit(")", 1)[1].split()[0]]
        if not alive:
            break
        time.sleep(0.1)
    assert not alive, f"orphaned workers still running: {alive}"
    partial = len(list(cells.glob("*.json")))
    # resume in-process (--workers 1): the worker count is not part of the run's identity
    res = subprocess.run([*cmd[:-2], "1", "--quiet"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"{partial} already done" in res.stdout
    resumed = read_results(out)
    clean = run_bench(load_suite(suite_file), tmp_path / "clean", workers=1, progress=False).table
    pd.testing.assert_frame_equal(resumed, clean)
    assert len(resumed) == total * 4
    assert not resumed.duplicated(["policy", "attack", "eps", "eval_seed", "episode"]).any()
    sessions = json.loads((out / "manifest.json").read_text())["sessions"]
    assert len(sessions) == 2 and sessions[1]["cells_skipped"] == partial


# ---------------------------------------------------------------------------------------------------
# Critic attacks


def test_min_q_cells_use_own_critic(tmp_path, random_checkpoint):
    a = random_checkpoint()
    suite = parse_suite({"policies": [str(a)], **{**FAST, "attacks": ["min-q"], "eps": [0.2]}, "pgd_steps": 3})
    t = run_bench(suite, tmp_path / "run", workers=1, progress=False).table
    assert set(zip(t["attack"], t["critic_source"], strict=True)) == {("none", "none"), ("min-q", "own")}


def test_fitted_critic_is_fitted_once_in_the_parent(tmp_path, random_checkpoint, monkeypatch):
    from robustbench_rl.attacks import critic_cache as fit  # where get_fitted_critic calls fit_critic

    calls = []
    real = fit.fit_critic

    def counting(policy, kind="q", config=None, **kw):
        calls.append((policy.name, kind))
        return real(policy, kind, config, **kw)

    monkeypatch.setattr(fit, "fit_critic", counting)
    a, b = random_checkpoint(), random_checkpoint(seed=1)
    tiny_fit = {"steps": 20, "transitions": 200, "hidden": [16], "batch_size": 32, "num_envs": 4}
    suite = parse_suite({"policies": [str(a), str(b)], **{**FAST, "attacks": ["min-q"], "eps": [0.1, 0.2]},
                         "eval_seeds": [0, 1], "critic": "fitted", "pgd_steps": 2, "fit": tiny_fit,
                         "critic_cache": str(tmp_path / "cache")})
    run = run_bench(suite, tmp_path / "run", workers=1, progress=False)
    assert sorted(calls) == [(a.stem, "q"), (b.stem, "q")]  # 4 min-q cells per policy, one fit each
    assert set(run.table.loc[run.table["attack"] == "min-q", "critic_source"]) == {"fitted"}
    calls.clear()
    run_bench(suite, tmp_path / "run2", workers=1, progress=False)
    assert calls == []  # second run: the cache serves both


# ---------------------------------------------------------------------------------------------------
# End to end through the CLI


def test_cli_bench_then_report(tmp_path, random_checkpoint):
    a, b = random_checkpoint(), random_checkpoint(seed=1, algo="oa-td3", critics=("critic", "critic_adv"))
    suite_file = write_suite(tmp_path / "s.toml", [a, b], **{**FAST, "attacks": ["random", "biggest", "min-q"]},
                             pgd_steps=3, name="tiny")
    out = tmp_path / "run"
    runner = CliRunner()
    res = runner.invoke(main, ["bench", str(suite_file), "--out", str(out), "--workers", "1", "--quiet"])
    assert res.exit_code == 0, res.output
    assert "14 cells (0 already done, 14 run)" in res.output
    res = runner.invoke(main, ["bench", str(suite_file), "--out", str(out), "--resume", "--quiet"])
    assert res.exit_code == 0 and "14 already done, 0 run" in res.output
    res = runner.invoke(main, ["report", str(out), "--eps", "0.3"])
    assert res.exit_code == 0, res.output
    rep = out / "report"
    for name in ["report.html", "summary.csv", "table_Pendulum-v1.md", "table_Pendulum-v1.tex",
                 "table_Pendulum-v1.csv", "robustness_Pendulum-v1.png", "robustness_Pendulum-v1.svg",
                 "bars_Pendulum-v1_eps0.3.png", "bars_Pendulum-v1_eps0.3.svg"]:
        assert (rep / name).is_file() and (rep / name).stat().st_size > 0, name
    md = (rep / "table_Pendulum-v1.md").read_text()
    assert "min-q ε=0.3" in md and "random ε=0.1" not in md  # --eps restricts the columns
    html = (rep / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 2 and "tiny" in html
    res = runner.invoke(main, ["report", str(out), "--eps", "0.25"])
    assert res.exit_code != 0 and "eps 0.25 is not in the results" in res.output
    res = runner.invoke(main, ["report", str(out), "--format", "md,pdf"])
    assert res.exit_code != 0 and "unknown report format 'pdf'" in res.output


EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_every_example_suite_runs_from_readme_commands():
    """Each example's policies are bundled zoo policies or the --out of a `rbrl train` in README.md."""
    from robustbench_rl.zoo import names

    readme = (EXAMPLES.parent / "README.md").read_text()
    trained = {m for m in re.findall(r"rbrl train [^\n]*(?:\\\n[^\n]*)*--out (\S+)", readme)}
    suites = sorted(EXAMPLES.glob("*.toml"))
    assert {s.name for s in suites} >= {"suite.toml", "ledge.toml"}
    for path in suites:
        suite = load_suite(path)
        assert f"rbrl bench examples/{path.name}" in readme or path.name == "suite.toml", path.name
        for p in suite.policies:
            if p.spec.startswith("zoo:"):
                assert p.spec[4:] in names(), (path.name, p.spec)
            else:
                run = Path(p.spec).parent.relative_to(EXAMPLES.parent).as_posix()
                assert run in trained, (path.name, run)


@pytest.mark.slow
def test_the_ledge_example_compares_both_policies_under_the_same_attacks(tmp_path, ledge_td3_policy):
    import shutil

    from conftest import train_tiny

    (tmp_path / "examples").mkdir()
    shutil.copy(EXAMPLES / "ledge.toml", tmp_path / "examples" / "ledge.toml")
    (tmp_path / "runs" / "ledge-td3").mkdir(parents=True)
    shutil.copy(ledge_td3_policy, tmp_path / "runs" / "ledge-td3" / "policy.safetensors")
    train_tiny(tmp_path / "runs" / "ledge-oatd3", "oa-td3", extra=("--omega", "0", "--eps-train", "0.2"))
    env = {**os.environ, "RBRL_CACHE_DIR": str(tmp_path / "cache")}
    out = tmp_path / "runs" / "bench-ledge"
    res = CliRunner(env=env).invoke(main, ["bench", str(tmp_path / "examples" / "ledge.toml"), "--out", str(out),
                                           "--workers", "1", "--quiet"])
    assert res.exit_code == 0, res.output
    table = pd.read_parquet(out / "results.parquet")
    cells = table.groupby("policy")[["attack", "eps"]].apply(lambda t: set(map(tuple, t.values)))
    assert cells["td3"] == cells["oa-td3"] and len(cells["td3"]) == 1 + 4 * 2
    sources = table[table["attack"] == "min-oa-q"].groupby("policy")["critic_source"].first()
    assert sources["td3"] == "fitted" and sources["oa-td3"] == "own"
    res = CliRunner().invoke(main, ["report", str(out), "--format", "md"])
    assert res.exit_code == 0, res.output
    md = (out / "report" / "table_rbrl-Ledge-v0.md").read_text()
    assert "| TD3 |" in md and "| OA-TD3 |" in md


def test_report_on_an_unfinished_run_and_on_foreign_files(tmp_path, random_checkpoint):
    import shutil

    suite = parse_suite({"policies": [str(random_checkpoint())], **FAST})
    run_bench(suite, tmp_path / "run", workers=1, progress=False)
    (tmp_path / "run" / "results.parquet").unlink()
    (tmp_path / "run" / "results.csv").unlink()
    next((tmp_path / "run" / "cells").glob("*biggest*eps0.3*")).unlink()
    res = CliRunner().invoke(main, ["report", str(tmp_path / "run"), "--format", "html"])
    assert res.exit_code == 0, res.output
    assert "Unfinished run: this report covers 4 of 5 cells" in (tmp_path / "run" / "report" / "report.html").read_text()
    shutil.rmtree(tmp_path / "run" / "cells")
    res = CliRunner().invoke(main, ["report", str(tmp_path / "run")])
    assert res.exit_code != 0 and "unfinished: rerun `rbrl bench`" in res.output
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    res = CliRunner().invoke(main, ["report", str(tmp_path / "other.csv")])
    assert res.exit_code != 0 and "not an rbrl results table (missing columns: policy" in res.output


def test_custom_executor_plugs_in(tmp_path, random_checkpoint):
    from robustbench_rl.executors import SerialExecutor

    seen = []

    class Recording(SerialExecutor):
        def map_unordered(self, fn, tasks):
            seen.extend(t.cell.attack for t in tasks)
            yield from reversed(list(super().map_unordered(fn, list(reversed(tasks)))))

    suite = parse_suite({"policies": [str(random_checkpoint())], **FAST})
    custom = run_bench(suite, tmp_path / "a", executor=Recording(), progress=False).table
    assert sorted(seen) == sorted(["none"] + ["random", "biggest"] * 2)
    pd.testing.assert_frame_equal(custom, run_bench(suite, tmp_path / "b", workers=1, progress=False).table)


def test_zero_critic_gradient_is_flagged_in_the_report(tmp_path, random_checkpoint):
    from robustbench_rl.checkpoint import load_checkpoint, save_checkpoint

    path = random_checkpoint()
    tensors, meta = load_checkpoint(path)
    flat = {k: (v * 0 if k.startswith("critic.") else v) for k, v in tensors.items()}  # a dead critic
    save_checkpoint(path, flat, meta)
    suite = parse_suite({"policies": [str(path)], **{**FAST, "attacks": ["min-q"], "eps": [0.2]}, "pgd_steps": 2})
    run = run_bench(suite, tmp_path / "run", workers=1, progress=False)
    (grad,) = run.manifest["critic_gradients"]
    assert (grad["policy"], grad["attack"], grad["critic_source"], grad["frac_zero"]) == (path.stem, "min-q", "own", 1.0)
    res = CliRunner().invoke(main, ["report", str(tmp_path / "run"), "--format", "html"])
    assert res.exit_code == 0, res.output
    assert "zero_critic_gradient" in (tmp_path / "run" / "report" / "report.html").read_text()
    assert "zero_critic_gradient" in (tmp_path / "run" / "report" / "sanity_flags.txt").read_text()



def test_default_names_fall_back_to_the_run_folder(tmp_path, random_checkpoint):
    paths = []
    for run in ("td3-s0", "td3-s1"):  # the `rbrl train` layout: RUN_DIR/policy.safetensors
        (tmp_path / run).mkdir()
        paths.append(random_checkpoint().replace(tmp_path / run / "policy.safetensors"))
    other = random_checkpoint()
    suite = parse_suite({"policies": [str(p) for p in [*paths, other]], **FAST})
    assert [p.name for p in load_policies(suite)] == ["td3-s0", "td3-s1", other.stem]


def test_same_file_under_another_name_in_a_later_run(tmp_path, random_checkpoint):
    path = random_checkpoint()
    first = parse_suite({"policies": [{"spec": str(path), "name": "first"}], **FAST})
    second = parse_suite({"policies": [{"spec": str(path), "name": "second"}], **FAST})
    run_bench(first, tmp_path / "a", workers=1, progress=False)
    assert set(run_bench(second, tmp_path / "b", workers=1, progress=False).table["policy"]) == {"second"}


# ---------------------------------------------------------------------------------------------------
# Failing before the run folder exists, and repairing what a crash or an edit left behind


def test_own_critic_that_a_policy_lacks_fails_before_the_run_folder_exists(tmp_path, random_checkpoint):
    bare = random_checkpoint(critics=())
    own = parse_suite({"policies": [str(bare)], **{**FAST, "attacks": ["min-q"], "eps": [0.2]}, "critic": "own",
                       "pgd_steps": 2})
    with pytest.raises(ValueError, match=r"critic = \"own\" but policy .* has no 'q' critic for min-q"):
        run_bench(own, tmp_path / "run", workers=1, progress=False)
    assert not (tmp_path / "run").exists()
    # a folder that an earlier failed start left without any finished cell does not block the fixed suite
    (tmp_path / "run" / "cells").mkdir(parents=True)
    (tmp_path / "run" / "manifest.json").write_text(json.dumps({"suite_hash": "another suite", "status": "running"}))
    fixed = parse_suite({"policies": [str(bare)], **FAST})
    assert run_bench(fixed, tmp_path / "run", workers=1, progress=False).cells_run == 5


def test_a_damaged_cell_file_is_recomputed_on_resume(tmp_path, random_checkpoint, capsys):
    suite = parse_suite({"policies": [str(random_checkpoint())], **FAST})
    clean = run_bench(suite, tmp_path / "run", workers=1, progress=False).table
    cells = sorted((tmp_path / "run" / "cells").glob("*.json"))
    cells[0].write_text(cells[0].read_text()[:40])  # cut short
    record = json.loads(cells[1].read_text())
    record["rows"] = {k: v[:-1] for k, v in record["rows"].items()}  # an episode lost
    cells[1].write_text(json.dumps(record))
    with pytest.raises(ValueError, match=rf"{cells[0].name} is a damaged cell file.*rerun `rbrl bench`"):
        read_cell(cells[0])
    again = run_bench(suite, tmp_path / "run", workers=1, progress=False)
    assert (again.cells_run, again.cells_skipped) == (2, 3)
    assert capsys.readouterr().err.count("is damaged; recomputing that cell") == 2
    pd.testing.assert_frame_equal(again.table, clean)


def test_a_stale_lock_with_a_reused_pid_is_taken_over_and_a_live_one_names_its_file(tmp_path, random_checkpoint):
    import socket

    from robustbench_rl.provenance import process_start

    if process_start(os.getpid()) is None:
        pytest.skip("needs /proc to read process start times")
    suite = parse_suite({"policies": [str(random_checkpoint())], **FAST})
    out = tmp_path / "run"
    run_bench(suite, out, workers=1, progress=False)
    lock = out / ".lock"
    # a killed bench's lock whose pid now belongs to a live process (this one) that started at another time
    lock.write_text(f"{socket.gethostname()}:{os.getpid()}:1")
    assert run_bench(suite, out, workers=1, progress=False).cells_skipped == 5
    assert not lock.exists()
    lock.write_text(f"{socket.gethostname()}:{os.getpid()}:{process_start(os.getpid())}")
    with pytest.raises(ValueError, match=rf"another rbrl bench \(pid {os.getpid()}\).*delete the lock file {lock}"):
        run_bench(suite, out, workers=1, progress=False)


def test_a_suite_env_is_the_env_of_its_fitted_critics(tmp_path):
    import gymnasium as gym
    from conftest import write_constant_ledge_policy

    from robustbench_rl.checkpoint import read_metadata
    from robustbench_rl.envs import LedgeEnv

    class LowLedge(LedgeEnv):
        ledge = 0.3

    if "rbrl_test/BenchLowLedge-v0" not in gym.registry:
        gym.register(id="rbrl_test/BenchLowLedge-v0", entry_point=LowLedge, max_episode_steps=1)
    policy = write_constant_ledge_policy(tmp_path / "ledge.safetensors", 0.45)
    suite = parse_suite({"policies": [{"spec": str(policy), "env": "rbrl_test/BenchLowLedge-v0"}],
                         **{**FAST, "attacks": ["min-q"], "eps": [0.1]}, "pgd_steps": 2,
                         "critic_cache": str(tmp_path / "cache"),
                         "fit": {"steps": 20, "transitions": 100, "hidden": [8], "batch_size": 16, "num_envs": 2}})
    table = run_bench(suite, tmp_path / "run", workers=1, progress=False).table
    assert set(table["env_id"]) == {"rbrl_test/BenchLowLedge-v0"}
    (entry,) = (tmp_path / "cache").rglob("q-*.safetensors")
    meta = read_metadata(entry)
    assert meta["env_id"] == meta["policy_context"]["env_id"] == "rbrl_test/BenchLowLedge-v0"
    assert meta["stats"]["behaviour_return_mean"] < 0
