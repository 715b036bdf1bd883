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
