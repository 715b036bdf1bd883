"""Networks, built from the small JSON specs stored in checkpoint metadata.

A spec is a dict such as ``{"type": "actor", "hidden": [256, 256], "activation": "relu"}``; the
observation and action sizes come from the checkpoint's dims. Keeping the spec tiny and explicit is
what lets a checkpoint be rebuilt without unpickling any code.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU}


def mlp(in_dim: int, out_dim: int, hidden: list[int], activation: str) -> nn.Sequential:
    """Plain MLP: Linear -> act -> ... -> Linear (no output activation)."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; known: {sorted(ACTIVATIONS)}")
    layers: list[nn.Module] = []
    last = in_dim
    for width in hidden:
        layers += [nn.Linear(last, width), ACTIVATIONS[activation]()]
        last = width
    layers.append(nn.Linear(last, out_dim))
    return nn.Sequential(*layers)


class Actor(nn.Module):
    """Deterministic policy obs -> tanh-squashed action in [-1, 1]^d (TD3)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: list[int], activation: str = "relu") -> None:
        super().__init__()
        self.net = mlp(obs_dim, act_dim, hidden, activation)

    def forward(self, obs: Tensor) -> Tensor:
        return torch.tanh(self.net(obs))


class TwinCritic(nn.Module):
    """Two independent Q heads on (obs, action); `forward` returns both, `min_q` their minimum."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: list[int], activation: str = "relu") -> None:
        super().__init__()
        self.q1 = mlp(obs_dim + act_dim, 1, hidden, activation)
        self.q2 = mlp(obs_dim + act_dim, 1, hidden, activation)

    def forward(self, obs: Tensor, act: Tensor) -> tuple[Tensor, Tensor]:
        x = torch.cat([obs, act], dim=-1)
        return self.q1(x).squeeze(-1), self.q2(x).squeeze(-1)

    def min_q(self, obs: Tensor, act: Tensor) -> Tensor:
        q1, q2 = self(obs, act)
        return torch.minimum(q1, q2)

    def action_objective(self, obs: Tensor, heads: tuple[str, ...] = ("q1", "q2")) -> ActionObjective:
        """a -> min over `heads` of Q(obs, a) for fixed obs, with an analytic action gradient (for PGD)."""
        return ActionObjective([getattr(self, h) for h in heads], obs)


