"""Batched projected gradient descent over actions: the one PGD engine.

Used by the Min-Q / Min-OA-Q attacks and inside the OA trainers' targets and actor steps. It
minimises f(a~) over the threat model's feasible set {a~ : ||a~ - a||_inf <= eps, a~ in [-1, 1]^d}
with L_inf sign-gradient steps from a random start, projecting after every step and keeping the best
iterate of each row. Rows are independent: the loop runs over steps (and, for objectives that cannot
tile their rows, over restarts), never over rows.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from robustbench_rl.threat import PGD_STARTS

SCREEN_SAMPLES = 256
"""Uniform samples of the box that the screened start scores (besides the clean action, the FGSM
corner and, for d <= SCREEN_CORNER_DIMS, every corner of the box)."""

SCREEN_DECAY = 0.7

SCREEN_CORNER_DIMS = 6
"""Largest action dimension whose 2**d box corners are all screened (64 at d = 6)."""


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
    start: str = "random",
    screen: int = SCREEN_SAMPLES,
) -> Tensor | tuple[Tensor, Tensor]:
    """Approximately solve argmin over the feasible set around `a` of f, row by row.

    `f` maps actions (B, d) to values (B,) (e.g. a critic with its observations bound); `a` is (B, d)
    in [-1, 1]. Each restart starts uniformly at random in the feasible box and takes `steps` steps
    x <- proj(x - step_size * sign(grad f(x))), step size 2.5 * eps / steps by default; the lowest
    value seen per row (start and final iterate included) wins. Gradients flow to the actions only:
    `f`'s parameters get none, and the returned tensor is detached. With `return_value`, also returns
    f at the returned actions. eps = 0 returns `a` unchanged; steps = 0 is a random search of
    `restarts` points. `start="fgsm"` makes the first restart begin at the box corner one full-budget
    signed gradient step from `a` (the clean action is then a candidate too); the other restarts stay
    random, and they are what finds minima the local gradient points away from (a cliff on the far side
    of the action), so use fgsm with restarts >= 2. `start="screen"` first scores candidates in one
    batched call of f (the clean action, the FGSM corner, every corner of the box when d <= 6, and
    `screen` uniform samples), then descends from the `restarts` best of them: a global look at the
    box before the local search, so a minimum far from the gradient's direction is not missed. An `f` with a `value_and_grad(x) -> (f(x), df/dx)`
    method (e.g. :meth:`TwinCritic.action_objective`) is differentiated by it instead of by autograd;
    one with a `tile(r)` method (the same objective on its rows repeated r times) runs all restarts as
    one batch, with the same result as running them one after the other.
    ValueError for a negative eps or steps, `a` not (B, d), or an unknown start.
    """
    if screen < 0:
        raise ValueError(f"screen must be >= 0 samples, got {screen}")
    if a.dim() != 2:
        raise ValueError(f"pgd_minimize needs actions of shape (B, d), got {tuple(a.shape)}")
    if not eps >= 0:  # also catches NaN
        raise ValueError(f"eps must be >= 0, got {eps}")
    if steps < 0 or restarts < 1:
        raise ValueError(f"steps must be >= 0 and restarts >= 1, got steps={steps}, restarts={restarts}")
    if start not in PGD_STARTS:
        raise ValueError(f"unknown PGD start {start!r}; use one of: {', '.join(PGD_STARTS)}")
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
    starts = []
    decay = 1.0
    if start == "screen":
        best_x, best_v, starts = _screened_starts(f, a, lo, hi, eps, restarts, screen, generator)
        decay = SCREEN_DECAY
    elif start == "fgsm":
        # The box corner one full-budget signed step from the clean action: the worst point of f's
        # linearisation, a strong start where f is smooth. The clean action is a candidate too.
        v_clean, grad = _value_and_grad(f)(a)
        best_x, best_v = _better(best_x, best_v, a, v_clean)
        starts.append(torch.minimum(torch.maximum(a - eps * grad.sign(), lo), hi))
    while len(starts) < restarts:
        u = torch.rand(a.shape, generator=generator, device=a.device, dtype=a.dtype)
        starts.append(lo + (hi - lo) * u)
    tile = getattr(f, "tile", None)
    if len(starts) > 1 and tile is not None:
        # All restarts at once, as one batch of restarts x B rows (restart-major): the same iterates as
        # one restart after the other, in 1/restarts of the calls, which is what counts at small batches.
        r = len(starts)
        x, v = _descend(tile(r), torch.cat(starts), lo.repeat(r, 1), hi.repeat(r, 1), step, steps, decay)
        found = zip(x.split(len(a)), v.split(len(a)), strict=True)
    else:
        found = (_descend(f, x, lo, hi, step, steps, decay) for x in starts)
    for x, v in found:  # in restart order: ties go to the earlier restart
        best_x, best_v = _better(best_x, best_v, x, v)
    return (best_x, best_v) if return_value else best_x


def worst_case(
    f: Callable[[Tensor], Tensor],
    a: Tensor,
    eps: float,
    steps: int,
    *,
    restarts: int = 1,
    start: str = "random",
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """The OA inner minimisation: (a~, f(a~)) with a~ the best point PGD finds in the feasible set
    around `a`, the clean action `a` always among the candidates.

    The one function behind every optimal-adversary target: OA-TD3's critic target and actor
    gradient, OA-PPO's critic target and A_adv, and the fitted Q_adv^pi. With the clean action a
    candidate, the inner minimum is never above f(a), whatever the start: a search that finds nothing
    better than the unperturbed action returns it rather than a worse random point. With
    ``start="fgsm"`` or ``"screen"`` :func:`pgd_minimize` already scores `a`, and the result is its own,
    bit for bit; a ``"random"`` start costs one extra call of f.
    """
    x, v = pgd_minimize(f, a, eps, steps, restarts=restarts, generator=generator, return_value=True, start=start)
    if start != "random" or eps == 0:
        return x, v
    with torch.no_grad():
        clean = a.detach()
        best_x, best_v = _better(clean, torch.full_like(v, float("inf")), clean, f(clean))
        return _better(best_x, best_v, x, v)  # ties keep the clean action, as pgd_minimize's own order does


def _screened_starts(f: Callable[[Tensor], Tensor], a: Tensor, lo: Tensor, hi: Tensor, eps: float, keep: int,
                     samples: int, generator: torch.Generator | None) -> tuple[Tensor, Tensor, list[Tensor]]:
    """Score the screening candidates of every row and return (best point, its value, the `keep` best
    candidates as PGD starts, best first). Candidates: the clean action, the FGSM corner, the box's
    2**d corners (d <= SCREEN_CORNER_DIMS) and `samples` uniform points, all in the feasible box."""
    _, grad = _value_and_grad(f)(a)
    cands = [a.unsqueeze(0), torch.minimum(torch.maximum(a - eps * grad.sign(), lo), hi).unsqueeze(0)]
    d = a.shape[1]
    if d <= SCREEN_CORNER_DIMS:
        bits = (torch.arange(2**d, device=a.device).unsqueeze(1) >> torch.arange(d, device=a.device)) & 1
        cands.append(torch.where(bits.bool().unsqueeze(1), hi, lo))  # (2**d, B, d)
    if samples > 0:
        u = torch.rand((samples, *a.shape), generator=generator, device=a.device, dtype=a.dtype)
        cands.append(lo + (hi - lo) * u)
    cands_t = torch.cat(cands)  # (K, B, d), candidate-major
    k = len(cands_t)
    with torch.no_grad():
        tile = getattr(f, "tile", None)
        if tile is not None:
            values = tile(k)(cands_t.reshape(k * len(a), d)).reshape(k, len(a))
        else:
            values = torch.stack([f(c).detach() for c in cands_t])
    values = values.nan_to_num(float("inf"))
    order = values.argsort(dim=0, stable=True)[:min(keep, k)]  # (keep, B): ties keep candidate order
    picked = cands_t.gather(0, order.unsqueeze(-1).expand(-1, -1, d))
    best_v = values.gather(0, order[:1]).squeeze(0)
    return picked[0], best_v, list(picked)


def _descend(f: Callable[[Tensor], Tensor], x: Tensor, lo: Tensor, hi: Tensor, step: float,
             steps: int, decay: float = 1.0) -> tuple[Tensor, Tensor]:
    """`steps` projected sign-gradient steps of f from x inside [lo, hi]; the best iterate of each row
    (the final one included) and its value."""
    value_and_grad = _value_and_grad(f)
    best_x = x
    best_v = torch.full(x.shape[:1], float("inf"), device=x.device, dtype=x.dtype)
    for _ in range(steps):
        v, grad = value_and_grad(x)
        best_x, best_v = _better(best_x, best_v, x, v)
        x = torch.minimum(torch.maximum(x - step * grad.sign(), lo), hi)
        step *= decay
    with torch.no_grad():
        return _better(best_x, best_v, x, f(x).detach())


def _better(best_x: Tensor, best_v: Tensor, x: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """Row by row, the candidate (x, v) where its value is strictly lower, else the best so far."""
    if v.shape != best_v.shape:
        raise ValueError(f"f must map (B, d) actions to (B,) values, got {tuple(v.shape)}")
    better = v < best_v
    return torch.where(better.unsqueeze(-1), x, best_x), torch.where(better, v, best_v)


def _value_and_grad(f: Callable[[Tensor], Tensor]) -> Callable[[Tensor], tuple[Tensor, Tensor]]:
    """x -> (f(x), df/dx): f's own analytic `value_and_grad` where it has one, else autograd."""
    analytic = getattr(f, "value_and_grad", None)
    if analytic is not None:
        return analytic

    def value_and_grad(x: Tensor) -> tuple[Tensor, Tensor]:
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            v = f(x)
            (grad,) = torch.autograd.grad(v.sum(), x)
        return v.detach(), grad
    return value_and_grad
