"""Shared fixtures: small real checkpoints built through the public save API."""

from __future__ import annotations

import os

os.environ.setdefault("MPLBACKEND", "Agg")  # files only, as `rbrl report` draws: no window, display or not

import pytest
import torch

from robustbench_rl.checkpoint import save_checkpoint, state_tensors
from robustbench_rl.envs import env_spec
from robustbench_rl.networks import build_network


@pytest.fixture(autouse=True)
def _in_a_temporary_working_directory(tmp_path_factory, monkeypatch):
    """Every test runs in an empty working directory of its own, so that nothing it writes there
    (a command's default output folder, MuJoCo's MUJOCO_LOG.TXT) lands in the repository."""
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))


def write_random_checkpoint(path, env_id: str = "Pendulum-v1", algo: str = "td3", hidden=(32, 32),
                            critics=("critic",), seed: int = 0, obs_norm: bool = False):
    """A randomly initialised (untrained) policy checkpoint: enough for I/O and evaluation tests."""
    torch.manual_seed(seed)
    spec = env_spec(env_id)
    nets = {"actor": {"type": "actor", "hidden": list(hidden), "activation": "relu"}}
    for name in critics:
        nets[name] = {"type": "twin_critic", "hidden": list(hidden), "activation": "relu"}
    mods = {k: build_network(v, spec["obs_dim"], spec["act_dim"]) for k, v in nets.items()}
    tensors = state_tensors(mods)
    if obs_norm:
        tensors["obs_rms.mean"] = torch.randn(spec["obs_dim"])
        tensors["obs_rms.var"] = torch.rand(spec["obs_dim"]) + 0.5
    meta = {**spec, "algo": algo, "networks": nets, "seed": seed, "steps": 0, "config": {}, "obs_norm": obs_norm}
    return save_checkpoint(path, tensors, meta)


@pytest.fixture
def random_checkpoint(tmp_path):
    """Factory fixture: random_checkpoint(env_id=..., **kw) -> path of a fresh checkpoint."""
    counter = iter(range(10_000))

    def make(env_id: str = "Pendulum-v1", **kw):
        return write_random_checkpoint(tmp_path / f"policy{next(counter)}.safetensors", env_id=env_id, **kw)

    return make


def write_constant_ledge_policy(path, action: float = 0.45, critics=()):
    """A Ledge-v0 policy whose tanh actor outputs `action` everywhere (zero weights, bias atanh(action))."""
    import math

    spec = env_spec("rbrl/Ledge-v0")
    nets = {"actor": {"type": "actor", "hidden": [8], "activation": "relu"}}
    for name in critics:
        nets[name] = {"type": "twin_critic", "hidden": [8], "activation": "relu"}
    mods = {k: build_network(v, spec["obs_dim"], spec["act_dim"]) for k, v in nets.items()}
    with torch.no_grad():
        for p in mods["actor"].parameters():
            p.zero_()
        mods["actor"].net[-1].bias.fill_(math.atanh(action))
    meta = {**spec, "algo": "handmade", "networks": nets, "seed": 0, "steps": 0, "config": {}}
    return save_checkpoint(path, state_tensors(mods), meta)


def train_tiny(out_dir, algo: str = "td3", env_id: str = "rbrl/Ledge-v0", steps: int = 2500,
               learning_starts: int = 500, extra: tuple[str, ...] = ()):
    """Train a tiny policy through the real `rbrl train` CLI; returns the path of policy.safetensors."""
    from click.testing import CliRunner

    from robustbench_rl.cli import main

    args = ["train", "--algo", algo, "--env", env_id, "--steps", str(steps), "--learning-starts",
            str(learning_starts), "--hidden", "64,64", "--seed", "0", "--out", str(out_dir), "--no-progress", *extra]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    return out_dir / "policy.safetensors"


@pytest.fixture(scope="session")
def ledge_td3_policy(tmp_path_factory):
    """TD3 trained on Ledge-v0 for 2,500 steps (~10 s): acts near the ledge (a ~ 0.44), own critic 'q' only."""
    return train_tiny(tmp_path_factory.mktemp("ledge_td3"))
