"""Single-file checkpoints: safetensors tensors + JSON metadata, never pickle.

Layout of a checkpoint: tensors under the prefixes ``actor.``, ``critic.``, ``critic_adv.`` and
``obs_rms.`` (running mean / var of observations), and one safetensors metadata entry ``rbrl`` holding
JSON (format version, algo, env id, dims, env action bounds, network specs, training config, seed,
steps, package versions, creation time, and ``tensor_sha256``: a checksum of the tensors).

A checkpoint is data, never code, whoever wrote it. Loading parses only that JSON and raw tensor
bytes, and checks in this order, stopping at the first problem with a :class:`CheckpointError`: the
metadata's fields (types and ranges), then the tensors' names, dtypes and shapes as the file's header
declares them (so nothing is allocated for metadata that the file's own bytes do not back), then the
checksum, then that every value is finite. The env id is only a string here: a ``"module:EnvId"`` id
is never imported on a file's say-so (see :func:`robustbench_rl.policy.resolve_env_id`).

The checksum catches silent corruption of the tensor bytes (a bit flipped on a disk or in a copy),
not tampering: whoever can edit the tensors can rewrite it, so the zoo's manifest pins files by their
sha256. Checkpoints written before the checksum existed have none and load as before, trusted on
their structure and finite values alone; re-saving one (``save_checkpoint``) adds it.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetensors import safe_open

from robustbench_rl.errors import CheckpointError
from robustbench_rl.files import atomic_write_bytes, atomic_writer, file_sha256

if TYPE_CHECKING:  # torch is imported where tensors are handled, so that reading metadata stays cheap
    import torch
    from torch import nn

__all__ = ["CheckpointError", "atomic_write_bytes", "atomic_writer", "build_modules", "check_layout",
           "check_metadata", "file_sha256", "load_checkpoint", "package_versions", "read_metadata",
           "save_checkpoint", "state_tensors", "tensor_checksum"]

FORMAT_VERSION = 1
METADATA_KEY = "rbrl"
REQUIRED_META = ("format_version", "algo", "env_id", "obs_dim", "act_dim", "networks")
PREFIX_TYPES: dict[str, tuple[str, ...]] = {
    "actor": ("actor", "gaussian_actor"),
    "critic": ("twin_critic",),
    "critic_adv": ("twin_critic",),
    "value": ("value",),
}
"""The network types each module prefix may hold (an actor must act, a critic must take actions)."""
MODULE_PREFIXES = tuple(PREFIX_TYPES)
OBS_RMS_KEYS = ("obs_rms.mean", "obs_rms.var")
CHECKSUM_KEY = "tensor_sha256"
FLOAT_DTYPES = ("BF16", "F16", "F32", "F64")
"""Tensor dtypes a checkpoint may hold, as the safetensors header names them."""
MAX_METADATA_CHARS = 1 << 20


def package_versions() -> dict[str, str]:
    """Versions of the packages that decide what a checkpoint's numbers mean."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("robustbench-rl", "torch", "gymnasium", "mujoco", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def state_tensors(modules: Mapping[str, nn.Module | None]) -> dict[str, torch.Tensor]:
    """Flatten named modules into ``prefix.param`` tensors (contiguous CPU copies, as safetensors needs)."""
    out: dict[str, torch.Tensor] = {}
    for prefix, module in modules.items():
        if module is None:
            continue
        for key, value in module.state_dict().items():
            out[f"{prefix}.{key}"] = value.detach().to("cpu").contiguous().clone()
    return out


