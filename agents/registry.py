"""Every algorithm ``rbrl train`` knows: importing this module imports (and so registers) each one.

A new algorithm module calls :func:`robustbench_rl.agents.base.register_algo` at import and is
imported here.
"""

from __future__ import annotations

from typing import Any

import torch

from robustbench_rl.agents import oa_ppo as _oa_ppo  # noqa: F401  (registers oa-ppo)
from robustbench_rl.agents import oa_td3 as _oa_td3  # noqa: F401  (registers oa-td3)
from robustbench_rl.agents import ppo as _ppo  # noqa: F401  (registers ppo)
from robustbench_rl.agents import td3 as _td3  # noqa: F401  (registers td3)
from robustbench_rl.agents.base import _ALGOS, AlgoEntry, Trainer


def algos() -> dict[str, AlgoEntry]:
    """The registered algorithms by name."""
    return dict(_ALGOS)


def make_trainer(config: Any, env_id: str, seed: int, total_steps: int, device: torch.device) -> Trainer:
    """The trainer of a hyperparameter config: the registered algorithm whose config class it is
    (an OATD3Config gives an OA-TD3 trainer, a TD3Config a TD3 one)."""
    for entry in _ALGOS.values():
        if type(config) is entry.config_cls:
            return entry.trainer_cls(config, env_id, seed, total_steps, device)
    raise TypeError(f"no registered algorithm has the config class {type(config).__name__}")
