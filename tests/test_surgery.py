"""PCGrad projection on hand-computed vectors."""

from __future__ import annotations

import pytest
import torch

from robustbench_rl.agents.surgery import project_conflicting


def t(*xs: float) -> torch.Tensor:
    return torch.tensor(xs, dtype=torch.float64)


def test_conflicting_gradients_are_projected_onto_each_others_normal_plane():
    g1, g2 = t(1.0, 0.0), t(-1.0, 1.0)  # g1 . g2 = -1
    p1, p2, conflict = project_conflicting(g1, g2)
    # g1' = g1 - (-1 / 2) g2 = (0.5, 0.5);  g2' = g2 - (-1 / 1) g1 = (0, 1)
    torch.testing.assert_close(p1, t(0.5, 0.5))
    torch.testing.assert_close(p2, t(0.0, 1.0))
    assert bool(conflict)
    assert abs(float(p1 @ g2)) < 1e-12 and abs(float(p2 @ g1)) < 1e-12
    # the inputs are left untouched
    torch.testing.assert_close(g1, t(1.0, 0.0))
    torch.testing.assert_close(g2, t(-1.0, 1.0))


def test_three_dimensional_conflict():
    g1, g2 = t(2.0, 1.0, 0.0), t(-1.0, 0.0, 3.0)  # dot = -2, |g2|^2 = 10, |g1|^2 = 5
    p1, p2, conflict = project_conflicting(g1, g2)
    torch.testing.assert_close(p1, t(2.0 - 0.2, 1.0, 0.6))
    torch.testing.assert_close(p2, t(-1.0 + 0.8, 0.4, 3.0))
    assert bool(conflict)


@pytest.mark.parametrize("g1,g2", [((1.0, 0.0), (0.0, 1.0)),   # orthogonal: no conflict
                                   ((1.0, 2.0), (2.0, 1.0)),   # aligned
                                   ((0.0, 0.0), (1.0, -1.0))])  # a zero gradient conflicts with nothing
def test_non_conflicting_gradients_pass_unchanged(g1, g2):
    a, b = t(*g1), t(*g2)
    p1, p2, conflict = project_conflicting(a, b)
    assert torch.equal(p1, a) and torch.equal(p2, b)
    assert not bool(conflict)


def test_opposite_gradients_cancel():
    p1, p2, conflict = project_conflicting(t(1.0, 1.0), t(-2.0, -2.0))
    torch.testing.assert_close(p1, t(0.0, 0.0))
    torch.testing.assert_close(p2, t(0.0, 0.0))
    assert bool(conflict)


def test_shape_errors():
    with pytest.raises(ValueError, match="flat vectors"):
        project_conflicting(torch.zeros(2, 2), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="equal length"):
        project_conflicting(torch.zeros(3), torch.zeros(2))
