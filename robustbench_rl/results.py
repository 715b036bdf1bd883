"""The tidy results table: one row per episode, the contract between evaluation and reports."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pandas as pd

from robustbench_rl.files import atomic_write_bytes
from robustbench_rl.rollout import EvalResult

RESULT_COLUMNS = [
    "policy", "algo", "env_id", "train_seed", "attack", "critic_source", "eps",
    "eval_seed", "episode", "reset_seed", "return", "length",
]
"""Columns of the results table. ``reset_seed`` is the seed episode ``episode`` of ``eval_seed`` was
reset with (:func:`robustbench_rl.rollout.episode_seed`): rows with equal reset seeds started from the
same state, which is how reports tell independent episodes from repeated ones."""


def result_frame(policy, result: EvalResult, critic_source: str = "none") -> pd.DataFrame:
    """Rows of the results table for one evaluation (episode i was reset with episode_seed(eval_seed, i))."""
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
        "reset_seed": np.asarray(result.episode_seeds, dtype=np.int64),
        "return": result.returns.astype(float),
        "length": result.lengths.astype(np.int64),
    })[RESULT_COLUMNS]


def with_reset_seeds(df: pd.DataFrame) -> pd.DataFrame:
    """`df` with a ``reset_seed`` column: kept when present, else eval_seed + episode.

    Tables written before the column existed were evaluated with that older scheme, under which eval
    seeds s and s + 1 share all but one start state; filling it in lets reports see the overlap.
    """
    if "reset_seed" in df.columns or not {"eval_seed", "episode"} <= set(df.columns):
        return df
    out = df.copy()
    out.insert(out.columns.get_loc("episode") + 1, "reset_seed",
               out["eval_seed"].astype(np.int64) + out["episode"].astype(np.int64))
    return out


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
