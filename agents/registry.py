"""Every algorithm ``rbrl train`` knows: importing this module imports (and so registers) each one.

A new algorithm module calls :func:`robustbench_rl.agents.base.register_algo` at import and is
imported here.
"""

from __future__ import annotations

from robustbench_rl.agents import ppo as _ppo  # noqa: F401  (registers ppo, oa-ppo)
from robustbench_rl.agents import td3 as _td3  # noqa: F401  (registers td3, oa-td3)
from robustbench_rl.agents.base import _ALGOS, AlgoEntry


def algos() -> dict[str, AlgoEntry]:
    """The registered algorithms by name."""
    return dict(_ALGOS)