class ActionObjective:
    """f(a) = min over MLP heads of head(cat(obs, a)) for a fixed batch of observations, for PGD.

    PGD evaluates the same critic on the same states many times, changing only the action, so this
    precomputes each head's first-layer contribution of the observations once and evaluates all heads
    with one batched matmul per layer. `value_and_grad` returns f and df/da without autograd (the ReLU /
    tanh backward written out): PGD's inner loop is then a handful of large ops instead of an autograd
    graph per step, which is what dominates at small batches. The weights are read, never trained
    through: no gradient reaches the critic. Calling the object gives f(a) alone.
    """

    def __init__(self, heads: list[nn.Sequential], obs: Tensor) -> None:
        linears = [[m for m in head if isinstance(m, nn.Linear)] for head in heads]
        acts = {type(m) for head in heads for m in head if not isinstance(m, nn.Linear)}
        if not acts <= {nn.ReLU, nn.Tanh}:
            raise ValueError(f"ActionObjective supports ReLU and tanh MLPs, got {sorted(a.__name__ for a in acts)}")
        self.tanh = nn.Tanh in acts
        with torch.no_grad():
            obs_dim = obs.shape[-1]
            w0 = torch.stack([layers[0].weight for layers in linears])  # (H, h1, obs_dim + act_dim)
            b0 = torch.stack([layers[0].bias for layers in linears]).unsqueeze(1)
            self.first = torch.baddbmm(b0, obs.unsqueeze(0).expand(len(heads), -1, -1), w0[:, :, :obs_dim].mT)
            self.w_act = w0[:, :, obs_dim:].contiguous()  # (H, h1, act_dim)
            self.weights = [torch.stack([layers[i].weight for layers in linears]) for i in range(1, len(linears[0]))]
            self.biases = [torch.stack([layers[i].bias for layers in linears]).unsqueeze(1)
                           for i in range(1, len(linears[0]))]

    def _hidden(self, act: Tensor) -> list[Tensor]:
        """Post-activation hidden layers, each (H, B, width)."""
        act = act.detach().unsqueeze(0).expand(self.w_act.shape[0], -1, -1)
        pre = torch.baddbmm(self.first, act, self.w_act.mT)
        hidden = [torch.tanh(pre) if self.tanh else torch.relu(pre)]
        for w, b in zip(self.weights[:-1], self.biases[:-1], strict=True):
            pre = torch.baddbmm(b, hidden[-1], w.mT)
            hidden.append(torch.tanh(pre) if self.tanh else torch.relu(pre))
        return hidden

    @torch.no_grad()
    def __call__(self, act: Tensor) -> Tensor:
        hidden = self._hidden(act)
        return torch.baddbmm(self.biases[-1], hidden[-1], self.weights[-1].mT).squeeze(-1).amin(0)

    @torch.no_grad()
    def value_and_grad(self, act: Tensor) -> tuple[Tensor, Tensor]:
        """f(act) (B,) and df/dact (B, act_dim): the gradient of the head that attains the minimum."""
        hidden = self._hidden(act)
        q = torch.baddbmm(self.biases[-1], hidden[-1], self.weights[-1].mT).squeeze(-1)  # (H, B)
        value, head = q.min(0)
        # Backpropagate a one-hot seed (the minimising head of each row) through the layers by hand.
        seed = (torch.arange(q.shape[0], device=q.device).unsqueeze(1) == head).to(q.dtype).unsqueeze(-1)
        grad = seed * self.weights[-1]  # (H, B, width): d q / d last hidden
        for i in range(len(hidden) - 1, -1, -1):
            h = hidden[i]
            # The activations' own backward kernels (one fused op each, as autograd would run them).
            grad = torch.ops.aten.tanh_backward(grad, h) if self.tanh else torch.ops.aten.threshold_backward(grad, h, 0.0)
            grad = torch.bmm(grad, self.weights[i - 1]) if i > 0 else torch.bmm(grad, self.w_act)
        return value, grad.sum(0)


class GaussianActor(nn.Module):
    """Gaussian policy with a state-independent log-std (PPO); `forward` is the mean action."""

    def __init__(
        self, obs_dim: int, act_dim: int, hidden: list[int], activation: str = "tanh", log_std_init: float = 0.0
    ) -> None:
        super().__init__()
        self.mean = mlp(obs_dim, act_dim, hidden, activation)
        self.log_std = nn.Parameter(torch.full((act_dim,), float(log_std_init)))

    def forward(self, obs: Tensor) -> Tensor:
        return self.mean(obs)

    def distribution(self, obs: Tensor) -> torch.distributions.Normal:
        mean = self.mean(obs)
        return torch.distributions.Normal(mean, self.log_std.exp().expand_as(mean))


class ValueNet(nn.Module):
    """State-value head V(s) (PPO)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: list[int], activation: str = "tanh") -> None:
        super().__init__()
        self.net = mlp(obs_dim, 1, hidden, activation)

    def forward(self, obs: Tensor) -> Tensor:
        return self.net(obs).squeeze(-1)


NETWORK_TYPES: dict[str, type[nn.Module]] = {
    "actor": Actor,
    "twin_critic": TwinCritic,
    "gaussian_actor": GaussianActor,
    "value": ValueNet,
}


def build_network(spec: dict, obs_dim: int, act_dim: int) -> nn.Module:
    """Instantiate the module a spec describes; raises ValueError on an unknown type or field."""
    spec = dict(spec)
    kind = spec.pop("type", None)
    if kind not in NETWORK_TYPES:
        raise ValueError(f"unknown network type {kind!r}; known: {sorted(NETWORK_TYPES)}")
    try:
        return NETWORK_TYPES[kind](obs_dim, act_dim, **spec)
    except TypeError as err:
        raise ValueError(f"bad {kind} spec {spec}: {err}") from None
