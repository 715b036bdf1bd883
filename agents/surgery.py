"""Gradient surgery (PCGrad, Yu et al. 2020) for two objectives, as a pure function on flat vectors.

OA-TD3 mixes the actor's nominal gradient and its OA (worst-case) gradient. Where they conflict
(negative inner product), each is projected onto the normal plane of the other before mixing, so that
neither objective's step undoes the other's. Everything stays on the device: the conflict test is a
tensor, never a Python bool, so the training update has no host sync.
"""

from __future__ import annotations

import torch
from torch import Tensor

_TINY = 1e-12  # guards the division for an all-zero gradient (nothing to project onto)


def project_conflicting(g1: Tensor, g2: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """PCGrad on two flat gradients: returns (g1', g2', conflict).

    When g1 . g2 < 0, g1' = g1 - (g1 . g2) / |g2|^2 g2 and g2' = g2 - (g2 . g1) / |g1|^2 g1 (both
    projections use the original vectors); otherwise both are returned unchanged. `conflict` is a 0-d
    bool tensor saying which case applied (for logging the share of conflicting updates). Inputs are
    1-D tensors of equal length; they are not modified.
    """
    if g1.dim() != 1 or g1.shape != g2.shape:
        raise ValueError(f"project_conflicting needs two flat vectors of equal length, got {tuple(g1.shape)} "
                         f"and {tuple(g2.shape)}")
    dot = torch.dot(g1, g2)
    conflict = dot < 0
    p1 = g1 - (dot / g2.dot(g2).clamp_min(_TINY)) * g2
    p2 = g2 - (dot / g1.dot(g1).clamp_min(_TINY)) * g1
    return torch.where(conflict, p1, g1), torch.where(conflict, p2, g2), conflict
