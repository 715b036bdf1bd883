"""Checkpoints are data: hostile or damaged files give one CheckpointError, never code, a memory bomb or NaNs."""

from __future__ import annotations

import json
import math
import random
import struct
import sys
import time

import pytest
import torch
from safetensors.torch import save_file

from robustbench_rl.checkpoint import (
    CHECKSUM_KEY,
    CheckpointError,
    load_checkpoint,
    read_metadata,
    save_checkpoint,
    state_tensors,
    tensor_checksum,
)
from robustbench_rl.policy import CheckpointPolicy, load_policy
from tests.conftest import write_random_checkpoint

PLANTED = "rbrl_planted_env_module"


def _rewrite(path, tensors, meta):
    """Write `tensors` and `meta` as-is (no checksum added, nothing checked), like a foreign tool would."""
    save_file(tensors, path, metadata={"rbrl": json.dumps(meta)})
    return path


def _split(raw: bytes) -> tuple[dict, bytes]:
    n = struct.unpack("<Q", raw[:8])[0]
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def _join(header: dict, data: bytes) -> bytes:
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


# ------------------------------------------------------------------------------------------------
# A checkpoint's env id never makes rbrl import a module


@pytest.fixture
def planted_module(tmp_path, monkeypatch):
    """An importable module that leaves a flag file when imported (what a hostile env id would run)."""
    flag = tmp_path / "imported"
    src = tmp_path / "mods"
    src.mkdir()
    (src / f"{PLANTED}.py").write_text(f"import pathlib\npathlib.Path({str(flag)!r}).write_text('ran')\n")
    monkeypatch.syspath_prepend(str(src))
    yield flag
    sys.modules.pop(PLANTED, None)


def _module_env_checkpoint(path, env_id=f"{PLANTED}:Planted-v0"):
    tensors, meta = load_checkpoint(write_random_checkpoint(path, hidden=(4,)))
    meta["env_id"] = env_id
    return save_checkpoint(path, tensors, meta)


def test_loading_never_imports_the_module_a_checkpoint_env_id_names(tmp_path, planted_module):
    from robustbench_rl.policy import resolve_env_id

    path = _module_env_checkpoint(tmp_path / "p.safetensors")
    assert read_metadata(path)["env_id"] == f"{PLANTED}:Planted-v0"
    policy = load_policy(str(path))
    with pytest.raises(CheckpointError, match=rf"names env '{PLANTED}:Planted-v0', which rbrl will not import "
                                              rf"on a file's say-so; pass --env {PLANTED}:Planted-v0"):
        resolve_env_id(policy)
    assert not planted_module.exists() and PLANTED not in sys.modules


def test_a_module_env_id_is_used_once_the_user_names_it(tmp_path, planted_module):
    from robustbench_rl.policy import resolve_env_id

    path = _module_env_checkpoint(tmp_path / "p.safetensors")
    named = load_policy(str(path), env_id=f"{PLANTED}:Planted-v0")
    assert resolve_env_id(named) == f"{PLANTED}:Planted-v0"
    assert resolve_env_id(load_policy(str(path)), "Pendulum-v1") == "Pendulum-v1"  # the user's env wins
    assert not planted_module.exists()  # loading itself still imported nothing
    plain = load_policy(str(write_random_checkpoint(tmp_path / "q.safetensors", hidden=(4,))))
    assert resolve_env_id(plain) == "Pendulum-v1"


def test_policies_built_in_memory_keep_their_env(tmp_path):
    from robustbench_rl.checkpoint import build_modules
    from robustbench_rl.policy import resolve_env_id

    tensors, meta = load_checkpoint(write_random_checkpoint(tmp_path / "p.safetensors", hidden=(4,)))
    meta["env_id"] = "my_envs:Custom-v0"  # a trainer's own config, not a file
    policy = CheckpointPolicy(build_modules(tensors, meta), meta, tensors, name="mem")
    assert resolve_env_id(policy) == "my_envs:Custom-v0"


# ------------------------------------------------------------------------------------------------
# Metadata is checked against the header's tensor shapes before anything is allocated


@pytest.fixture
def no_building(monkeypatch):
    """Fail the test if any network is built (the checks must come first)."""
    import robustbench_rl.networks as networks

    def refuse(*args, **kwargs):
        raise AssertionError("a network was built before the checkpoint was validated")

    monkeypatch.setattr(networks, "build_network", refuse)


