"""TensorBoard mirror of progress.csv (extra ``[tb]``), with CleanRL's scalar names.

Episode statistics go to ``charts/`` (``charts/episodic_return``, ``charts/SPS``, ...), PGD and
gradient-surgery statistics to ``pgd/``, losses and value estimates to ``losses/``. progress.csv stays
the source of truth; the events are a view of it for people who live in TensorBoard.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

CHARTS = {"episode_return": "charts/episodic_return", "episode_length": "charts/episodic_length",
          "steps_per_s": "charts/SPS", "eval_return": "charts/eval_return",
          "eval_return_std": "charts/eval_return_std", "episodes": "charts/episodes", "wall_s": "charts/wall_s"}


def scalar_name(column: str) -> str:
    """progress.csv column -> TensorBoard tag."""
    if column in CHARTS:
        return CHARTS[column]
    if column.startswith("pgd_"):
        return "pgd/" + column[4:]
    if "pgd" in column or "conflict" in column:
        return "pgd/" + column
    return "losses/" + column


class TensorBoardLog:
    """Writes each progress row as scalars at its step; on resume, events past the resumed step are purged."""

    def __init__(self, log_dir: str | Path, resume_step: int | None = None) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ValueError("--tensorboard needs TensorBoard: pip install 'robustbench-rl[tb]'") from None
        self.writer = SummaryWriter(str(log_dir), purge_step=resume_step)

    def write(self, row: Mapping[str, Any]) -> None:
        step = int(row["step"])
        for key, value in row.items():
            if key == "step" or value is None:
                continue
            value = float(value)
            if not math.isnan(value):
                self.writer.add_scalar(scalar_name(key), value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
