"""What every trainer shares: the :class:`Trainer` interface that ``rbrl train`` drives, the
algorithm registry, and small helpers (Polyak averaging, metrics summed on the device, RNG state,
range checks of hyperparameters).

An algorithm is a hyperparameter dataclass (one docstring per field: they become ``--help`` text, the
fields CLI options and a ``[hyperparameters]`` TOML table) and a :class:`Trainer` subclass holding the
networks, optimisers, data and RNG, registered with :func:`register_algo`. Everything around it (the
run directory, progress.csv, checkpoints, evaluation, resume) is :mod:`robustbench_rl.training`.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from robustbench_rl.agents.buffers import ReplayBuffer


class Trainer(abc.ABC):
    """One algorithm's training state and step logic; :func:`train` does all I/O around it.

    Subclasses set `metric_names` (the progress.csv columns they report), build their envs, networks
    and optimisers in ``__init__(config, env_id, seed, total_steps, device)`` and keep `global_step`
    (env steps taken, summed over vector-env copies) up to date.
    """

    metric_names: ClassVar[tuple[str, ...]] = ()
    replay: ReplayBuffer | None = None
    """A replay buffer too large to copy into the resume state (TD3's): :func:`train` writes it to its
    own file beside ``state.pt`` with :meth:`ReplayBuffer.write_file`, and :meth:`state_dict` leaves it out."""

    def __init__(self, config: Any, env_id: str, seed: int, total_steps: int, device: torch.device) -> None:
        self.config = config
        self.env_id = env_id
        self.seed = seed
        self.total_steps = total_steps
        self.device = device
        self.global_step = 0

    @abc.abstractmethod
    def advance(self, until: int) -> list[tuple[float, int]]:
        """Take env steps (and updates) until `global_step` >= `until`.

        An algorithm with natural chunks (a PPO rollout) may stop past `until`. Returns the
        (return, length) of every episode that finished meanwhile.
        """

    @abc.abstractmethod
    def pop_metrics(self) -> dict[str, float]:
        """Means of the training metrics since the last call (keys from `metric_names`), then reset."""

    @abc.abstractmethod
    def policy_state(self) -> tuple[dict[str, nn.Module], dict[str, dict], dict[str, Tensor], dict[str, Any]]:
        """What the policy checkpoint holds: modules by prefix, their network specs, extra tensors
        (e.g. ``obs_rms.mean``/``obs_rms.var``) and extra metadata (e.g. ``{"obs_norm": True}``)."""

    @abc.abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue training: tensors, ints, floats, strings, lists and dicts only."""

    @abc.abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; the env restarts a fresh episode seeded from (seed, global_step)."""

    def use_cuda_graphs(self) -> bool:
        """Replay updates as CUDA graphs from now on (:mod:`robustbench_rl.agents.graphs`), if this algorithm
        can; returns whether it does. Called by :func:`train` on a CUDA device after any resume."""
        return False

    def close(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Release envs and other resources."""


@dataclass(frozen=True)
class AlgoEntry:
    """A registered algorithm: its hyperparameter dataclass and its trainer class."""

    name: str
    config_cls: type
    trainer_cls: type[Trainer]
    description: str


_ALGOS: dict[str, AlgoEntry] = {}


def register_algo(name: str, config_cls: type, trainer_cls: type[Trainer], description: str) -> None:
    """Make an algorithm available to ``rbrl train --algo NAME`` (an algorithm module calls this once,
    at import; :mod:`robustbench_rl.agents.registry` imports every algorithm module).

    `config_cls` must be a dataclass whose every field has a default and a docstring: the docstrings
    are the CLI help, and the fields become CLI options shared by name across algorithms, so two
    algorithms that both have e.g. ``learning_rate`` must give it the same type
    (:func:`robustbench_rl.config.check_algo` checks all of it when the algorithms are loaded).
    """
    if not dataclasses.is_dataclass(config_cls):
        raise TypeError(f"{name}: config class {config_cls.__name__} is not a dataclass")
    _ALGOS[name] = AlgoEntry(name, config_cls, trainer_cls, description)


def check_fields(cfg: Any, at_least_one: tuple[str, ...], ranges: Mapping[str, bool]) -> None:
    """ValueError naming the first field of `cfg` below 1 (`at_least_one`) or failing its range check."""
    for name in at_least_one:
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name.replace('_', '-')} must be >= 1, got {getattr(cfg, name)}")
    for name, ok in ranges.items():
        if not ok:
            raise ValueError(f"{name.replace('_', '-')} is out of range: {getattr(cfg, name)}")


def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """Polyak averaging target <- (1 - tau) target + tau source, in place, on the device (no host sync)."""
    with torch.no_grad():
        tgt = [p for p in target.parameters()]
        src = [p for p in source.parameters()]
        torch._foreach_lerp_(tgt, src, tau)


class MetricSum:
    """Running sums of scalar tensors kept on the device, read (one host sync) only at log time."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = names
        self._recorded: list[tuple[str, Tensor | float]] | None = None
        self.reset()

    def reset(self) -> None:
        self.sums: dict[str, Tensor | float] = dict.fromkeys(self.names, 0.0)
        self.counts: dict[str, int] = dict.fromkeys(self.names, 0)

    def add(self, name: str, value: Tensor | float) -> None:
        if isinstance(value, Tensor):
            value = value.detach()
        if self._recorded is not None:
            self._recorded.append((name, value))
            return
        self.sums[name] = self.sums[name] + value
        self.counts[name] += 1

    @contextlib.contextmanager
    def recording(self) -> Iterator[list[tuple[str, Tensor | float]]]:
        """Inside, `add` only appends (name, value) to the yielded list (a CUDA graph capture: the
        values are tensors each replay rewrites, added after each replay)."""
        recorded: list[tuple[str, Tensor | float]] = []
        self._recorded = recorded
        try:
            yield recorded
        finally:
            self._recorded = None

    def pop(self) -> dict[str, float]:
        out = {n: (float(self.sums[n]) / self.counts[n] if self.counts[n] else float("nan")) for n in self.names}
        self.reset()
        return out


def rng_state(generator: torch.Generator) -> Tensor:
    """A torch generator's state as a CPU uint8 tensor (safe to save with weights_only loading)."""
    return generator.get_state().clone()