@pytest.mark.parametrize("hidden, match", [
    ([16384, 16384], r"tensor actor\.net\.0\.weight has shape \(4, 3\), expected \(16384, 3\)"),
    ([4, 16384], r"tensor actor\.net\.2\.weight has shape \(4, 4\), expected \(16384, 4\)"),
    ([16384, 16384, 16384], r"missing tensor actor\.net\.6\.bias"),
    ([10**9], r"networks\.actor is invalid: hidden=\[1000000000\] must be a list"),
    ([4] * 1000, r"networks\.actor is invalid: hidden=.* at most 64 layer widths"),
])
def test_huge_declared_layers_cost_nothing(tmp_path, no_building, hidden, match):
    tensors, meta = load_checkpoint(write_random_checkpoint(tmp_path / "p.safetensors", hidden=(4, 4), critics=()))
    meta["networks"]["actor"]["hidden"] = hidden
    path = _rewrite(tmp_path / "bomb.safetensors", tensors, meta)
    assert path.stat().st_size < 20_000
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match=match):
        load_policy(str(path))
    with pytest.raises(CheckpointError, match=match):
        read_metadata(path)
    assert time.perf_counter() - start < 1.0


def test_spec_names_match_the_modules_that_build_them():
    from robustbench_rl.netspec import ACTIVATION_NAMES, NETWORK_KINDS
    from robustbench_rl.networks import ACTIVATIONS, NETWORK_TYPES

    assert tuple(NETWORK_TYPES) == NETWORK_KINDS and tuple(ACTIVATIONS) == ACTIVATION_NAMES


def test_network_shapes_match_the_built_modules():
    from robustbench_rl.networks import NETWORK_TYPES, build_network, network_shapes

    for kind in NETWORK_TYPES:
        for hidden in ([], [5], [7, 3, 2]):
            spec = {"type": kind, "hidden": hidden}
            built = {k: tuple(v.shape) for k, v in build_network(spec, 6, 2).state_dict().items()}
            assert network_shapes(spec, 6, 2) == built, (kind, hidden)


# ------------------------------------------------------------------------------------------------
# Every bad field is one CheckpointError naming it


@pytest.mark.parametrize("field, value, match", [
    ("env_id", 3, "env_id=3"),
    ("env_id", None, "env_id=None"),
    ("env_id", "", "env_id=''"),
    ("env_id", ["Pendulum-v1"], r"env_id=\['Pendulum-v1'\]"),
    ("env_id", "Pendulum-v1\nINFO: all good", "env_id="),
    ("algo", {"name": "td3"}, "algo="),
    ("algo", 1.5, "algo=1.5"),
    ("obs_dim", "3", "obs_dim='3'"),
    ("obs_dim", 3.0, "obs_dim=3.0"),
    ("obs_dim", True, "obs_dim=True"),
    ("act_dim", 0, "act_dim=0"),
    ("obs_clip", 0, "obs_clip=0"),
    ("obs_clip", -5.0, "obs_clip=-5.0"),
    ("obs_clip", "10", "obs_clip='10'"),
    ("obs_clip", float("nan"), "obs_clip=nan"),
    ("obs_clip", float("inf"), "obs_clip=inf"),
    ("obs_clip", True, "obs_clip=True"),
    ("format_version", "1", "format version '1'"),
    ("format_version", True, "format version True"),
    ("networks", [], r"networks=\[\]"),
    ("networks", {}, "networks={}"),
    ("seed", "0", "seed='0'"),
    ("steps", -1, "steps=-1"),
    (CHECKSUM_KEY, 12, f"{CHECKSUM_KEY}=12"),
])
def test_bad_metadata_fields_are_checkpoint_errors_naming_the_field(tmp_path, field, value, match):
    tensors, meta = load_checkpoint(write_random_checkpoint(tmp_path / "p.safetensors", hidden=(4,), obs_norm=True))
    meta[field] = value
    path = _rewrite(tmp_path / "bad.safetensors", tensors, meta)
    with pytest.raises(CheckpointError, match=match) as err:
        load_policy(str(path))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("prefix, spec, match", [
    ("actor", {"type": "twin_critic", "hidden": [4], "activation": "relu"}, r"networks\.actor\.type='twin_critic'"),
    ("actor", {"type": "value", "hidden": [4]}, r"networks\.actor\.type='value'"),
    ("critic", {"type": "actor", "hidden": [4]}, r"networks\.critic\.type='actor'"),
    ("actor", {"type": "actor", "hidden": [4], "activation": "gelu"}, "activation='gelu'"),
    ("actor", {"type": "actor", "hidden": [4], "activation": 1}, "activation=1"),
    ("actor", {"type": "actor", "hidden": "4"}, "hidden='4'"),
    ("actor", {"type": "actor", "hidden": [4.0]}, r"hidden=\[4.0\]"),
    ("actor", {"type": "actor", "hidden": [True]}, r"hidden=\[True\]"),
    ("actor", {"type": "actor", "hidden": [-4]}, r"hidden=\[-4\]"),
    ("actor", {"type": "actor"}, "hidden=None"),
    ("actor", {"type": "actor", "hidden": [4], "dropout": 0.5}, "unknown field 'dropout'"),
    ("actor", {"type": ["actor"], "hidden": [4]}, r"type=\['actor'\]"),
    ("actor", ["actor", [4]], r"networks\.actor is invalid"),
    ("policy", {"type": "actor", "hidden": [4]}, "networks='policy' names an unknown module"),
])
def test_bad_network_specs_are_checkpoint_errors_naming_the_field(tmp_path, prefix, spec, match):
    tensors, meta = load_checkpoint(write_random_checkpoint(tmp_path / "p.safetensors", hidden=(4,)))
    meta["networks"][prefix] = spec
    path = _rewrite(tmp_path / "bad.safetensors", tensors, meta)
    with pytest.raises(CheckpointError, match=match):
        load_policy(str(path))