def tensor_checksum(tensors: Mapping[str, torch.Tensor]) -> str:
    """sha256 over the tensors' names, dtypes, shapes and raw bytes, in name order.

    Independent of how a file lays the tensors out, so a checkpoint re-saved with the same tensors
    keeps its checksum, and any changed byte of any tensor changes it.
    """
    import torch

    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        h.update(f"{name}\0{str(t.dtype).removeprefix('torch.')}\0{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def save_checkpoint(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> Path:
    """Write one ``.safetensors`` checkpoint atomically and return its path.

    `tensors` are flat ``prefix.name`` tensors (see :func:`state_tensors`); `meta` must hold at least
    algo, env_id, obs_dim, act_dim and networks (a spec per module prefix). The format version,
    package versions, creation time and the tensors' checksum are added here so that every checkpoint
    carries them (a checksum already in `meta`, from a file it was read from, is replaced).
    """
    from safetensors.torch import save as _st_save

    missing = [k for k in ("algo", "env_id", "obs_dim", "act_dim", "networks") if k not in meta]
    if missing:
        raise CheckpointError(f"checkpoint metadata lacks {missing}")
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    full = {
        "format_version": FORMAT_VERSION,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "versions": package_versions(),
        **meta,
    }
    full["format_version"] = FORMAT_VERSION
    full[CHECKSUM_KEY] = tensor_checksum(tensors)
    data = _st_save(tensors, metadata={METADATA_KEY: json.dumps(full, sort_keys=True)})
    atomic_write_bytes(path, data)
    return Path(path)


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """Only the JSON metadata of a checkpoint (cheap: reads the header, no tensor data).

    The metadata is validated as by :func:`load_checkpoint`, tensor shapes included (the header
    records them), but the tensors' values are neither read nor checked.
    """
    return _open(path, tensors=False)[1]


def load_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a checkpoint's tensors and metadata, validating both before anything is built from them.

    Every failure is a :class:`CheckpointError` naming the problem: missing file, not a safetensors
    file (a renamed pickle included: its bytes are never executed), no ``rbrl`` metadata, an unknown
    format version, a metadata field of the wrong type or range (:func:`check_metadata`), a tensor
    missing, unexpected, mis-shaped or not floating point (checked on the file's header, before any
    tensor data is read: :func:`check_layout`), a checksum mismatch, or non-finite values.
    """
    return _open(path, tensors=True)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _bad_field(path: str, field: str, value: Any, want: str) -> CheckpointError:
    return CheckpointError(
        f"{path}: metadata field {field}={_short(value)} {want}; the file is damaged or was not written by rbrl"
    )


def _not_safetensors(path: Path, err: Exception) -> CheckpointError:
    return CheckpointError(
        f"{path} is not a valid safetensors checkpoint ({type(err).__name__}: {str(err)[:120]}); "
        "rbrl only reads .safetensors files it wrote, never pickles"
    )


def check_metadata(meta: Any, path: str = "checkpoint") -> dict[str, Any]:
    """Check every metadata field that loading relies on, and return `meta`; CheckpointError names the field.

    Metadata comes from a file, so nothing in it is trusted: the format version, string fields
    (algo, env_id), positive integer dims, network specs (a known type per prefix, an actor that is
    an actor, widths and depth in range: see :func:`~robustbench_rl.netspec.check_spec`),
    optional obs_clip (a positive finite number), seed, steps and checksum are checked for type and
    range. Nothing is built or allocated here.
    """
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path} has corrupt rbrl metadata (expected a JSON object)")
    lacking = [k for k in REQUIRED_META if k not in meta]
    if lacking:
        raise CheckpointError(f"{path} metadata lacks {lacking}; the file is damaged or not a policy checkpoint")
    if not _is_int(meta["format_version"]) or meta["format_version"] != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {_short(meta['format_version'])}; this rbrl reads version "
            f"{FORMAT_VERSION} (upgrade robustbench-rl or re-export the checkpoint)"
        )
    for key in ("algo", "env_id"):
        value = meta[key]
        if not isinstance(value, str) or not value.strip() or len(value) > 256 or not value.isprintable():
            raise _bad_field(path, key, value, "must be a non-empty, printable string of at most 256 characters")
    check_network_fields(meta, path)
    if "obs_clip" in meta:
        clip = meta["obs_clip"]
        if not isinstance(clip, (int, float)) or isinstance(clip, bool) or not math.isfinite(clip) or clip <= 0:
            raise _bad_field(path, "obs_clip", clip, "must be a positive finite number")
    if meta.get("seed") is not None and not _is_int(meta["seed"]):
        raise _bad_field(path, "seed", meta["seed"], "must be an integer or null")
    if meta.get("steps") is not None and (not _is_int(meta["steps"]) or meta["steps"] < 0):
        raise _bad_field(path, "steps", meta["steps"], "must be a non-negative integer or null")
    if CHECKSUM_KEY in meta:
        digest = meta[CHECKSUM_KEY]
        if not isinstance(digest, str) or len(digest) != 64 or set(digest) - set("0123456789abcdef"):
            raise _bad_field(path, CHECKSUM_KEY, digest, "must be a sha256 hex digest")
    return meta


def check_network_fields(meta: Mapping[str, Any], path: str = "checkpoint") -> None:
    """Check the metadata fields modules are built from: positive integer dims and the network specs.

    The part of :func:`check_metadata` that :func:`build_modules` needs, also for metadata that never
    went through a file (a trainer's own, which has no format version yet).
    """
    from robustbench_rl.netspec import check_spec

    for key in ("obs_dim", "act_dim", "networks"):
        if key not in meta:
            raise CheckpointError(f"{path} metadata lacks {[key]}; the file is damaged or not a policy checkpoint")
    for key in ("obs_dim", "act_dim"):
        if not _is_int(meta[key]) or meta[key] < 1:
            raise _bad_field(path, key, meta[key], "must be a positive integer")
    networks = meta["networks"]
    if not isinstance(networks, dict) or not networks:
        raise _bad_field(path, "networks", networks, f"must be an object mapping some of {list(PREFIX_TYPES)} to specs")
    for prefix, spec in networks.items():
        if prefix not in PREFIX_TYPES:
            raise _bad_field(path, "networks", prefix, f"names an unknown module; known: {list(PREFIX_TYPES)}")
        try:
            kind = check_spec(spec)
        except ValueError as err:
            raise CheckpointError(f"{path}: metadata field networks.{prefix} is invalid: {err}") from None
        if kind not in PREFIX_TYPES[prefix]:
            raise _bad_field(path, f"networks.{prefix}.type", kind,
                             f"cannot be a {prefix} network; use one of {list(PREFIX_TYPES[prefix])}")


def check_layout(meta: Mapping[str, Any], shapes: Mapping[str, tuple[int, ...]], path: str = "checkpoint") -> None:
    """Check tensor names and shapes against validated metadata, before any tensor or module exists.

    Every network in ``meta["networks"]`` must have exactly the tensors, of exactly the shapes, that
    its spec implies (computed arithmetically, nothing is built), and the only other tensors allowed
    are ``obs_rms.mean`` and ``obs_rms.var``, both of shape (obs_dim,). `shapes` come from the file's
    header, whose sizes safetensors checks against the file's length, so a file cannot make the
    loader allocate more than its own size.
    """
    from robustbench_rl.netspec import network_shapes

    expected: dict[str, tuple[int, ...]] = {}
    for prefix, spec in meta["networks"].items():
        for key, shape in network_shapes(spec, meta["obs_dim"], meta["act_dim"]).items():
            expected[f"{prefix}.{key}"] = shape
    if any(k in shapes for k in OBS_RMS_KEYS):
        expected.update({k: (meta["obs_dim"],) for k in OBS_RMS_KEYS})
    absent = sorted(set(expected) - set(shapes))
    if absent:
        raise CheckpointError(f"{path}: missing tensor {absent[0]} (the file is truncated or damaged)")
    extra = sorted(set(shapes) - set(expected))
    if extra:
        raise CheckpointError(
            f"{path}: unexpected tensor {_short(extra[0])}, not part of any network the metadata declares "
            "(the file is damaged or was not written by rbrl)"
        )
    for key, want in expected.items():
        if tuple(shapes[key]) != want:
            raise CheckpointError(f"{path}: tensor {key} has shape {tuple(shapes[key])}, expected {want} from the metadata")


def _check_values(tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any], path: str) -> None:
    import torch

    if CHECKSUM_KEY in meta and tensor_checksum(tensors) != meta[CHECKSUM_KEY]:
        raise CheckpointError(
            f"{path}: the tensors do not match the checksum in the metadata ({CHECKSUM_KEY}); "
            "the file is corrupted: download or copy it again"
        )
    for key, t in tensors.items():
        if not bool(torch.isfinite(t).all()):
            raise CheckpointError(
                f"{path}: tensor {key} holds NaN or infinite values; the training run diverged or the file is "
                "damaged (use an earlier checkpoint)"
            )
    var = tensors.get("obs_rms.var")
    if var is not None and bool((var < 0).any()):
        raise CheckpointError(f"{path}: tensor obs_rms.var has negative entries; a variance is never negative")


def _open(path: str | os.PathLike, tensors: bool) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path} (check the path, or train one with `rbrl train`)")
    try:
        # numpy reads the header without importing torch; torch only when the tensors are wanted
        handle = safe_open(str(path), framework="pt", device="cpu") if tensors else safe_open(str(path), framework="numpy")
    except Exception as err:  # safetensors raises several types for malformed files
        raise _not_safetensors(path, err) from None
    with handle as fh:
        try:
            header = fh.metadata() or {}
            slices = {k: fh.get_slice(k) for k in fh.keys()}
            shapes = {k: tuple(s.get_shape()) for k, s in slices.items()}
            dtypes = {k: s.get_dtype() for k, s in slices.items()}
        except Exception as err:
            raise _not_safetensors(path, err) from None
        if METADATA_KEY not in header:
            raise CheckpointError(f"{path} has no rbrl metadata; it was not written by rbrl's save_checkpoint")
        text = header[METADATA_KEY]
        if len(text) > MAX_METADATA_CHARS:
            raise CheckpointError(f"{path} has {len(text)} characters of rbrl metadata, more than any rbrl "
                                  f"checkpoint holds ({MAX_METADATA_CHARS}); the file is damaged")
        try:
            meta = json.loads(text)
        except (ValueError, RecursionError) as err:  # ValueError: bad JSON, or an integer too long to parse
            raise CheckpointError(f"{path} has corrupt rbrl metadata (invalid JSON: {str(err)[:120]})") from None
        check_metadata(meta, str(path))
        for key, dtype in sorted(dtypes.items()):
            if dtype not in FLOAT_DTYPES:
                raise CheckpointError(f"{path}: tensor {key} has dtype {dtype}, expected one of {sorted(FLOAT_DTYPES)}")
        check_layout(meta, shapes, str(path))
        if not tensors:
            return {}, meta
        try:
            out = {k: fh.get_tensor(k) for k in shapes}
        except Exception as err:
            raise _not_safetensors(path, err) from None
    _check_values(out, meta, str(path))
    return out, meta


def build_modules(tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any], path: str = "checkpoint") -> dict[str, nn.Module]:
    """Rebuild every module named in ``meta["networks"]`` and load its tensors.

    The dims, the network specs and the tensors' names, shapes and dtypes are checked first
    (:func:`check_network_fields`, :func:`check_layout`), so a module is only ever allocated at the
    size its tensors already have.
    """
    from robustbench_rl.networks import build_network

    check_network_fields(meta, path)
    for key, t in tensors.items():
        if not t.dtype.is_floating_point:
            raise CheckpointError(f"{path}: tensor {key} has dtype {t.dtype}, expected float")
    check_layout(meta, {k: tuple(t.shape) for k, t in tensors.items()}, path)
    modules: dict[str, nn.Module] = {}
    for prefix, spec in meta["networks"].items():
        module = build_network(spec, meta["obs_dim"], meta["act_dim"])
        expected = module.state_dict()
        module.load_state_dict({k: tensors[f"{prefix}.{k}"].to(ref.dtype) for k, ref in expected.items()})
        module.eval()
        modules[prefix] = module
    return modules
