"""Checkpoints: round trip, metadata, and every way a file can be wrong -> CheckpointError."""

from __future__ import annotations

import json
import pickle
import struct

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from robustbench_rl.checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    load_checkpoint,
    read_metadata,
    save_checkpoint,
)
from robustbench_rl.policy import load_policy
from tests.conftest import write_random_checkpoint


def test_round_trip_actions_identical(random_checkpoint):
    path = random_checkpoint("Hopper-v5", obs_norm=True)
    a = load_policy(str(path))
    b = load_policy(str(path))
    obs = torch.randn(64, 11)
    assert torch.equal(a.act(obs), b.act(obs))
    assert a.act(obs).abs().max() <= 1.0
    assert set(a.critics) == {"q"}
    assert a.critics["q"](obs, a.act(obs)).shape == (64,)


def test_reload_matches_the_modules_that_were_saved(tmp_path):
    from robustbench_rl.checkpoint import state_tensors
    from robustbench_rl.networks import Actor

    torch.manual_seed(3)
    actor = Actor(3, 1, [16, 16])
    meta = {"env_id": "Pendulum-v1", "obs_dim": 3, "act_dim": 1, "algo": "td3",
            "networks": {"actor": {"type": "actor", "hidden": [16, 16]}}}
    path = save_checkpoint(tmp_path / "p.safetensors", state_tensors({"actor": actor}), meta)
    obs = torch.randn(10, 3)
    assert torch.equal(load_policy(str(path)).act(obs), actor(obs).clamp(-1, 1))


def test_obs_normalisation_is_applied_inside_the_policy(random_checkpoint):
    path = random_checkpoint("Pendulum-v1", obs_norm=True)
    policy = load_policy(str(path))
    tensors, _ = load_checkpoint(path)
    obs = torch.randn(5, 3)
    normed = ((obs - tensors["obs_rms.mean"]) / torch.sqrt(tensors["obs_rms.var"] + 1e-8)).clamp(-10, 10)
    assert torch.allclose(policy.act(obs), policy.actor(normed).clamp(-1, 1))


def test_metadata_is_complete(random_checkpoint):
    meta = read_metadata(random_checkpoint("Pendulum-v1"))
    for key in ("format_version", "algo", "env_id", "obs_dim", "act_dim", "action_low", "action_high",
                "networks", "config", "seed", "steps", "versions", "created", "tensor_sha256"):
        assert key in meta, key
    assert meta["format_version"] == FORMAT_VERSION
    assert meta["action_low"] == [-2.0] and meta["action_high"] == [2.0]
    assert {"torch", "gymnasium", "mujoco"} <= set(meta["versions"])


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_policy(str(tmp_path / "nope.safetensors"))


class _Boom:
    def __reduce__(self):
        return (exec, ("import pathlib; pathlib.Path(__import__('os').environ['RBRL_PWNED']).write_text('x')",))


def test_renamed_pickle_is_refused_and_never_runs(tmp_path, monkeypatch):
    flag = tmp_path / "pwned"
    monkeypatch.setenv("RBRL_PWNED", str(flag))
    path = tmp_path / "evil.safetensors"
    path.write_bytes(pickle.dumps(_Boom()))
    with pytest.raises(CheckpointError, match="not a valid safetensors"):
        load_policy(str(path))
    assert not flag.exists()
    torch_pickle = tmp_path / "torch.safetensors"
    torch.save({"actor.net.0.weight": torch.zeros(2)}, torch_pickle)
    with pytest.raises(CheckpointError, match=r"not a valid safetensors checkpoint.*never pickles"):
        load_policy(str(torch_pickle))


def test_unknown_format_version(random_checkpoint, tmp_path):
    tensors, meta = load_checkpoint(random_checkpoint())
    meta["format_version"] = 99
    path = tmp_path / "future.safetensors"
    save_file(tensors, path, metadata={"rbrl": json.dumps(meta)})
    with pytest.raises(CheckpointError, match="format version 99"):
        load_policy(str(path))


def test_foreign_safetensors_without_metadata(tmp_path):
    path = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(3)}, path)
    with pytest.raises(CheckpointError, match="no rbrl metadata"):
        load_policy(str(path))


def test_missing_tensor(random_checkpoint, tmp_path):
    tensors, meta = load_checkpoint(random_checkpoint())
    del tensors["actor.net.2.bias"]
    path = tmp_path / "cut.safetensors"
    save_file(tensors, path, metadata={"rbrl": json.dumps(meta)})
    with pytest.raises(CheckpointError, match=r"missing tensor actor\.net\.2\.bias"):
        load_policy(str(path))


def test_misshaped_tensor(random_checkpoint, tmp_path):
    tensors, meta = load_checkpoint(random_checkpoint())
    tensors["critic.q1.0.weight"] = torch.zeros(7, 4)
    path = tmp_path / "shape.safetensors"
    save_file(tensors, path, metadata={"rbrl": json.dumps(meta)})
    with pytest.raises(CheckpointError, match=r"critic\.q1\.0\.weight has shape \(7, 4\)"):
        load_policy(str(path))


def test_policy_env_dimension_mismatch(random_checkpoint):
    path = random_checkpoint("Hopper-v5")
    with pytest.raises(CheckpointError, match="trained for Hopper-v5"):
        load_policy(str(path), env_id="Pendulum-v1")


def test_zoo_spec_unknown_name_lists_bundled():
    with pytest.raises(CheckpointError, match="no bundled policy zoo:nope"):
        load_policy("zoo:nope")


def test_save_is_atomic_no_partial_file_on_failure(tmp_path, monkeypatch):
    import robustbench_rl.checkpoint as ck

    path = tmp_path / "p.safetensors"
    write_random_checkpoint(path)
    before = path.read_bytes()

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(ck.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        write_random_checkpoint(path, seed=1)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["p.safetensors"]


@pytest.fixture(scope="module")
def valid_bytes(tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzz") / "base.safetensors"
    write_random_checkpoint(path, hidden=(4,))
    return path.read_bytes()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzzed_files_only_ever_raise_checkpoint_error(valid_bytes, tmp_path, data):
    raw = bytearray(valid_bytes)
    mode = data.draw(st.sampled_from(["flip", "truncate", "header_len", "garbage"]))
    if mode == "flip":
        for _ in range(data.draw(st.integers(1, 8))):
            i = data.draw(st.integers(0, len(raw) - 1))
            raw[i] = data.draw(st.integers(0, 255))
    elif mode == "truncate":
        raw = raw[: data.draw(st.integers(0, len(raw) - 1))]
    elif mode == "header_len":
        raw[:8] = struct.pack("<Q", data.draw(st.integers(0, 2**64 - 1)))
    else:
        raw = bytearray(data.draw(st.binary(max_size=300)))
    path = tmp_path / "fuzz.safetensors"
    path.write_bytes(bytes(raw))
    try:
        policy = load_policy(str(path))
    except CheckpointError:
        return
    # a surviving file must still be a fully usable policy
    out = policy.act(torch.zeros(2, policy.obs_dim))
    assert out.shape == (2, policy.act_dim)