def test_gaussian_log_std_init_must_be_finite(tmp_path):
    from robustbench_rl.networks import build_network

    with pytest.raises(ValueError, match="log_std_init=nan"):
        build_network({"type": "gaussian_actor", "hidden": [4], "log_std_init": float("nan")}, 3, 1)


@pytest.mark.parametrize("key, value", [
    ("actor.net.0.weight", float("nan")),
    ("actor.net.2.bias", float("inf")),
    ("critic.q2.0.weight", -float("inf")),
    ("obs_rms.mean", float("nan")),
    ("obs_rms.var", float("inf")),
])
def test_non_finite_weights_are_refused_on_load(tmp_path, key, value):
    tensors, meta = load_checkpoint(write_random_checkpoint(tmp_path / "p.safetensors", hidden=(4,), obs_norm=True))
    tensors[key].view(-1)[0] = value
    path = save_checkpoint(tmp_path / "nan.safetensors", tensors, meta)  # a valid checksum: the values are the problem
    with pytest.raises(CheckpointError, match=rf"tensor {key} holds NaN or infinite values"):
        load_policy(str(path))


def test_negative_observation_variance_is_refused(tmp_path):
    tensors, meta = load_checkpoint(write_random_checkpoint(tmp_path / "p.safetensors", hidden=(4,), obs_norm=True))
    tensors["obs_rms.var"][0] = -1.0
    with pytest.raises(CheckpointError, match=r"obs_rms\.var has negative entries"):
        load_policy(str(save_checkpoint(tmp_path / "neg.safetensors", tensors, meta)))


def test_integer_tensors_are_refused_from_the_header(tmp_path):
    tensors, meta = load_checkpoint(write_random_checkpoint(tmp_path / "p.safetensors", hidden=(4,)))
    tensors["actor.net.0.bias"] = torch.zeros(4, dtype=torch.int32)
    with pytest.raises(CheckpointError, match=r"tensor actor\.net\.0\.bias has dtype I32"):
        load_policy(str(_rewrite(tmp_path / "int.safetensors", tensors, meta)))


# ------------------------------------------------------------------------------------------------
# The checksum catches silent corruption; checkpoints without one still load


def test_a_flipped_weight_bit_is_detected(tmp_path):
    path = write_random_checkpoint(tmp_path / "p.safetensors", hidden=(4,))
    header, data = _split(path.read_bytes())
    first = min((v for k, v in header.items() if k != "__metadata__"), key=lambda v: v["data_offsets"][0])
    flipped = bytearray(data)
    flipped[first["data_offsets"][0]] ^= 1  # the lowest mantissa bit of a float32: still a finite number
    path.write_bytes(_join(header, bytes(flipped)))
    with pytest.raises(CheckpointError, match=f"do not match the checksum in the metadata \\({CHECKSUM_KEY}\\)"):
        load_policy(str(path))


