"""The tidy results table: one row per episode, the contract between evaluation and reports."""

from __future__ import annotations

import io
import json
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


BENCH_COLUMNS = [*RESULT_COLUMNS, "group"]
"""Columns of a bench run's results table: the results table plus the suite's ``group`` of each policy."""


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


def typed_results(df: pd.DataFrame) -> pd.DataFrame:
    """The results table with its column dtypes (nullable train seed, integer seeds and counts)."""
    return df.astype({"train_seed": "Int64", "eps": float, "eval_seed": np.int64, "episode": np.int64,
                      "reset_seed": np.int64, "return": float, "length": np.int64})


def read_cell(path: str | os.PathLike) -> pd.DataFrame:
    """The rows of one finished cell file, with the results table's dtypes; ValueError naming the file
    when it is damaged."""
    return read_cell_record(Path(path))[1]


def read_cell_record(path: Path) -> tuple[dict, pd.DataFrame]:
    """(record, rows) of one bench cell file (see robustbench_rl.bench); ValueError naming a damaged file."""
    try:
        record = json.loads(path.read_text())
        rows = typed_results(with_reset_seeds(pd.DataFrame(record["rows"]))[BENCH_COLUMNS])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise ValueError(f"{path} is a damaged cell file ({type(err).__name__}: {str(err)[:100]}); delete it and "
                         "rerun `rbrl bench` with the same --out to recompute it") from None
    return record, rows


def read_results(out_dir: str | os.PathLike, *, partial: bool = False) -> pd.DataFrame:
    """Load a results table: a bench directory (results.parquet, else results.csv) or a .csv/.parquet file.

    With `partial`, an unfinished bench directory yields the rows of its finished cells, and the
    frame's ``attrs["partial"]`` holds (cells done, cells total). FileNotFoundError / ValueError name
    the problem and the fix.
    """
    out = Path(out_dir)
    if out.is_dir():
        for name in ("results.parquet", "results.csv"):
            if (out / name).is_file():
                return _read_table(out / name)
        cells = sorted((out / "cells").glob("*.json")) if (out / "cells").is_dir() else []
        if partial and cells:
            manifest = json.loads((out / "manifest.json").read_text()) if (out / "manifest.json").is_file() else {}
            table = typed_results(pd.concat([read_cell(c) for c in cells], ignore_index=True)[BENCH_COLUMNS])
            table.attrs["partial"] = (len(cells), manifest.get("cells", len(cells)))
            return table
        hint = " (the run is unfinished: rerun `rbrl bench` with the same --out to complete it)" if (
            out / "manifest.json").is_file() else ""
        raise FileNotFoundError(f"no results.parquet or results.csv in {out}{hint}")
    if out.suffix not in (".parquet", ".csv"):
        raise ValueError(f"{out} is not a results table: give a bench directory or a .csv / .parquet file")
    if not out.is_file():
        raise FileNotFoundError(f"{out} not found")
    return _read_table(out)


def _read_table(path: Path) -> pd.DataFrame:
    try:
        df = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except Exception as err:  # pandas and pyarrow raise many types for files that are not tables
        raise ValueError(f"{path} is not a readable results table ({type(err).__name__}: {str(err)[:100]})") from None
    df = with_reset_seeds(df)
    missing = [c for c in RESULT_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path} is not an rbrl results table (missing columns: {', '.join(missing)})")
    try:
        df = typed_results(df)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{path} has a column of the wrong type ({str(err)[:100]}); is it an rbrl results table?") from None
    bad = ~np.isfinite(df["return"].to_numpy(dtype=float)) | ~np.isfinite(df["eps"].to_numpy(dtype=float))
    if bad.any():
        raise ValueError(f"{path} has {int(bad.sum())} row(s) with a missing or non-finite return or eps (first: "
                         f"row {int(np.argmax(bad))}); every episode needs a number: fix or drop those rows")
    return df
