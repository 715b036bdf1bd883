"""Settings of policy-built attacks (lookahead, rl-adversary): `--attack-option NAME.KEY=VALUE` on
`rbrl attack`, `[attack_options.NAME]` in a suite, checked up front and part of a cell's identity."""

from __future__ import annotations

import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import write_constant_ledge_policy

from robustbench_rl.attacks.registry import (
    attack_option_names,
    check_attack_options,
    default_attacks,
    needs_policy,
)
from robustbench_rl.cells import expand_cells, load_policies
from robustbench_rl.cli import main, parse_attack_options
from robustbench_rl.suite import parse_suite


@pytest.fixture
def ledge(tmp_path):
    # acting at 0.4: a push of more than 0.1 sends it over the ledge at 0.5
    return write_constant_ledge_policy(tmp_path / "ledge.safetensors", 0.4)


def test_all_means_the_per_step_attacks_and_policy_built_ones_are_named():
    assert default_attacks() == ["random", "biggest", "min-q", "min-oa-q"]
    assert needs_policy("lookahead") and needs_policy("rl-adversary") and not needs_policy("min-q")
    assert {"horizon", "samples", "iterations"} <= set(attack_option_names("lookahead"))
    assert {"steps", "seed", "hidden"} <= set(attack_option_names("rl-adversary"))
    assert "policy" not in attack_option_names("lookahead") and attack_option_names("random") == []


def test_option_values_are_read_as_toml_scalars():
    got = parse_attack_options(None, None, ("lookahead.horizon=3", "lookahead.samples = 16",
                                            "rl-adversary.hidden=[32, 32]", "rl-adversary.lr=1e-3"))
    assert got == {"lookahead": {"horizon": 3, "samples": 16}, "rl-adversary": {"hidden": [32, 32], "lr": 1e-3}}


@pytest.mark.parametrize(("options", "needle"), [
    ({"nope": {"horizon": 2}}, "unknown attack 'nope'"),
    ({"random": {"seed": 1}}, "takes no options"),
    ({"lookahead": {"horizont": 2}}, "unknown option 'horizont' of lookahead"),
    ({"lookahead": 3}, "must be a table"),
])
def test_bad_options_are_named(options, needle):
    with pytest.raises(ValueError, match=needle):
        check_attack_options(options)


@pytest.mark.parametrize(("args", "needle"), [
    (["--attack-option", "lookahead.horizon"], "use NAME.KEY=VALUE"),
    (["--attack-option", "horizon=2"], "use NAME.KEY=VALUE"),
    (["--attack-option", "lookahead.horizont=2"], "unknown option 'horizont'"),
    (["--attack-option", "min-q.steps=2"], "takes no options"),
    (["--attack-option", "lookahead.horizon=2"], "which --attack does not run"),
    (["--attack", "lookahead", "--attack-option", "lookahead.horizon=0"], "horizon"),
])
def test_attack_option_errors_are_one_line_cli_errors(ledge, tmp_path, args, needle):
    out = tmp_path / "rows.csv"
    res = CliRunner().invoke(main, ["attack", "--policy", str(ledge), "--eps", "0.2", "--episodes", "2",
                                    "--out", str(out), *(["--attack", "random"] if "--attack" not in args else []),
                                    *args])
    assert res.exit_code != 0 and needle in res.output, res.output
    assert "Traceback" not in res.output and not out.exists()


def test_rbrl_attack_runs_lookahead_with_options_next_to_random(ledge, tmp_path):
    out = tmp_path / "rows.csv"
    res = CliRunner().invoke(main, ["attack", "--policy", str(ledge), "--eps", "0.2", "--attack", "random,lookahead",
                                    "--attack-option", "lookahead.samples=16", "--attack-option", "lookahead.horizon=1",
                                    "--episodes", "8", "--num-envs", "4", "--out", str(out)])
    assert res.exit_code == 0, res.output
    rows = pd.read_csv(out)
    means = rows.groupby("attack")["return"].mean()
    # the look-ahead sees the ledge one step ahead and always pushes over it; random noise mostly does not
    assert means["lookahead"] == pytest.approx(-1.0) and means["random"] > means["lookahead"]
    assert set(rows.loc[rows.attack == "lookahead", "critic_source"]) == {"none"}


