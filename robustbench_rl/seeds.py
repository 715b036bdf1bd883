"""Seeds: the one range rbrl accepts for every seed (training, evaluation, fitting) and its check."""

from __future__ import annotations

import numbers
from typing import Any

MAX_SEED = 2**32 - 1
"""Largest seed rbrl accepts anywhere: the range numpy and gymnasium document for seeds. Seeds derived
from it stay valid: env resets take any non-negative integer, torch generators anything below 2**64,
and an eval seed's episode seeds (``seed * 2**20 + i``) stay below 2**53."""


def check_seed(seed: Any, name: str = "seed") -> int:
    """`seed` as an int if it is a valid seed (an integer in [0, MAX_SEED]), else ValueError naming `name`.

    The one seed check of the CLI, suites, configs and evaluation: a negative or huge seed must fail
    before any work, not as a numpy or torch traceback once training or evaluation reaches it.
    """
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= int(seed) <= MAX_SEED:
        raise ValueError(f"{name} must be an integer in [0, {MAX_SEED}], got {seed!r}")
    return int(seed)
