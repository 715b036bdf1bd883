"""The bundled zoo: every file matches the manifest, critics are where the attacks look, returns reproduce."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from robustbench_rl import zoo
from robustbench_rl.attacks.critic_cache import critic_cache_path, get_fitted_critic
from robustbench_rl.attacks.fit import KINDS, FitConfig
from robustbench_rl.checkpoint import load_checkpoint
from robustbench_rl.policy import load_policy
from robustbench_rl.rollout import evaluate

NAMES = zoo.names()


def test_the_manifest_names_every_bundled_policy_file():
    bundled = sorted(p.stem for p in zoo.ZOO_DIR.glob("*.safetensors"))
    assert bundled == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_every_zoo_file_matches_its_sha256_and_loads(name, tmp_path):
    zoo.verify(name)
    policy = load_policy(f"zoo:{name}")
    entry = zoo.entry(name)
    assert (policy.env_id, policy.meta["algo"], policy.meta["seed"]) == (entry["env_id"], entry["algo"], entry["seed"])
    for kind in KINDS:  # the bundled fitted critics sit where the attacks look for them
        path = critic_cache_path(policy, kind, FitConfig(), zoo.ZOO_DIR)
        assert path.relative_to(zoo.ZOO_DIR).as_posix() in entry["files"]
    # ... and are used without fitting, whatever the user's cache holds.
    critic = get_fitted_critic(policy, "oa-q", cache_dir=tmp_path)
    assert critic.cached and critic.path.is_relative_to(zoo.ZOO_DIR)
    assert not any(tmp_path.iterdir())
    # The actor acts at full precision; the own critics are stored in float16 (as the manifest says)
    # and come back as float32 modules.
    tensors, _ = load_checkpoint(zoo.zoo_path(name))
    assert all(t.dtype == torch.float32 for k, t in tensors.items() if k.startswith(("actor.", "obs_rms.")))
    own = {t.dtype for k, t in tensors.items() if k.startswith(("critic.", "critic_adv."))}
    assert own == ({torch.float16} if policy.critics else set())
    assert entry.get("own_critic_dtype") == ("float16" if policy.critics else None)
    for view in policy.critics.values():
        assert all(p.dtype == torch.float32 for p in view.module.parameters())


def test_the_whole_zoo_stays_under_40_mb():
    total = sum(p.stat().st_size for p in zoo.ZOO_DIR.rglob("*") if p.is_file())
    assert total <= 40e6, f"the zoo holds {total / 1e6:.1f} MB"


def test_a_short_nominal_evaluation_reproduces_the_recorded_returns():
    if not NAMES:
        pytest.skip("no bundled policies")
    # Only policies whose own episodes agree within 5%: on one that falls at a chaotic moment (TD3 on
    # Hopper: 268 +- 169), float rounding that differs with the batch of envs still in play or with the
    # CPU's kernels moves an episode's return by hundreds, so 2 episodes could not check the record.
    steady = [n for n in NAMES if zoo.entry(n)["nominal"]["std"] <= 0.05 * abs(zoo.entry(n)["nominal"]["mean"])]
    picked = steady[:: max(1, len(steady) // 3)][:3]  # a few policies, spread over the zoo
    assert len(picked) == 3
    for name in picked:
        recorded = zoo.entry(name)["nominal"]["returns"][:2]
        got = evaluate(load_policy(f"zoo:{name}"), "none", 0.0, episodes=2, seed=0, num_envs=2).returns
        np.testing.assert_allclose(got, recorded, rtol=0.02, atol=1.0)


def test_a_bench_of_zoo_policies_uses_the_bundled_critics_in_its_workers(tmp_path):
    from robustbench_rl.bench import run_bench
    from robustbench_rl.suite import parse_suite

    if not NAMES:
        pytest.skip("no bundled policies")
    suite = parse_suite({"policies": [f"zoo:{NAMES[0]}"], "attacks": ["min-q", "min-oa-q"], "eps": [0.1],
                         "episodes": 1, "num_envs": 1, "max_episode_steps": 20, "critic": "fitted",
                         "critic_cache": str(tmp_path / "cache")})
    run = run_bench(suite, tmp_path / "run", workers=2, progress=False)  # worker processes, an empty cache
    assert set(run.table["critic_source"]) == {"none", "fitted"} and len(run.table) == 3
    assert not (tmp_path / "cache").exists()  # nothing was fitted


@pytest.mark.parametrize("suite", sorted(p.name for p in zoo.SUITES.glob("*.toml")))
def test_every_bundled_suite_scores_bundled_policies_only(suite):
    from robustbench_rl.suite import load_suite

    loaded = load_suite(zoo.SUITES / suite)
    assert loaded.policies and all(p.spec.removeprefix("zoo:") in NAMES for p in loaded.policies)
    assert set(loaded.attacks) == {"random", "biggest", "min-q", "min-oa-q"} and loaded.critic == "fitted"


def test_a_damaged_zoo_file_is_named(tmp_path, monkeypatch):
    if not NAMES:
        pytest.skip("no bundled policies")
    name = NAMES[0]
    manifest = zoo.read_manifest()
    first = next(iter(manifest["policies"][name]["files"]))
    manifest["policies"][name]["files"][first] = "0" * 64
    fake = tmp_path / "manifest.json"
    fake.write_text(json.dumps(manifest))
    monkeypatch.setattr(zoo, "MANIFEST", fake)
    with pytest.raises(zoo.ZooError, match=f"zoo:{name}: bundled file {first} does not match"):
        zoo.verify(name)


def test_unknown_names_list_the_bundled_ones():
    with pytest.raises(zoo.ZooError, match="no bundled policy zoo:nope"):
        zoo.entry("nope")
    assert zoo.format_table([]) == "no bundled policies"
    table = zoo.format_table(zoo.summary_rows())
    for name in NAMES:
        assert name in table


def test_zoo_list_and_show_commands():
    from click.testing import CliRunner

    from robustbench_rl.cli import main

    listed = CliRunner().invoke(main, ["zoo", "list", "--json"])
    assert listed.exit_code == 0 and [r["name"] for r in json.loads(listed.output)] == NAMES
    missing = CliRunner().invoke(main, ["zoo", "show", "zoo:nope"])
    assert missing.exit_code == 1 and missing.output.count("Error:") == 1 and "rbrl zoo list" in missing.output
    if NAMES:
        shown = CliRunner().invoke(main, ["zoo", "show", f"zoo:{NAMES[0]}"])
        assert shown.exit_code == 0 and json.loads(shown.output)["files"] == zoo.entry(NAMES[0])["files"]


def test_bench_runs_a_bundled_suite_by_name_into_a_default_folder(tmp_path, monkeypatch, random_checkpoint):
    from click.testing import CliRunner

    from robustbench_rl.cli import main

    suites = tmp_path / "suites"
    suites.mkdir()
    policy = random_checkpoint()
    (suites / "tiny.toml").write_text(
        f'attacks = ["random"]\neps = [0.1]\nepisodes = 2\nnum_envs = 2\nmax_episode_steps = 20\n'
        f'[[policies]]\nspec = "{policy}"\n')
    monkeypatch.setattr(zoo, "SUITES", suites)
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(main, ["bench", "tiny", "--quiet", "--workers", "1"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "runs" / "bench-tiny" / "results.csv").is_file()
    assert "next: rbrl report runs/bench-tiny" in res.output
    # Without a bundled quick suite, `rbrl bench` alone says what to pass instead.
    none = CliRunner().invoke(main, ["bench"])
    assert none.exit_code == 1 and "pass a suite file" in none.output


@pytest.mark.parametrize("config", sorted(p.name for p in zoo.CONFIGS.glob("*.toml")))
def test_every_zoo_config_resolves_to_a_training_run(config, tmp_path):
    from robustbench_rl.config import resolve_config

    run, hp = resolve_config(tmp_path / "run", {}, {}, config_file=zoo.CONFIGS / config)
    stem = config.removesuffix(".toml")
    assert stem.startswith({"InvertedPendulum-v5": "invpend-", "Hopper-v5": "hopper-", "Walker2d-v5": "walker2d-"}[run.env])
    assert stem.removeprefix(stem.split("-")[0] + "-").startswith(run.algo)
    assert run.steps >= (1_000_000 if run.algo.endswith("ppo") and run.env != "InvertedPendulum-v5" else 40_000)
    if run.algo.startswith("oa-"):  # every OA policy trains against an adversary of a stated budget
        assert hp.eps_train in (0.05, 0.1, 0.2)


def zoo_script(name: str):
    """A script of benchmarks/zoo, imported as a module."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "zoo" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"zoo_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_packaging_picks_finished_runs_by_a_prefix_of_their_zoo_name(tmp_path):
    # `package.py --only hopper-td3-s2` must package that one run, not nothing (a prefix of a zoo name,
    # not only of a config name), and a run without its final policy file is never packaged.
    package = zoo_script("package")
    configs, runs = tmp_path / "configs", tmp_path / "runs"
    configs.mkdir()
    for name in ("hopper-td3", "hopper-oa-td3", "hopper-oa-td3-paper"):
        (configs / f"{name}.toml").write_text("")
        for seed in (0, 1, 2):
            (runs / name / f"seed_{seed}").mkdir(parents=True)
            if seed < 2 or name == "hopper-td3":
                (runs / name / f"seed_{seed}" / "policy.safetensors").write_bytes(b"")

    def picked(only):
        return [f"{name}-s{seed}" for name, seed, _ in package.finished_runs(runs, configs, only)]

    assert picked("hopper-td3-s2") == ["hopper-td3-s2"]
    assert picked("hopper-oa-td3") == ["hopper-oa-td3-paper-s0", "hopper-oa-td3-paper-s1",
                                       "hopper-oa-td3-s0", "hopper-oa-td3-s1"]
    assert picked("hopper-oa-td3-s") == ["hopper-oa-td3-s0", "hopper-oa-td3-s1"]
    assert len(picked("")) == 7 and picked("walker2d") == []