def test_checkpoints_without_a_checksum_load_to_the_same_tensors(tmp_path):
    new = write_random_checkpoint(tmp_path / "new.safetensors", obs_norm=True)
    tensors, meta = load_checkpoint(new)
    assert meta[CHECKSUM_KEY] == tensor_checksum(tensors)
    old_meta = {k: v for k, v in meta.items() if k != CHECKSUM_KEY}
    old = _rewrite(tmp_path / "old.safetensors", tensors, old_meta)  # as written before checksums existed
    old_tensors, loaded_meta = load_checkpoint(old)
    assert CHECKSUM_KEY not in loaded_meta
    assert old_tensors.keys() == tensors.keys()
    assert all(torch.equal(old_tensors[k], tensors[k]) for k in tensors)
    obs = torch.randn(16, 3)
    assert torch.equal(load_policy(str(old)).act(obs), load_policy(str(new)).act(obs))
    resaved = save_checkpoint(tmp_path / "resaved.safetensors", old_tensors, loaded_meta)
    assert read_metadata(resaved)[CHECKSUM_KEY] == meta[CHECKSUM_KEY]


def test_checksum_does_not_depend_on_file_layout_and_resaving_replaces_it(tmp_path):
    original = write_random_checkpoint(tmp_path / "p.safetensors", hidden=(4,))
    tensors, meta = load_checkpoint(original)
    # safetensors sorts what it saves, so lay the data out by hand: the same tensors in reverse order
    header, data = _split(original.read_bytes())
    names = sorted((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][0])
    chunks, offset = [], 0
    for name in reversed(names):
        lo, hi = header[name]["data_offsets"]
        chunks.append(data[lo:hi])
        header[name]["data_offsets"] = [offset, offset + hi - lo]
        offset += hi - lo
    path = tmp_path / "reordered.safetensors"
    path.write_bytes(_join(header, b"".join(chunks)))
    assert _split(path.read_bytes())[1] != data  # the layout really differs
    obs, act = torch.randn(8, 3), torch.rand(8, 1) * 2 - 1
    same, ref = load_policy(str(path)), load_policy(str(original))
    assert torch.equal(same.act(obs), ref.act(obs)) and torch.equal(same.critics["q"](obs, act), ref.critics["q"](obs, act))
    changed = {k: v * 0 if k.startswith("critic.") else v for k, v in tensors.items()}
    path = save_checkpoint(tmp_path / "changed.safetensors", changed, meta)  # meta still holds the old checksum
    assert read_metadata(path)[CHECKSUM_KEY] == tensor_checksum(changed) != meta[CHECKSUM_KEY]
    resaved = load_policy(str(path))  # loads with the new weights, the zeroed critic among them
    assert torch.equal(resaved.critics["q"](obs, act), torch.zeros(8)) and torch.equal(resaved.act(obs), ref.act(obs))


def test_state_tensors_round_trip_bit_for_bit(tmp_path):
    from robustbench_rl.networks import GaussianActor

    torch.manual_seed(0)
    actor = GaussianActor(3, 1, [8])
    meta = {"env_id": "Pendulum-v1", "obs_dim": 3, "act_dim": 1, "algo": "ppo",
            "networks": {"actor": {"type": "gaussian_actor", "hidden": [8], "log_std_init": 0}}}
    saved = state_tensors({"actor": actor})
    tensors, _ = load_checkpoint(save_checkpoint(tmp_path / "g.safetensors", saved, meta))
    assert all(torch.equal(tensors[k], saved[k]) for k in saved)


# ------------------------------------------------------------------------------------------------
# Fuzz: mutated checkpoints raise CheckpointError or load a finite, usable policy; nothing else

_VALUES = [None, True, False, 0, -1, 1, 3, 4, 2**31, 2**63, 10**30, 0.5, -1e308, 1e308, float("nan"), float("inf"),
           -float("inf"), "", "x", "3", "mod:Env-v0", "relu", "gelu", "actor", "twin_critic", "gaussian_actor",
           "value", [], [4], [0], [16384, 16384], [4, 4, 4], ["4"], {}, {"type": "actor", "hidden": [4]}, "a" * 5000]
_DTYPES = ["F16", "BF16", "F64", "I32", "I64", "U8", "BOOL", "F8_E4M3", "XX", 3, None]
_RAW_METADATA = ["", "null", "[]", "{", '{"a": ' + "[" * 100_000 + "]" * 100_000 + "}", '{"obs_dim": ' + "9" * 10_000 + "}",
                 "NaN", '"rbrl"', "{}"]


def _paths(meta: dict) -> list[tuple]:
    out = [(k,) for k in meta]
    networks = meta.get("networks")
    for prefix, spec in (networks.items() if isinstance(networks, dict) else ()):
        out.append(("networks", prefix))
        for field, value in (spec.items() if isinstance(spec, dict) else ()):
            out.append(("networks", prefix, field))
            if isinstance(value, list):
                out += [("networks", prefix, field, i) for i in range(len(value))]
    return out


