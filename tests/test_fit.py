"""Fitted critics: they predict the fixed policy's returns, are reproducible, cached and tied to the policy bytes."""

from __future__ import annotations

import json

import gymnasium as gym
import pytest
import torch
from click.testing import CliRunner
from conftest import write_constant_ledge_policy, write_random_checkpoint
from safetensors import safe_open

from robustbench_rl.attacks.critic_cache import (
    critic_cache_path,
    default_cache_dir,
    get_fitted_critic,
    load_critic,
    save_critic,
)
from robustbench_rl.attacks.fit import (
    FitConfig,
    collect_transitions,
    fit_critic,
    monte_carlo_returns,
    settings_hash,
)
from robustbench_rl.checkpoint import CheckpointError
from robustbench_rl.cli import main
from robustbench_rl.envs import LedgeEnv
from robustbench_rl.files import file_sha256
from robustbench_rl.policy import ObsNormalizer, load_policy

TINY = FitConfig(steps=200, transitions=300, hidden=(16, 16), num_envs=4)


@pytest.fixture(scope="module")
def pendulum(tmp_path_factory):
    path = write_random_checkpoint(tmp_path_factory.mktemp("pend") / "pend.safetensors", env_id="Pendulum-v1",
                                   critics=(), seed=3)
    return load_policy(str(path))


def test_fitted_q_on_ledge_is_the_reward_around_the_policy_action(tmp_path):
    policy = load_policy(str(write_constant_ledge_policy(tmp_path / "ledge.safetensors", 0.45)))
    critic = fit_critic(policy, "q", FitConfig(steps=1500, transitions=2000, hidden=(64, 64), num_envs=16))
    obs0, mc = monte_carlo_returns(policy, 0.99, 3)
    assert torch.allclose(mc, torch.full((3,), 0.45), atol=1e-6)  # one step: the return is the reward a
    # Q^pi(s0, pi(s0)) predicts the Monte-Carlo return within 0.05 (the reward range is 1.5)
    assert (critic(obs0, policy.act(obs0)) - mc).abs().max().item() < 0.05
    # and Q(s0, a) follows the reward a on the safe side of the ledge, -1 well past it
    a = torch.tensor([[0.2], [0.3], [0.4]])
    assert (critic(torch.zeros(3, 1), a) - a[:, 0]).abs().max().item() < 0.07
    assert critic(torch.zeros(1, 1), torch.tensor([[0.7]])).item() < -0.8


def test_fitted_q_on_pendulum_predicts_monte_carlo_returns(pendulum):
    # gamma 0.9 keeps the test fast (effective horizon ~10 steps); the default budget at gamma 0.99 is
    # checked the same way in BENCHMARKS.md
    config = FitConfig(steps=1500, transitions=6000, gamma=0.9, hidden=(64, 64), tau=0.05, num_envs=8)
    critic = fit_critic(pendulum, "q", config)
    obs0, mc = monte_carlo_returns(pendulum, config.gamma, 10, seed=5)
    pred = critic(obs0, pendulum.act(obs0))
    # stated tolerance: mean abs error per episode < 10% of |mean return| (measured: ~2%)
    assert (pred - mc).abs().mean().item() < 0.1 * mc.abs().mean().item()
    # and it ranks the start states: correlation with the Monte-Carlo returns above 0.8
    assert torch.corrcoef(torch.stack([pred, mc]))[0, 1].item() > 0.8


def test_oa_critic_lies_below_the_nominal_critic(pendulum):
    config = FitConfig(steps=800, transitions=4000, gamma=0.9, hidden=(64, 64), tau=0.05, num_envs=8,
                       eps_train=0.3, pgd_steps=3)
    data = collect_transitions(pendulum, config.transitions, num_envs=8, explore_noise=config.explore_noise)
    q = fit_critic(pendulum, "q", config, data=data)
    q_adv = fit_critic(pendulum, "oa-q", config, data=data)
    s = data.obs[:2000]
    a = pendulum.act(s)
    gap = q(s, a) - q_adv(s, a)
    assert gap.mean().item() > 0  # the adversary from the next step on can only cost reward
    assert (gap > 0).float().mean().item() > 0.8


def test_fitting_is_deterministic_for_a_seed(pendulum):
    a = fit_critic(pendulum, "q", TINY)
    b = fit_critic(pendulum, "q", TINY)
    c = fit_critic(pendulum, "q", FitConfig(**{**TINY.__dict__, "seed": 1}))
    obs, act = torch.randn(50, 3), torch.rand(50, 1) * 2 - 1
    assert torch.equal(a(obs, act), b(obs, act))
    assert not torch.equal(a(obs, act), c(obs, act))