def test_the_reproduction_says_when_a_policy_falls_early():
    # A baseline whose nominal episodes end well before the time limit did not learn the task, and OA
    # policies far shorter than their baseline have little for an attack to take: the reader is told both.
    reproduce = zoo_script("reproduce")
    lengths = {"TD3": [200, 212], "PPO": [1000, 1000], "OA-TD3": [127, 127], "OA-PPO": [900, 980]}
    table = pd.DataFrame([{"env_id": "Hopper-v5", "attack": "none", "group": g, "length": n}
                          for g, ns in lengths.items() for n in ns])
    assert reproduce.weak_baselines(table, "Hopper-v5") == ["TD3"]
    text = reproduce.early_falls(table, "Hopper-v5")
    assert "OA-TD3 127 steps against the baselines' longest 1000" in text and "OA-PPO" not in text.split("steps")[0]
    assert "TD3 206 steps of the 1000-step time limit" in text
    table["length"] = 1000
    assert reproduce.early_falls(table, "Hopper-v5") is None and reproduce.weak_baselines(table, "Hopper-v5") == []


def test_the_reproduction_compares_the_paper_schedule_with_the_cheaper_one():
    reproduce = zoo_script("reproduce")

    def rows(group, nominal, worst, seeds):
        return [{"env_id": "Hopper-v5", "group": group, "attack": reproduce.NOMINAL, "eps": 0.0, "value": nominal,
                 "n_policies": seeds},
                {"env_id": "Hopper-v5", "group": group, "attack": reproduce.WORST, "eps": 0.1, "value": worst,
                 "n_policies": seeds}]

    summary = pd.DataFrame(rows("OA-TD3", 319.0, 317.0, 3) + rows(reproduce.PAPER_SCHEDULE, 234.0, 233.0, 1))
    text = reproduce.schedule_verdict(summary, "Hopper-v5", "oa_batch_size 64", 0.1)
    assert text.startswith("On these seeds the paper's schedule does not do better: nominal 234")
    assert "against 319 and 317 with oa_batch_size 64" in text and "1 seed of the paper's schedule" in text
    summary = pd.DataFrame(rows("OA-TD3", 319.0, 317.0, 3) + rows(reproduce.PAPER_SCHEDULE, 900.0, 800.0, 3))
    text = reproduce.schedule_verdict(summary, "Hopper-v5", "oa_batch_size 64", 0.1)
    assert "does better" in text and "preliminary" not in text
    assert reproduce.schedule_verdict(summary[summary["group"] == "OA-TD3"], "Hopper-v5", "oa_batch_size 64", 0.1) is None


