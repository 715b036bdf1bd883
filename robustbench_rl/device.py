"""Torch device names as users type them: cpu, cuda, cuda:N, or auto (cuda when there is one)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

DEVICE_HELP = "Torch device: cpu, cuda, cuda:N, or auto (cuda when torch sees a GPU, else cpu)."


def resolve_device(name: str) -> torch.device:
    """The torch.device for `name`, checked: ValueError (one line, with the fix) for an unknown name, a
    CUDA device when torch sees no GPU, or a GPU index past the last one. ``auto`` is cuda when torch
    sees a GPU and cpu otherwise."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}; use cpu, cuda, cuda:N or auto") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {name!r}; use cpu, cuda, cuda:N or auto")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} requested but torch sees no CUDA GPU; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r} does not exist: torch sees {torch.cuda.device_count()} GPU(s); "
                             f"use cuda:0..cuda:{torch.cuda.device_count() - 1}")
    return device
