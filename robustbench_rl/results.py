"""The tidy results table: one row per episode, the contract between evaluation and reports."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pandas as pd

from robustbench_rl.checkpoint import atomic_write_bytes
from robustbench_rl.rollout import EvalResult

RESULT_COLUMNS = [
    "policy", "algo", "env_id", "train_seed", "attack", "critic_source", "eps",
    "eval_seed", "episode", "return", "length",
]


def result_frame(policy, result: EvalResult, critic_source: str = "none") -> pd.DataFrame:
    """Rows of the results table for one evaluation (episode i was reset with eval_seed + i)."""
    meta = getattr(policy, "meta", {}) or {}
    n = len(result.returns)
    return pd.DataFrame({
        "policy": [policy.name] * n,
        "algo": [meta.get("algo", "unknown")] * n,
        "env_id": [result.env_id] * n,
        "train_seed": pd.array([meta.get("seed")] * n, dtype="Int64"),
        "attack": [result.attack] * n,
        "critic_source": [critic_source] * n,
        "eps": np.full(n, result.eps, dtype=float),
        "eval_seed": np.full(n, result.seed, dtype=np.int64),
        "episode": np.arange(n, dtype=np.int64),
        "return": result.returns.astype(float),
        "length": result.lengths.astype(np.int64),
    })[RESULT_COLUMNS]


def write_table(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write a table atomically as CSV or Parquet, chosen by the file suffix."""
    path = Path(path)
    if path.suffix == ".parquet":
        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        atomic_write_bytes(path, buf.getvalue())
    elif path.suffix in (".csv", ""):
        atomic_write_bytes(path, df.to_csv(index=False).encode())
    else:
        raise ValueError(f"cannot write a table to {path.name}: use a .csv or .parquet file name")
    return path