def test_the_practitioner_summary_covers_an_env_with_one_pair_trained():
    # An env where only PPO and OA-PPO are trained so far still gets its line in "What this means",
    # saying which comparison is still missing; an env with nothing measured gets none.
    reproduce = zoo_script("reproduce")
    C = reproduce.Claim
    claims = [C("a", "robust", "Walker2d-v5", reproduce.NOT_MEASURED), C("b", "nominal", "Walker2d-v5", reproduce.NOT_MEASURED),
              C("c", "robust", "Walker2d-v5", reproduce.MIXED), C("c", "nominal", "Walker2d-v5", reproduce.NOT_SUPPORTED),
              C("a", "robust", "Hopper-v5", reproduce.NOT_MEASURED), C("c", "robust", "Hopper-v5", reproduce.NOT_MEASURED)]
    summary = pd.DataFrame(columns=["env_id", "group", "attack", "eps", "value"])
    table = pd.DataFrame([{"env_id": "Walker2d-v5", "attack": reproduce.NOMINAL, "group": g, "length": 1000}
                          for g in ("PPO", "OA-PPO")])
    lines = reproduce.meaning(claims, summary, table)
    assert lines == ["- **Walker2d-v5**: OA-PPO was more robust than PPO in some cells at and above its eps_train, "
                     "not in all, and lost nominal return. Not measured yet: OA-TD3 vs TD3 (those policies are "
                     "still to be trained)."]
    notes = reproduce.env_notes(table, "Walker2d-v5", reproduce.training_costs())
    assert "Not in the results yet on Walker2d-v5: TD3, OA-TD3 (their zoo policies are still to be trained)." in notes


def test_the_training_cost_ratio_compares_the_least_disturbed_runs():
    # Other work on the machine only adds wall time, so one contended seed must not move the OA / baseline
    # ratio: it compares each algorithm's fastest seed, and the table still shows the mean and slowest.
    reproduce = zoo_script("reproduce")
    costs = pd.DataFrame([{"env": "Walker2d-v5", "algo": a, "seed": s, "ms_per_step": ms, "oa_batch_size": None,
                           "machine": "m"} for a, s, ms in [("ppo", 0, 1.0), ("ppo", 1, 2.5), ("oa-ppo", 0, 3.0),
                                                            ("oa-ppo", 1, 3.2)]])
    assert reproduce.cost_ratio(costs, "Walker2d-v5", "oa-ppo") == pytest.approx(3.0)
    assert reproduce.cost_ratio(costs, "Walker2d-v5", "oa-td3") is None
    assert "| Walker2d-v5 | ppo | 2 | 1.00 (1.75, 2.50) |  | m |" in reproduce.cost_table(costs)
