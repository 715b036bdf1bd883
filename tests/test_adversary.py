"""The rl-adversary attack: it learns, it is cached and tied to the policy bytes, it stays in the box,
it is reproducible, and `rbrl fit-adversary` runs and fails cleanly."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from click.testing import CliRunner
from conftest import write_constant_ledge_policy, write_random_checkpoint

from robustbench_rl.attacks import adversary as adversary_module
from robustbench_rl.attacks.adversary import (
    RLAdversaryAttack,
    adversary_cache_path,
    get_adversary,
    is_cached,
    load_adversary,
)
from robustbench_rl.attacks.adversary_fit import AdversaryConfig, fit_adversary
from robustbench_rl.attacks.registry import make_policy_attack
from robustbench_rl.checkpoint import CheckpointError
from robustbench_rl.cli import main
from robustbench_rl.files import file_sha256
from robustbench_rl.policy import load_policy
from robustbench_rl.rollout import evaluate
from robustbench_rl.threat import check_bound

# Ledge is one step long: 400 transitions are 400 episodes, 336 updates (well under a second)
TINY = AdversaryConfig(steps=400, learning_starts=64, hidden=(32, 32), num_envs=16, batch_size=64, lr=1e-3)
TINY_OPTIONS = {"steps": 400, "learning_starts": 64, "hidden": [32, 32], "num_envs": 16, "batch_size": 64, "lr": 1e-3}


@pytest.fixture(scope="module")
def ledge_path(tmp_path_factory):
    # acting at 0.4: over the ledge (0.5) takes a push of more than 0.1, half the budget of eps 0.2
    return write_constant_ledge_policy(tmp_path_factory.mktemp("ledge") / "ledge.safetensors", 0.4)


@pytest.fixture(scope="module")
def ledge(ledge_path):
    return load_policy(str(ledge_path))


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny networks gain nothing from intra-op threads, and on a busy machine threads waiting for each
    other made these fits 20-100x slower; restored afterwards for the other test modules."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _no_fit(*args, **kwargs):
    raise AssertionError("fit_adversary called: the cache should have answered")


def test_adversary_learns_to_push_the_victim_over_the_ledge(ledge, tmp_path):
    attack, source = make_policy_attack(ledge, "rl-adversary", cache_dir=tmp_path, options=TINY_OPTIONS)
    assert isinstance(attack, RLAdversaryAttack) and source == "none"
    result = evaluate(ledge, attack, 0.2, episodes=20, seed=0)
    assert (result.returns == -1.0).mean() >= 0.8  # over the ledge in most episodes (measured: all)
    # the same networks before any update leave the victim on the ledge: the push was learned
    untrained = RLAdversaryAttack(ledge, cache_dir=tmp_path, **{**TINY_OPTIONS, "steps": 64})
    assert evaluate(ledge, untrained, 0.2, episodes=20, seed=0).returns.min() > 0.0


def test_cache_round_trip_loads_without_fitting(ledge, tmp_path, monkeypatch):
    first = get_adversary(ledge, 0.2, config=TINY, cache_dir=tmp_path)
    path = adversary_cache_path(ledge, 0.2, TINY, tmp_path)
    assert not first.cached and first.path == path and path.is_file()
    assert path.parent == tmp_path / "adversaries" / file_sha256(ledge.path)[:16]
    assert path.name.startswith("eps0.2-")
    mtime = path.stat().st_mtime_ns
    monkeypatch.setattr(adversary_module, "fit_adversary", _no_fit)
    second = get_adversary(ledge, 0.2, config=TINY, cache_dir=tmp_path)
    assert second.cached and path.stat().st_mtime_ns == mtime
    for p, q in zip(first.actor.parameters(), second.actor.parameters(), strict=True):
        assert torch.equal(p, q)
    assert is_cached(ledge, 0.2, TINY, tmp_path) and not is_cached(ledge, 0.3, TINY, tmp_path)
    # every setting and the budget key the cache: another one is another file
    others = {adversary_cache_path(ledge, 0.2, dataclasses.replace(TINY, **kw), tmp_path)
              for kw in ({"seed": 1}, {"steps": 401}, {"lr": 2e-3}, {"hidden": (32, 16)})}
    others.add(adversary_cache_path(ledge, 0.3, TINY, tmp_path))
    assert len(others) == 5 and path not in others


def test_an_adversary_of_other_policy_bytes_is_refused(ledge, tmp_path):
    adv = get_adversary(ledge, 0.2, config=TINY, cache_dir=tmp_path / "cache")
    other = load_policy(str(write_constant_ledge_policy(tmp_path / "other.safetensors", 0.3)))
    with pytest.raises(CheckpointError, match="sha256") as err:
        load_adversary(adv.path, other)
    assert "\n" not in str(err.value) and "rbrl fit-adversary" in str(err.value)
    with pytest.raises(CheckpointError, match="eps"):
        load_adversary(adv.path, ledge, eps=0.3)
    assert load_adversary(adv.path, ledge, eps=0.2).eps == 0.2


def test_perturbations_stay_in_the_box(tmp_path):
    policy = load_policy(str(write_random_checkpoint(tmp_path / "pend.safetensors", env_id="Pendulum-v1", seed=1)))
    attack = RLAdversaryAttack(policy, cache_dir=tmp_path, steps=300, learning_starts=100, hidden=[16, 16],
                               num_envs=4, batch_size=32)
    gen = torch.Generator().manual_seed(0)
    obs = torch.randn(512, policy.obs_dim, generator=gen) * 3
    # |a| ** 0.2 puts many actions near the bounds, where the clip matters
    act = torch.rand(512, policy.act_dim, generator=gen) ** 0.2 * torch.randn(512, 1, generator=gen).sign()
    for eps in (0.0, 0.05, 0.3, 2.0):
        out = attack.perturb(obs, act, eps)
        check_bound(act, out, eps)
        assert torch.equal(out, attack.perturb(obs, act, eps))  # deterministic: no noise at attack time
    assert torch.equal(attack.perturb(obs, act, 0.0), act)
    # the rollout asserts the bound on every step as well
    assert evaluate(policy, attack, 0.3, episodes=2, seed=0, max_episode_steps=50).lengths.tolist() == [50, 50]


def test_the_same_seed_gives_the_same_adversary(ledge):
    a, b = fit_adversary(ledge, 0.2, TINY), fit_adversary(ledge, 0.2, TINY)
    c = fit_adversary(ledge, 0.2, dataclasses.replace(TINY, seed=1))
    pa, pb, pc = ([p.detach().clone() for p in x.actor.parameters()] for x in (a, b, c))
    assert all(torch.equal(x, y) for x, y in zip(pa, pb, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(pa, pc, strict=True))


def test_prepare_fits_every_budget_once_and_cached_says_so(ledge, tmp_path, monkeypatch):
    attack = RLAdversaryAttack(ledge, cache_dir=tmp_path, **TINY_OPTIONS)
    assert attack.cached(0.0) and not attack.cached(0.2)
    attack.prepare([0.0, 0.2, 0.3, 0.2])
    assert attack.cached(0.2) and attack.cached(0.3)
    assert len(list((tmp_path / "adversaries").rglob("*.safetensors"))) == 2
    monkeypatch.setattr(adversary_module, "fit_adversary", _no_fit)
    again = RLAdversaryAttack(ledge, cache_dir=tmp_path, **TINY_OPTIONS)  # a worker process, say
    assert again.cached(0.2)
    obs, act = torch.zeros(3, 1), ledge.act(torch.zeros(3, 1))
    assert torch.equal(again.perturb(obs, act, 0.2), attack.perturb(obs, act, 0.2))


@pytest.mark.parametrize(("option", "value", "allowed"), [
    ("steps", 0, ">= 1"), ("num_envs", 0, "[1, 1024]"), ("lr", -1.0, "> 0"), ("gamma", 1.0, "[0, 1)"),
    ("hidden", "a,b", "layer widths"), ("hidden", [0], "[1, 4096]"), ("seed", -1, "[0, "),
    ("batch_size", 2.5, ">= 1"), ("learning_starts", True, ">= 0"),
])
def test_bad_option_values_name_the_option_and_range(ledge, option, value, allowed):
    with pytest.raises(ValueError) as err:
        RLAdversaryAttack(ledge, **{option: value})
    msg = str(err.value)
    assert option in msg and allowed in msg and "\n" not in msg


def _rbrl():
    return main


def test_fit_adversary_command(ledge_path, tmp_path):
    out = tmp_path / "adv.safetensors"
    args = ["fit-adversary", "--policy", str(ledge_path), "--eps", "0.2", "--steps", "1100", "--hidden", "32,32",
            "--num-envs", "16", "--cache-dir", str(tmp_path / "cache"), "--check", "4", "--out", str(out)]
    result = CliRunner().invoke(_rbrl(), args)
    assert result.exit_code == 0, result.output
    assert "trained in" in result.output and "check over 4 episodes" in result.output
    assert "rl-adversary" in result.output and out.is_file()
    assert load_adversary(out, load_policy(str(ledge_path)), eps=0.2).meta["steps"] == 1100
    again = CliRunner().invoke(_rbrl(), [*args[:-2], "--check", "0"])
    assert again.exit_code == 0 and "(cached;" in again.output


@pytest.mark.parametrize(("args", "message"), [
    (["--eps", "0"], "needs no adversary"),
    (["--eps", "3"], "eps must be in"),
    (["--hidden", "a,b"], "hidden"),
    (["--steps", "0"], "--steps"),
    (["--eps", "0.1,0.2", "--out", "x.safetensors"], "single --eps"),
    (["--out", "x.pt"], ".safetensors"),
])
def test_fit_adversary_bad_inputs_are_one_line_errors(ledge_path, tmp_path, args, message):
    result = CliRunner().invoke(_rbrl(), ["fit-adversary", "--policy", str(ledge_path),
                                          "--cache-dir", str(tmp_path), *args])
    assert result.exit_code != 0 and message in result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)


def test_fit_adversary_missing_policy_is_a_one_line_error(tmp_path):
    result = CliRunner().invoke(_rbrl(), ["fit-adversary", "--policy", str(tmp_path / "nope.safetensors")])
    assert result.exit_code == 1 and "checkpoint not found" in result.output
    assert len(result.output.strip().splitlines()) == 1
