"""Preallocated torch buffers: a replay buffer (TD3) and a rollout buffer (PPO).

Both allocate every tensor once, up front, on the training device, so memory does not grow during
training and sampling is a single batched gather. Their `state_dict` holds only tensors and ints, so
resume state can be saved with ``torch.save`` and read back with ``weights_only=True`` (no pickle of
code).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from robustbench_rl.files import atomic_writer


class Batch(NamedTuple):
    """A sampled minibatch of transitions, each (B, ...) on the buffer's device."""

    obs: Tensor
    act: Tensor
    rew: Tensor
    next_obs: Tensor
    done: Tensor


def _as_tensor(x, device: torch.device, rows: int, width: int | None) -> Tensor:
    t = torch.as_tensor(np.asarray(x, dtype=np.float32), device=device)
    return t.reshape(rows, width) if width is not None else t.reshape(rows)


_FIELDS = ("obs", "act", "rew", "next_obs", "done")
_CHUNK_ROWS = 65_536


class ReplayBuffer:
    """Ring buffer of (obs, act, rew, next_obs, done) transitions.

    `capacity` transitions are preallocated (float32) and zero-filled, so that every page is resident
    from the start: the process's memory does not grow during training. `done` must be the
    *termination* flag (not truncation): a time-limit cut still bootstraps from next_obs, which must
    then be the real final observation, not the reset one.
    """

    def __init__(self, obs_dim: int, act_dim: int, capacity: int, device: str | torch.device = "cpu") -> None:
        if capacity < 1:
            raise ValueError(f"replay buffer capacity must be >= 1, got {capacity}")
        self.obs_dim, self.act_dim, self.capacity = obs_dim, act_dim, int(capacity)
        self.device = torch.device(device)
        kw = {"dtype": torch.float32, "device": self.device}
        self.obs = torch.zeros((self.capacity, obs_dim), **kw)
        self.next_obs = torch.zeros((self.capacity, obs_dim), **kw)
        self.act = torch.zeros((self.capacity, act_dim), **kw)
        self.rew = torch.zeros((self.capacity,), **kw)
        self.done = torch.zeros((self.capacity,), **kw)
        self.pos = 0
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def add(self, obs, act, rew, next_obs, done) -> None:
        """Store n >= 1 transitions (arrays or tensors with a leading batch dimension, or a single one)."""
        n = int(np.prod(np.shape(rew))) if np.ndim(rew) else 1
        idx = (torch.arange(n, device=self.device) + self.pos) % self.capacity if n > 1 else self.pos
        self.obs[idx] = _as_tensor(obs, self.device, n, self.obs_dim).squeeze(0)
        self.next_obs[idx] = _as_tensor(next_obs, self.device, n, self.obs_dim).squeeze(0)
        self.act[idx] = _as_tensor(act, self.device, n, self.act_dim).squeeze(0)
        self.rew[idx] = _as_tensor(rew, self.device, n, None).squeeze(0)
        self.done[idx] = _as_tensor(done, self.device, n, None).squeeze(0)
        self.pos = (self.pos + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> Batch:
        """A uniform minibatch (with replacement) from the stored transitions."""
        if self.size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        idx = torch.randint(0, self.size, (batch_size,), generator=generator, device=self.device)
        return Batch(self.obs[idx], self.act[idx], self.rew[idx], self.next_obs[idx], self.done[idx])

    def state_dict(self) -> dict:
        """Stored transitions, oldest first (only the filled part is copied), plus the counters."""
        if self.size < self.capacity:
            order = slice(0, self.size)
            data = {k: getattr(self, k)[order].clone() for k in ("obs", "act", "rew", "next_obs", "done")}
        else:  # full: rotate so that the oldest transition comes first
            data = {k: torch.roll(getattr(self, k), -self.pos, dims=0) for k in ("obs", "act", "rew", "next_obs", "done")}
        return {**{k: v.cpu() for k, v in data.items()}, "size": self.size}

    def write_file(self, path: str | os.PathLike) -> int:
        """Write the stored transitions, oldest first, to `path` as raw float32 (field by field, in the
        order obs, act, rew, next_obs, done); returns how many. Unlike :meth:`state_dict` this never copies
        the buffer (CPU rows are written straight from memory, device rows a chunk at a time): a full
        1M-transition Humanoid buffer is ~2.9 GB, and a copy at every checkpoint would double the peak
        memory of the run. Atomic: a temp file in the same folder, fsynced, then renamed."""
        spans = [(self.pos, self.capacity), (0, self.pos)] if self.size == self.capacity else [(0, self.size)]
        with atomic_writer(path) as fh:
            for key in _FIELDS:
                field = getattr(self, key)
                for lo, hi in spans:
                    for start in range(lo, hi, _CHUNK_ROWS):
                        fh.write(field[start:min(hi, start + _CHUNK_ROWS)].cpu().numpy().data)
        return self.size

    def read_file(self, path: str | os.PathLike, rows: int) -> None:
        """Load `rows` transitions written by :meth:`write_file` straight into the preallocated tensors
        (a smaller buffer keeps the newest). ValueError if the file's size does not match `rows`."""
        path = Path(path)
        widths = {key: getattr(self, key)[0].numel() for key in _FIELDS}
        expected = rows * sum(widths.values()) * 4
        size = path.stat().st_size
        if size != expected:
            raise ValueError(f"{path} holds {size} bytes, expected {expected} for {rows} transitions of this env; "
                             "it belongs to another run or was cut short")
        keep = min(rows, self.capacity)
        with open(path, "rb") as fh:
            for key in _FIELDS:
                field, row_bytes = getattr(self, key), widths[key] * 4
                fh.seek((rows - keep) * row_bytes, os.SEEK_CUR)  # skip the oldest rows that do not fit
                for start in range(0, keep, _CHUNK_ROWS):
                    stop = min(keep, start + _CHUNK_ROWS)
                    chunk = bytearray((stop - start) * row_bytes)
                    fh.readinto(chunk)
                    field[start:stop] = torch.frombuffer(chunk, dtype=torch.float32).reshape(field[start:stop].shape)
        self.size = keep
        self.pos = keep % self.capacity

    def load_state_dict(self, state: dict) -> None:
        """Restore transitions saved by :meth:`state_dict`, into a buffer of the same or another capacity."""
        n = int(state["size"])
        keep = min(n, self.capacity)  # a smaller buffer keeps the newest transitions
        for k in ("obs", "act", "rew", "next_obs", "done"):
            src = state[k]
            if src.shape[0] != n or src.shape[1:] != getattr(self, k).shape[1:]:
                raise ValueError(f"replay buffer state {k} has shape {tuple(src.shape)}, expected ({n}, ...) "
                                 f"matching {tuple(getattr(self, k).shape[1:])}")
            getattr(self, k)[:keep] = src[n - keep:].to(self.device)
        self.size = keep
        self.pos = keep % self.capacity


class RolloutBuffer:
    """Fixed-size on-policy storage: `num_steps` x `num_envs` slots per field, filled step by step.

    Fields: obs, act, logprob, rew, done (episode ended after this step), value. Algorithms compute
    advantages on top (PPO's GAE lives with PPO). `reset` starts a new rollout without reallocating.
    """

    def __init__(self, num_steps: int, num_envs: int, obs_dim: int, act_dim: int,
                 device: str | torch.device = "cpu") -> None:
        if num_steps < 1 or num_envs < 1:
            raise ValueError(f"rollout buffer needs num_steps >= 1 and num_envs >= 1, got {num_steps}, {num_envs}")
        self.num_steps, self.num_envs = num_steps, num_envs
        self.device = torch.device(device)
        kw = {"dtype": torch.float32, "device": self.device}
        self.obs = torch.zeros((num_steps, num_envs, obs_dim), **kw)
        self.act = torch.zeros((num_steps, num_envs, act_dim), **kw)
        self.logprob = torch.zeros((num_steps, num_envs), **kw)
        self.rew = torch.zeros((num_steps, num_envs), **kw)
        self.done = torch.zeros((num_steps, num_envs), **kw)
        self.value = torch.zeros((num_steps, num_envs), **kw)
        self.step = 0

    @property
    def full(self) -> bool:
        return self.step >= self.num_steps

    def add(self, obs: Tensor, act: Tensor, logprob: Tensor, rew, done, value: Tensor) -> None:
        """Store one vector-env step (each argument has leading dimension num_envs)."""
        if self.full:
            raise ValueError("rollout buffer is full; call reset() before adding a new rollout")
        t = self.step
        self.obs[t] = torch.as_tensor(obs, dtype=torch.float32, device=self.device)
        self.act[t] = torch.as_tensor(act, dtype=torch.float32, device=self.device)
        self.logprob[t] = logprob
        self.rew[t] = torch.as_tensor(np.asarray(rew, dtype=np.float32), device=self.device)
        self.done[t] = torch.as_tensor(np.asarray(done, dtype=np.float32), device=self.device)
        self.value[t] = value
        self.step += 1

    def reset(self) -> None:
        """Start a new rollout (the tensors are overwritten in place)."""
        self.step = 0