def _mutate_meta(meta: dict, rng: random.Random) -> str:
    path = rng.choice(_paths(meta))
    parent = meta
    for key in path[:-1]:
        parent = parent[key]
    if rng.random() < 0.2 and isinstance(parent, dict):
        del parent[path[-1]]
        return f"del {path}"
    parent[path[-1]] = rng.choice(_VALUES)
    return f"{path}={str(parent[path[-1]])[:40]}"


def _mutate(raw: bytes, rng: random.Random) -> tuple[bytes, str]:
    header, data = _split(raw)
    names = sorted(k for k in header if k != "__metadata__")
    kind = rng.choice(["meta", "meta", "meta", "raw_meta", "shape", "dtype", "offsets", "values", "values_resaved",
                       "flip", "flip_header", "truncate"])
    if kind == "meta":
        meta = json.loads(header["__metadata__"]["rbrl"])
        desc = "; ".join(_mutate_meta(meta, rng) for _ in range(rng.randint(1, 3)))
        header["__metadata__"]["rbrl"] = json.dumps(meta)
        return _join(header, data), desc
    if kind == "raw_meta":
        header["__metadata__"]["rbrl"] = rng.choice(_RAW_METADATA)
        return _join(header, data), f"raw metadata {header['__metadata__']['rbrl'][:20]!r}"
    if kind in ("shape", "dtype", "offsets"):
        entry = header[rng.choice(names)]
        if kind == "shape":
            entry["shape"] = rng.choice([[], [0], [1], [16384, 16384], entry["shape"][::-1], [-1, 4], [2**40],
                                         [*entry["shape"], 1], [x * 2 for x in entry["shape"]]])
        elif kind == "dtype":
            entry["dtype"] = rng.choice(_DTYPES)
        else:
            entry["data_offsets"] = [rng.randint(-2, len(data) + 2) for _ in range(rng.choice([1, 2, 2, 3]))]
        return _join(header, data), f"{kind} -> {entry}"
    if kind in ("values", "values_resaved"):
        from safetensors.torch import load

        tensors = load(raw)
        meta = json.loads(header["__metadata__"]["rbrl"])
        name = rng.choice(names)
        tensors[name].view(-1)[rng.randrange(tensors[name].numel())] = rng.choice([float("nan"), float("inf"), -float("inf")])
        if kind == "values_resaved":
            meta[CHECKSUM_KEY] = tensor_checksum(tensors)
        from safetensors.torch import save

        return save(tensors, metadata={"rbrl": json.dumps(meta)}), f"{kind} {name}"
    out = bytearray(raw)
    if kind == "truncate":
        return bytes(out[:rng.randrange(len(out))]), "truncate"
    lo = 0 if kind == "flip" else 8
    hi = len(out) if kind == "flip" else 8 + struct.unpack("<Q", raw[:8])[0]
    for _ in range(rng.randint(1, 8)):
        i = rng.randrange(lo, hi)
        out[i] = rng.randrange(256)
    return bytes(out), kind


def test_fuzzed_checkpoints_raise_only_checkpoint_error_and_never_load_non_finite(tmp_path):
    raw = write_random_checkpoint(tmp_path / "base.safetensors", hidden=(4,), obs_norm=True).read_bytes()
    rng = random.Random(1234)
    path = tmp_path / "fuzz.safetensors"
    loaded = refused = 0
    start = time.perf_counter()
    for i in range(400):
        data, desc = _mutate(raw, rng)
        path.write_bytes(data)
        try:
            policy = load_policy(str(path))
        except CheckpointError as err:
            assert "\n" not in str(err), desc
            refused += 1
            continue
        except Exception as err:  # any other exception is the failure being looked for
            pytest.fail(f"mutation {i} ({desc}) raised {type(err).__name__}: {str(err)[:200]}")
        loaded += 1
        state = [t for m in [*policy.modules.values(), policy.normalize] for t in m.state_dict().values()]
        assert all(bool(torch.isfinite(t).all()) for t in state), f"mutation {i} ({desc}) loaded non-finite weights"
        assert policy.act(torch.zeros(2, policy.obs_dim)).shape == (2, policy.act_dim), desc
        assert isinstance(policy.env_id, str) and isinstance(policy.algo, str), desc
        assert math.isfinite(float(policy.meta.get("obs_clip", 10.0))), desc
    assert refused > 200 and loaded > 0  # both outcomes were exercised
    assert time.perf_counter() - start < 30