def test_gathering_respects_the_budget_and_flags_only_terminations(pendulum):
    data = collect_transitions(pendulum, 1000, num_envs=4, explore_noise=0.3, seed=0)
    assert len(data) == 1000 and data.obs.shape == (1000, 3) and data.act.shape == (1000, 1)
    assert data.act.abs().max() <= 1.0
    assert data.done.sum() == 0  # Pendulum only truncates: the critic must bootstrap through time limits
    # 4 slots x 250 steps of 200-step episodes: 4 finished, 4 more started
    assert data.episodes == 8 and len(data.episode_returns) == 4
    again = collect_transitions(pendulum, 1000, num_envs=4, explore_noise=0.3, seed=0)
    assert torch.equal(data.act, again.act) and torch.equal(data.next_obs, again.next_obs)


def test_cache_hit_is_free_and_one_edited_weight_invalidates_the_critic(tmp_path, monkeypatch):
    import robustbench_rl.attacks.critic_cache as fit  # where get_fitted_critic calls fit_critic

    path = write_random_checkpoint(tmp_path / "p.safetensors", env_id="Pendulum-v1", critics=(), seed=1)
    policy = load_policy(str(path))
    calls = []
    real = fit.fit_critic
    monkeypatch.setattr(fit, "fit_critic", lambda *a, **k: calls.append(1) or real(*a, **k))
    cache = tmp_path / "cache"
    first = get_fitted_critic(policy, "q", config=TINY, cache_dir=cache)
    cached_file = critic_cache_path(policy, "q", TINY, cache)
    assert cached_file.is_file() and first.path == cached_file
    get_fitted_critic(policy, "q", config=TINY, cache_dir=cache)
    assert len(calls) == 1
    # another setting is another critic
    get_fitted_critic(policy, "q", config=FitConfig(**{**TINY.__dict__, "steps": 201}), cache_dir=cache)
    assert len(calls) == 2

    # nudge one weight and save again: a valid checkpoint (its checksum rewritten), but other policy bytes
    from robustbench_rl.checkpoint import load_checkpoint, save_checkpoint

    tensors, meta = load_checkpoint(path)
    last = sorted(tensors)[-1]
    tensors[last] = tensors[last].clone()
    tensors[last].view(-1)[0] += 1e-3
    save_checkpoint(path, tensors, meta)
    edited = load_policy(str(path))
    with pytest.raises(CheckpointError, match="refit"):
        load_critic(cached_file, edited)
    assert critic_cache_path(edited, "q", TINY, cache) != cached_file
    get_fitted_critic(edited, "q", config=TINY, cache_dir=cache)
    assert len(calls) == 3
    # a damaged cache entry is refitted over, not a dead end
    damaged = critic_cache_path(edited, "q", TINY, cache)
    damaged.write_bytes(damaged.read_bytes()[:100])
    again = get_fitted_critic(edited, "q", config=TINY, cache_dir=cache)
    assert len(calls) == 4 and again.path == damaged and not again.cached
    obs, act = torch.randn(8, 3), torch.rand(8, 1) * 2 - 1
    assert torch.equal(load_critic(damaged, edited, "q")(obs, act), again(obs, act))  # the refit was saved there


def test_critic_file_is_safetensors_tied_to_the_policy_hash(tmp_path, pendulum):
    critic = fit_critic(pendulum, "oa-q", TINY)
    out = save_critic(critic, tmp_path / "c.safetensors")
    with safe_open(str(out), framework="pt") as fh:
        meta = json.loads(fh.metadata()["rbrl"])
        keys = set(fh.keys())
    assert meta["policy_sha256"] == file_sha256(pendulum.path)
    assert meta["kind"] == "oa-q" and meta["fit"]["eps_train"] == TINY.eps_train and meta["fit"]["steps"] == 200
    assert {"obs_rms.mean", "obs_rms.var"} <= keys and any(k.startswith("critic_adv.") for k in keys)
    back = load_critic(out, pendulum, "oa-q")
    obs, act = torch.randn(20, 3), torch.rand(20, 1) * 2 - 1
    assert torch.equal(back(obs, act), critic(obs, act))
    with pytest.raises(CheckpointError, match="not 'q'"):
        load_critic(out, pendulum, "q")
    with pytest.raises(CheckpointError, match="not a fitted critic"):
        load_critic(pendulum.path, pendulum)
    other = load_policy(str(write_random_checkpoint(tmp_path / "o.safetensors", seed=9)))
    with pytest.raises(CheckpointError, match="sha256"):
        load_critic(out, other)
    # same bytes, other observation statistics (e.g. an SB3 zip with another VecNormalize file)
    renormed = load_policy(str(pendulum.path))
    renormed.normalize = ObsNormalizer(torch.zeros(3), torch.full((3,), 4.0))
    with pytest.raises(CheckpointError, match="context"):
        load_critic(out, renormed)
    assert critic_cache_path(renormed, "q", TINY, tmp_path) != critic_cache_path(pendulum, "q", TINY, tmp_path)


