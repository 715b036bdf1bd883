"""Single-file checkpoints: safetensors tensors + JSON metadata, never pickle.

Layout of a checkpoint: tensors under the prefixes ``actor.``, ``critic.``, ``critic_adv.`` and
``obs_rms.`` (running mean / var of observations), and one safetensors metadata entry ``rbrl`` holding
JSON (format version, algo, env id, dims, env action bounds, network specs, training config, seed,
steps, package versions, creation time). Loading parses only that JSON and raw tensor bytes: nothing
in a checkpoint can run code.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import torch
from safetensors import safe_open
from safetensors.torch import save as _st_save
from torch import nn

FORMAT_VERSION = 1
METADATA_KEY = "rbrl"
MODULE_PREFIXES = ("actor", "critic", "critic_adv", "value")
REQUIRED_META = ("format_version", "algo", "env_id", "obs_dim", "act_dim", "networks")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used, with a message naming the problem and the fix."""


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


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A binary file handle whose contents replace `path` only if the block completes.

    Writes go to a temp file in the same folder, which is fsynced and renamed over `path` on success
    and deleted on any error: a crash or an exception never leaves a half-written `path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` via a temp file in the same folder and a rename: never a half file."""
    with atomic_writer(path) as fh:
        fh.write(data)


def state_tensors(modules: Mapping[str, nn.Module | None]) -> dict[str, torch.Tensor]:
    """Flatten named modules into ``prefix.param`` tensors (contiguous CPU copies, as safetensors needs)."""
    out: dict[str, torch.Tensor] = {}
    for prefix, module in modules.items():
        if module is None:
            continue
        for key, value in module.state_dict().items():
            out[f"{prefix}.{key}"] = value.detach().to("cpu").contiguous().clone()
    return out


def save_checkpoint(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> Path:
    """Write one ``.safetensors`` checkpoint atomically and return its path.

    `tensors` are flat ``prefix.name`` tensors (see :func:`state_tensors`); `meta` must hold at least
    algo, env_id, obs_dim, act_dim and networks (a spec per module prefix). The format version,
    package versions and creation time are added here so that every checkpoint carries them.
    """
    missing = [k for k in ("algo", "env_id", "obs_dim", "act_dim", "networks") if k not in meta]
    if missing:
        raise CheckpointError(f"checkpoint metadata lacks {missing}")
    full = {
        "format_version": FORMAT_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": package_versions(),
        **meta,
    }
    full["format_version"] = FORMAT_VERSION
    data = _st_save({k: v.detach().cpu().contiguous() for k, v in tensors.items()},
                    metadata={METADATA_KEY: json.dumps(full, sort_keys=True)})
    atomic_write_bytes(path, data)
    return Path(path)


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """Only the JSON metadata of a checkpoint (cheap: reads the header, no tensor data)."""
    return _open(path, tensors=False)[1]


def load_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a checkpoint's tensors and metadata, validating the container and the metadata.

    Every failure is a :class:`CheckpointError`: missing file, not a safetensors file (a renamed
    pickle included: its bytes are never executed), no ``rbrl`` metadata, an unknown format version.
    Shapes are checked against the metadata when modules are rebuilt (:func:`build_modules`).
    """
    return _open(path, tensors=True)


def _open(path: str | os.PathLike, tensors: bool) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path} (check the path, or train one with `rbrl train`)")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            header = fh.metadata() or {}
            out = {k: fh.get_tensor(k) for k in fh.keys()} if tensors else {}
    except Exception as err:  # safetensors raises several types for malformed files
        raise CheckpointError(
            f"{path} is not a valid safetensors checkpoint ({type(err).__name__}: {str(err)[:120]}); "
            "rbrl only reads .safetensors files it wrote, never pickles"
        ) from None
    if METADATA_KEY not in header:
        raise CheckpointError(f"{path} has no rbrl metadata; it was not written by rbrl's save_checkpoint")
    try:
        meta = json.loads(header[METADATA_KEY])
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path} has corrupt rbrl metadata (invalid JSON: {err})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path} has corrupt rbrl metadata (expected a JSON object)")
    lacking = [k for k in REQUIRED_META if k not in meta]
    if lacking:
        raise CheckpointError(f"{path} metadata lacks {lacking}; the file is damaged or not a policy checkpoint")
    if meta["format_version"] != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {meta['format_version']!r}; this rbrl reads version "
            f"{FORMAT_VERSION} (upgrade robustbench-rl or re-export the checkpoint)"
        )
    if not isinstance(meta["networks"], dict) or not all(isinstance(v, dict) for v in meta["networks"].values()):
        raise CheckpointError(f"{path} metadata has malformed network specs")
    for key in ("obs_dim", "act_dim"):
        if not isinstance(meta[key], int) or isinstance(meta[key], bool) or meta[key] < 1:
            raise CheckpointError(f"{path} metadata has invalid {key}={meta[key]!r}")
    return out, meta


def build_modules(tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any], path: str = "checkpoint") -> dict[str, nn.Module]:
    """Rebuild every module named in ``meta["networks"]`` and load its tensors, checking each shape."""
    from robustbench_rl.agents.networks import build_network

    modules: dict[str, nn.Module] = {}
    for prefix, spec in meta["networks"].items():
        try:
            module = build_network(spec, meta["obs_dim"], meta["act_dim"])
        except (ValueError, TypeError) as err:
            raise CheckpointError(f"{path}: cannot rebuild {prefix!r}: {err}") from None
        expected = module.state_dict()
        given = {k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
        absent = sorted(set(expected) - set(given))
        if absent:
            raise CheckpointError(f"{path}: missing tensor {prefix}.{absent[0]} (the file is truncated or damaged)")
        extra = sorted(set(given) - set(expected))
        if extra:
            raise CheckpointError(f"{path}: unexpected tensor {prefix}.{extra[0]} for a {spec.get('type')} network")
        for key, ref in expected.items():
            if tuple(given[key].shape) != tuple(ref.shape):
                raise CheckpointError(
                    f"{path}: tensor {prefix}.{key} has shape {tuple(given[key].shape)}, "
                    f"expected {tuple(ref.shape)} from the metadata"
                )
            if not given[key].dtype.is_floating_point:
                raise CheckpointError(f"{path}: tensor {prefix}.{key} has dtype {given[key].dtype}, expected float")
        module.load_state_dict({k: given[k].to(ref.dtype) for k, ref in expected.items()})
        module.eval()
        modules[prefix] = module
    return modules


def file_sha256(path: str | os.PathLike) -> str:
    """Content hash of a file (ties fitted critics and results to the exact policy bytes)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
