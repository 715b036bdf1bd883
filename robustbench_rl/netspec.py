"""Network specs: the JSON a checkpoint stores for each module, checked and sized without torch.

A spec is ``{"type": ..., "hidden": [...], ...}`` (see :mod:`robustbench_rl.networks`, which
builds the modules). Loaders validate a file's specs and compare its tensor shapes with
:func:`network_shapes` before allocating anything, so metadata declaring huge layers costs nothing,
and reading a checkpoint's metadata does not import torch.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping

NETWORK_KINDS = ("actor", "twin_critic", "gaussian_actor", "value")
"""Module types a spec may name (agents.networks.NETWORK_TYPES builds each)."""
ACTIVATION_NAMES = ("relu", "tanh", "elu")
"""Hidden-layer activations a spec may name (agents.networks.ACTIVATIONS)."""

MAX_DEPTH = 64
"""Most hidden layers a spec may declare."""
MAX_WIDTH = 1 << 16
"""Widest hidden layer a spec may declare."""

# The optional fields of each type, with the constructor's default; `hidden` is always required.
_OPTIONAL_FIELDS: dict[str, dict[str, object]] = {
    "actor": {"activation": "relu"},
    "twin_critic": {"activation": "relu"},
    "gaussian_actor": {"activation": "tanh", "log_std_init": 0.0},
    "value": {"activation": "tanh"},
}


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_spec(spec: Mapping) -> str:
    """Validate a network spec without building anything and return its type; ValueError names the field.

    A spec comes from checkpoint metadata, i.e. from a file: every field is checked for its type and
    range (known type and activation, at most MAX_DEPTH hidden widths each in 1..MAX_WIDTH, a finite
    log_std_init, no unknown fields) before any memory is spent on it.
    """
    if not isinstance(spec, Mapping):
        raise ValueError(f"a network spec must be an object, got {_short(spec)}")
    kind = spec.get("type")
    if not isinstance(kind, str) or kind not in NETWORK_KINDS:
        raise ValueError(f"type={_short(kind)} is not a network type; known: {sorted(NETWORK_KINDS)}")
    allowed = _OPTIONAL_FIELDS[kind]
    unknown = sorted(str(k) for k in spec if k not in ("type", "hidden", *allowed))
    if unknown:
        raise ValueError(f"unknown field {unknown[0]!r} in a {kind} spec; allowed: hidden, {', '.join(allowed)}")
    hidden = spec.get("hidden")
    if (not isinstance(hidden, (list, tuple)) or len(hidden) > MAX_DEPTH
            or not all(_is_int(w) and 1 <= w <= MAX_WIDTH for w in hidden)):
        raise ValueError(f"hidden={_short(hidden)} must be a list of at most {MAX_DEPTH} layer widths, "
                         f"each an integer in 1..{MAX_WIDTH}")
    activation = spec.get("activation", allowed["activation"])
    if not isinstance(activation, str) or activation not in ACTIVATION_NAMES:
        raise ValueError(f"activation={_short(activation)} is not known; known: {sorted(ACTIVATION_NAMES)}")
    if "log_std_init" in allowed:
        log_std = spec.get("log_std_init", allowed["log_std_init"])
        if not isinstance(log_std, numbers.Real) or isinstance(log_std, bool) or not math.isfinite(log_std):
            raise ValueError(f"log_std_init={_short(log_std)} must be a finite number")
    return kind


def _mlp_shapes(name: str, in_dim: int, out_dim: int, hidden: list[int]) -> dict[str, tuple[int, ...]]:
    # mlp() interleaves Linear and activation modules, so the Linear layers sit at even indices.
    shapes: dict[str, tuple[int, ...]] = {}
    for i, (fan_in, fan_out) in enumerate(zip([in_dim, *hidden], [*hidden, out_dim], strict=True)):
        shapes[f"{name}.{2 * i}.weight"] = (fan_out, fan_in)
        shapes[f"{name}.{2 * i}.bias"] = (fan_out,)
    return shapes


def network_shapes(spec: Mapping, obs_dim: int, act_dim: int) -> dict[str, tuple[int, ...]]:
    """The state-dict shapes of the module a spec describes, computed without building it.

    Lets a loader compare a file's tensor shapes with its metadata before allocating a network, so
    that metadata declaring huge layers costs nothing. Raises ValueError like :func:`check_spec`.
    """
    kind = check_spec(spec)
    hidden = [int(w) for w in spec["hidden"]]
    if kind == "actor":
        return _mlp_shapes("net", obs_dim, act_dim, hidden)
    if kind == "twin_critic":
        return {**_mlp_shapes("q1", obs_dim + act_dim, 1, hidden), **_mlp_shapes("q2", obs_dim + act_dim, 1, hidden)}
    if kind == "gaussian_actor":
        return {**_mlp_shapes("mean", obs_dim, act_dim, hidden), "log_std": (act_dim,)}
    return _mlp_shapes("net", obs_dim, 1, hidden)