def test_bad_settings_and_policies_without_files_are_clear_errors(pendulum):
    with pytest.raises(ValueError, match=r"invalid fitting setting gamma=1\.0"):
        FitConfig(gamma=1.0)
    with pytest.raises(ValueError, match="invalid fitting setting steps=0"):
        FitConfig(steps=0)
    with pytest.raises(ValueError, match="critic kind"):
        fit_critic(pendulum, "v", TINY)

    class NoFile:
        name, env_id, obs_dim, act_dim, critics, path = "mem", "Pendulum-v1", 3, 1, {}, None

    with pytest.raises(ValueError, match="no checkpoint file"):
        get_fitted_critic(NoFile(), "q", config=TINY)
    assert FitConfig(hidden=[8, 8]).hidden == (8, 8)  # lists from TOML / JSON are accepted


def test_default_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("RBRL_CACHE_DIR", str(tmp_path / "rb"))
    assert default_cache_dir() == tmp_path / "rb"
    monkeypatch.delenv("RBRL_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "rbrl"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "rbrl"


def test_fit_critic_cli_fits_once_then_reads_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RBRL_CACHE_DIR", str(tmp_path / "cache"))
    policy = write_random_checkpoint(tmp_path / "p.safetensors", env_id="Pendulum-v1", critics=())
    args = ["fit-critic", "--policy", str(policy), "--kind", "q", "--steps", "100", "--transitions", "300",
            "--check", "2"]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    assert "fitted in" in first.output and "check: Q(s0, pi(s0))" in first.output
    assert len(list((tmp_path / "cache" / "critics").rglob("q-*.safetensors"))) == 1
    second = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "copy.safetensors")])
    assert second.exit_code == 0 and "(cached;" in second.output
    (cached,) = (tmp_path / "cache" / "critics").rglob("q-*.safetensors")
    loaded = load_policy(str(policy))
    obs, act = torch.randn(8, 3), torch.rand(8, 1) * 2 - 1
    copy = load_critic(tmp_path / "copy.safetensors", loaded, "q")
    assert torch.equal(copy(obs, act), load_critic(cached, loaded, "q")(obs, act))  # --out copies the cached critic
    oa = CliRunner().invoke(main, ["fit-critic", "--policy", str(policy), "--kind", "oa-q", "--eps-train", "0.2",
                                   "--steps", "50", "--transitions", "200"])
    assert oa.exit_code == 0, oa.output
    (oa_file,) = (tmp_path / "cache" / "critics").rglob("oa-q-*.safetensors")
    assert load_critic(oa_file, loaded, "oa-q").meta["fit"]["eps_train"] == 0.2
    bad = CliRunner().invoke(main, ["fit-critic", "--policy", str(tmp_path / "nope.safetensors")])
    assert bad.exit_code != 0 and bad.output.startswith("Error:") and "Traceback" not in bad.output
    assert "checkpoint not found" in bad.output
    bad = CliRunner().invoke(main, ["fit-critic", "--policy", str(policy), "--kind", "v"])
    assert bad.exit_code != 0 and "'v' is not one of" in bad.output and "Traceback" not in bad.output


class _LowLedge(LedgeEnv):
    """Ledge with the cliff at 0.3: a policy acting at 0.45 earns 0.45 on Ledge and -1 here."""

    ledge = 0.3


if "rbrl_test/LowLedge-v0" not in gym.registry:
    gym.register(id="rbrl_test/LowLedge-v0", entry_point=_LowLedge, max_episode_steps=1)


