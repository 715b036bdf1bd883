"""Networks, built from the small JSON specs stored in checkpoint metadata.

A spec is a dict such as ``{"type": "actor", "hidden": [256, 256], "activation": "relu"}``; the
observation and action sizes come from the checkpoint's dims. Keeping the spec tiny and explicit is
what lets a checkpoint be rebuilt without unpickling any code.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from robustbench_rl.netspec import check_spec, network_shapes  # noqa: F401  (network_shapes: re-exported)

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

    def tile(self, r: int) -> ActionObjective:
        """The same objective on these observations repeated r times (row i of block k is row i), so
        that PGD can run r restarts as one batch."""
        tiled = copy.copy(self)
        tiled.first = self.first.repeat(1, r, 1)
        return tiled

    def _hidden(self, act: Tensor) -> list[Tensor]:
        """Post-activation hidden layers, each (H, B, width)."""
        act = act.detach().unsqueeze(0).expand(self.w_act.shape[0], -1, -1)
        # Activations in place: each pre-activation is a fresh matmul output nobody else holds, and
        # writing into it saves a (H, B, width) buffer per layer, which is most of the cost beside the
        # matmuls. The backward below only needs the post-activations.
        hidden = [self._activate_(torch.baddbmm(self.first, act, self.w_act.mT))]
        for w, b in zip(self.weights[:-1], self.biases[:-1], strict=True):
            hidden.append(self._activate_(torch.baddbmm(b, hidden[-1], w.mT)))
        return hidden

    def _activate_(self, pre: Tensor) -> Tensor:
        return pre.tanh_() if self.tanh else pre.relu_()

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
        # Backpropagate each head's own output through its layers by hand, then keep, per row, the
        # gradient of the head that attains the minimum (the rows are independent, so selecting at the
        # end equals seeding the backward with a one-hot, one pass over a (H, B, width) block cheaper).
        grad = self.weights[-1].expand_as(hidden[-1])  # d q / d last hidden, the same for every row
        for i in range(len(hidden) - 1, -1, -1):
            # The activations' own backward kernels (one fused op each, as autograd would run them),
            # written over the previous matmul's output (fresh, held by nobody) where there is one.
            out = {} if i == len(hidden) - 1 else {"grad_input": grad}
            grad = (torch.ops.aten.tanh_backward(grad, hidden[i], **out) if self.tanh
                    else torch.ops.aten.threshold_backward(grad, hidden[i], 0.0, **out))
            grad = torch.bmm(grad, self.weights[i - 1]) if i > 0 else torch.bmm(grad, self.w_act)
        mine = (torch.arange(q.shape[0], device=q.device).unsqueeze(1) == head).unsqueeze(-1)  # (H, B, 1)
        return value, torch.where(mine, grad, 0.0).sum(0)


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


class ObsNormalizer(nn.Module):
    """Fixed observation standardisation (x - mean) / sqrt(var + 1e-8), clipped to +-clip."""

    def __init__(self, mean: Tensor, var: Tensor, clip: float = 10.0) -> None:
        super().__init__()
        self.register_buffer("mean", mean.float())
        self.register_buffer("var", var.float())
        self.clip = clip

    def forward(self, obs: Tensor) -> Tensor:
        return ((obs - self.mean) / torch.sqrt(self.var + 1e-8)).clamp(-self.clip, self.clip)


class TwinCriticView:
    """A checkpoint's twin critic as a critic callable (:class:`robustbench_rl.policy.Critic`): min over
    the heads, on raw observations."""

    def __init__(self, module: nn.Module, normalize: nn.Module) -> None:
        self.module = module
        self.normalize = normalize

    def __call__(self, obs: Tensor, act: Tensor) -> Tensor:
        # States often come from the CPU (envs, replay) while the critic and actions sit on a GPU.
        return self.module.min_q(self.normalize(obs.to(act.device)), act)

    def heads(self, obs: Tensor, act: Tensor) -> tuple[Tensor, Tensor]:
        return self.module(self.normalize(obs.to(act.device)), act)

    def objective(self, obs: Tensor):
        """a -> min-head Q(obs, a) for fixed obs, for PGD: with an analytic action gradient where the
        critic is a ReLU / tanh MLP (see ActionObjective), else plain autograd on :meth:`__call__`."""
        build = getattr(self.module, "action_objective", None)
        obs = obs.to(next(self.module.parameters()).device)
        try:
            if build is not None:
                return build(self.normalize(obs))
        except ValueError:  # an activation ActionObjective does not write out
            pass
        return lambda act: self(obs, act)


NETWORK_TYPES: dict[str, type[nn.Module]] = {
    "actor": Actor,
    "twin_critic": TwinCritic,
    "gaussian_actor": GaussianActor,
    "value": ValueNet,
}

def build_network(spec: Mapping, obs_dim: int, act_dim: int) -> nn.Module:
    """Instantiate the module a spec describes; raises ValueError naming the field of a bad spec."""
    kind = check_spec(spec)
    fields = {k: v for k, v in spec.items() if k != "type"}
    fields["hidden"] = [int(w) for w in spec["hidden"]]
    return NETWORK_TYPES[kind](obs_dim, act_dim, **fields)
