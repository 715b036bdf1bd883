"""Batched projected gradient descent over actions: the one PGD engine.

Used by the Min-Q / Min-OA-Q attacks and inside the OA trainers' targets and actor steps. It
minimises f(a~) over the threat model's feasible set {a~ : ||a~ - a||_inf <= eps, a~ in [-1, 1]^d}
with L_inf sign-gradient steps from a random start, projecting after every step and keeping the best
iterate of each row. Rows are independent: the loop runs over steps (and restarts), never over rows.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def feasible_box(a: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """Per-coordinate bounds of the feasible set: the eps box around `a` intersected with [-1, 1]."""
    return (a - eps).clamp(-1.0, 1.0), (a + eps).clamp(-1.0, 1.0)


def pgd_minimize(
    f: Callable[[Tensor], Tensor],
    a: Tensor,
    eps: float,
    steps: int,
    step_size: float | None = None,
    restarts: int = 1,
    generator: torch.Generator | None = None,
    return_value: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Approximately solve argmin over the feasible set around `a` of f, row by row.

    `f` maps actions (B, d) to values (B,) (e.g. a critic with its observations bound); `a` is (B, d)
    in [-1, 1]. Each restart starts uniformly at random in the feasible box and takes `steps` steps
    x <- proj(x - step_size * sign(grad f(x))), step size 2.5 * eps / steps by default; the lowest
    value seen per row (start and final iterate included) wins. Gradients flow to the actions only:
    `f`'s parameters get none, and the returned tensor is detached. With `return_value`, also returns
    f at the returned actions. eps = 0 returns `a` unchanged; steps = 0 is a random search of
    `restarts` points. ValueError for a negative eps or steps, or `a` not (B, d).
    """
    if a.dim() != 2:
        raise ValueError(f"pgd_minimize needs actions of shape (B, d), got {tuple(a.shape)}")
    if not eps >= 0:  # also catches NaN
        raise ValueError(f"eps must be >= 0, got {eps}")
    if steps < 0 or restarts < 1:
        raise ValueError(f"steps must be >= 0 and restarts >= 1, got steps={steps}, restarts={restarts}")
    a = a.detach()
    if eps == 0:
        out = a.clone()
        if return_value:
            with torch.no_grad():
                return out, f(out)
        return out
    lo, hi = feasible_box(a, eps)
    step = 2.5 * eps / max(steps, 1) if step_size is None else float(step_size)
    best_x = a.clone()
    best_v = torch.full(a.shape[:1], float("inf"), device=a.device, dtype=a.dtype)
    with torch.enable_grad():
        for _ in range(restarts):
            u = torch.rand(a.shape, generator=generator, device=a.device, dtype=a.dtype)
            x = lo + (hi - lo) * u
            for _ in range(steps):
                x.requires_grad_(True)
                v = f(x)
                if v.shape != best_v.shape:
                    raise ValueError(f"f must map (B, d) actions to (B,) values, got {tuple(v.shape)}")
                (grad,) = torch.autograd.grad(v.sum(), x)
                x, v = x.detach(), v.detach()
                better = v < best_v
                best_v = torch.where(better, v, best_v)
                best_x = torch.where(better.unsqueeze(-1), x, best_x)
                x = torch.minimum(torch.maximum(x - step * grad.sign(), lo), hi)
            with torch.no_grad():
                v = f(x)
            better = v < best_v
            best_v = torch.where(better, v, best_v)
            best_x = torch.where(better.unsqueeze(-1), x, best_x)
    return (best_x, best_v) if return_value else best_x
