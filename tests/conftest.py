"""Shared fixtures: small real checkpoints built through the public save API."""

from __future__ import annotations

import pytest
import torch
from robustbench_rl.agents.networks import build_network

from robustbench_rl.checkpoint import save_checkpoint, state_tensors
from robustbench_rl.envs import env_spec


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