def _suite(ledge, **extra):
    data = {"name": "opts", "policies": [{"spec": str(ledge), "name": "ledge"}], "eps": [0.2], "episodes": 2,
            "attacks": ["random", "lookahead"], **extra}
    return parse_suite(data)


def test_suite_options_are_validated_and_change_the_cell_identity(ledge):
    plain, tuned = _suite(ledge), _suite(ledge, attack_options={"lookahead": {"horizon": 2}})
    assert "attack_options" not in plain.identity()  # suites without options keep their earlier identity
    assert tuned.options_of("lookahead") == {"horizon": 2} and tuned.options_of("random") == {}

    def keys(suite):
        return {(c.attack, c.eps): c.key for c in expand_cells(suite, load_policies(suite))}

    a, b = keys(plain), keys(tuned)
    assert a[("random", 0.2)] == b[("random", 0.2)]  # options of one attack leave the others' cells alone
    assert a[("lookahead", 0.2)] != b[("lookahead", 0.2)]
    with pytest.raises(ValueError, match="unknown option 'depth' of lookahead"):
        _suite(ledge, attack_options={"lookahead": {"depth": 2}})
    with pytest.raises(ValueError, match="attacks does not include 'rl-adversary'"):
        _suite(ledge, attack_options={"rl-adversary": {"steps": 100}})


def test_critic_attack_cells_are_tied_to_the_fit_settings(ledge, monkeypatch):
    """A fitted critic changes with its fitting settings, so the cells it scored must be rescored:
    a bench resumed after a fit change never keeps numbers from the old critic."""
    from robustbench_rl import cells

    def keys(**extra):
        suite = _suite(ledge, attacks=["random", "min-q", "min-oa-q"], **extra)
        return {c.attack: c.key for c in expand_cells(suite, load_policies(suite)) if c.eps > 0}

    base = keys()
    oa_fit = keys(fit={"pgd_restarts": 3})  # an OA-only knob: the Q^pi fit is unchanged
    assert oa_fit["min-oa-q"] != base["min-oa-q"]
    assert oa_fit["min-q"] == base["min-q"] and oa_fit["random"] == base["random"]
    both = keys(fit={"steps": 500})
    assert both["min-q"] != base["min-q"] and both["min-oa-q"] != base["min-oa-q"]
    # A change of the default fit (a new rbrl version) rescored fitted cells, not own-critic ones.
    own, fitted = keys(critic="own"), keys(critic="fitted")
    monkeypatch.setattr(cells, "fitted_settings_hashes", lambda suite: {"min-q": "new", "min-oa-q": "new"})
    assert keys(critic="own") == own
    assert keys(critic="fitted")["min-oa-q"] != fitted["min-oa-q"]


def test_a_bench_runs_both_policy_built_attacks_and_trains_the_adversary_once(ledge, tmp_path, monkeypatch):
    from robustbench_rl.attacks import adversary as adversary_module
    from robustbench_rl.bench import run_bench

    calls = []
    real = adversary_module.fit_adversary

    def counting(policy, eps, config=None, **kw):
        calls.append(eps)
        return real(policy, eps, config, **kw)

    monkeypatch.setattr(adversary_module, "fit_adversary", counting)
    tiny = {"steps": 400, "learning_starts": 64, "hidden": [32, 32], "num_envs": 16, "batch_size": 64, "lr": 1e-3}
    suite = _suite(ledge, attacks=["random", "lookahead", "rl-adversary"], eps=[0.2], episodes=6, eval_seeds=[0, 1],
                   critic_cache=str(tmp_path / "cache"),
                   attack_options={"lookahead": {"samples": 8, "horizon": 1}, "rl-adversary": tiny})
    table = run_bench(suite, tmp_path / "run", workers=1, progress=False).table
    assert calls == [0.2]  # two eval seeds, one adversary: fitted in the parent, read from the cache after
    means = table.groupby("attack")["return"].mean()
    assert means["lookahead"] == pytest.approx(-1.0) and means["rl-adversary"] == pytest.approx(-1.0)
    assert len(table) == 6 * 2 * 4  # nominal + three attacks, two eval seeds