def test_fit_critic_cli_fits_on_the_env_given_and_keys_the_cache_by_it(tmp_path, monkeypatch):
    monkeypatch.setenv("RBRL_CACHE_DIR", str(tmp_path / "cache"))
    policy = write_constant_ledge_policy(tmp_path / "ledge.safetensors", 0.45)
    args = ["fit-critic", "--policy", str(policy), "--steps", "50", "--transitions", "200", "--check", "0"]
    low = CliRunner().invoke(main, [*args, "--env", "rbrl_test/LowLedge-v0", "--out", str(tmp_path / "low.safetensors")])
    own = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "own.safetensors")])
    assert low.exit_code == 0 and own.exit_code == 0, low.output + own.output
    assert "fitted in" in own.output  # not the LowLedge critic from the cache
    low_meta, own_meta = (json.loads(safe_open(str(tmp_path / f), framework="pt").metadata()["rbrl"])
                          for f in ("low.safetensors", "own.safetensors"))
    assert low_meta["env_id"] == low_meta["policy_context"]["env_id"] == "rbrl_test/LowLedge-v0"
    assert own_meta["env_id"] == "rbrl/Ledge-v0"
    # the transitions came from the env asked for: past LowLedge's cliff, the policy's actions mostly earn -1
    assert low_meta["stats"]["behaviour_return_mean"] < 0 < own_meta["stats"]["behaviour_return_mean"]
    loaded = load_policy(str(policy))
    low_critic = load_critic(tmp_path / "low.safetensors", loaded, "q", env_id="rbrl_test/LowLedge-v0")
    assert low_critic.kind == "q" and low_critic.path == tmp_path / "low.safetensors"
    with pytest.raises(CheckpointError, match="another context"):
        load_critic(tmp_path / "low.safetensors", loaded, "q")


def test_fit_critic_cli_says_fitted_after_refitting_a_damaged_cache_entry(tmp_path, monkeypatch):
    monkeypatch.setenv("RBRL_CACHE_DIR", str(tmp_path / "cache"))
    policy = write_random_checkpoint(tmp_path / "p.safetensors", env_id="Pendulum-v1", critics=())
    args = ["fit-critic", "--policy", str(policy), "--steps", "20", "--transitions", "100", "--check", "0"]
    assert CliRunner().invoke(main, args).exit_code == 0
    (entry,) = (tmp_path / "cache").rglob("q-*.safetensors")
    entry.write_bytes(entry.read_bytes()[:50])
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert "fitted in" in res.output and "(cached" not in res.output
    assert "(cached;" in CliRunner().invoke(main, args).output


@pytest.mark.parametrize("field,value", [("lr", float("inf")), ("gamma", float("nan")), ("seed", 2**32),
                                         ("seed", -1), ("steps", 1.5), ("batch_size", True), ("hidden", "x"),
                                         ("pgd_start", "corner"), ("pgd_restarts", 0)])
def test_fit_config_rejects_non_finite_non_integer_and_out_of_range_values(field, value):
    with pytest.raises(ValueError, match=f"invalid fitting setting {field}="):
        FitConfig(**{field: value})


def test_an_unwritable_cache_fails_before_the_fit(tmp_path, monkeypatch, pendulum):
    import robustbench_rl.attacks.critic_cache as fit  # where get_fitted_critic calls fit_critic

    calls = []
    monkeypatch.setattr(fit, "fit_critic", lambda *a, **k: calls.append(1))
    (tmp_path / "afile").write_text("not a folder")
    with pytest.raises(ValueError, match=r"cannot save fitted critics in .*afile"):
        get_fitted_critic(pendulum, "q", config=TINY, cache_dir=tmp_path / "afile" / "cache")
    assert calls == []


def test_oa_target_is_the_trainers_inner_minimum_and_its_settings_key_the_cache(pendulum, monkeypatch):
    """The fitted Q_adv^pi target uses the shared OA inner minimisation (clean action a candidate) with
    the configured starts; the OA knobs key the oa-q cache only, so a nominal fit is never refitted."""
    from robustbench_rl.attacks import fit as fit_module

    calls = []
    real = fit_module.worst_case

    def spy(f, a, eps, steps, **kw):
        calls.append((eps, steps, kw["start"], kw["restarts"]))
        x, v = real(f, a, eps, steps, **kw)
        assert torch.all(v <= f(a) + 1e-6)  # never above the nominal target
        return x, v

    monkeypatch.setattr(fit_module, "worst_case", spy)
    config = FitConfig(steps=3, transitions=64, num_envs=4, hidden=(8, 8), batch_size=16, eps_train=0.2, pgd_steps=2,
                       pgd_start="random", pgd_restarts=3)
    fit_critic(pendulum, "oa-q", config)
    assert calls == [(0.2, 2, "random", 3)] * 3
    default = FitConfig()
    assert (default.pgd_start, default.pgd_restarts) == ("fgsm", 2)
    assert "pgd_start" not in default.settings("q") and default.settings("oa-q")["pgd_restarts"] == 2
    other = FitConfig(pgd_restarts=1)
    assert settings_hash(other.settings("q")) == settings_hash(default.settings("q"))
    assert settings_hash(other.settings("oa-q")) != settings_hash(default.settings("oa-q"))
