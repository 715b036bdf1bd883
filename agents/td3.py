"""TD3 (Fujimoto et al. 2018), in the normalised action space [-1, 1]^d (CleanRL's td3_continuous_action).

Per env step after `learning_starts`:

    a'  = clip(mu'(s') + clip(N(0, policy_noise), +-noise_clip), -1, 1)      target policy smoothing
    y   = r + gamma (1 - terminated) min_i Q'_i(s', a')                     clipped double Q
    critic step on (Q_1(s, a) - y)^2 + (Q_2(s, a) - y)^2
    every policy_delay updates: actor step on -Q_1(s, mu(s)); Polyak-average the targets

OA-TD3 (:mod:`robustbench_rl.agents.oa_td3`) is this trainer with a second critic and another actor
gradient; the hooks it overrides are :meth:`TD3Trainer.critic_loss`, :meth:`TD3Trainer.write_actor_gradient`
and the network set-up.

Code layout: `update` samples a minibatch and makes the update's plan (which of the steps above it
takes) in Python; `learn` does the tensor work. On a GPU that split lets each plan's kernels replay
as one CUDA graph (robustbench_rl.agents.graphs).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustbench_rl.agents.base import MetricSum, Trainer, check_fields, register_algo, soft_update
from robustbench_rl.agents.buffers import Batch, ReplayBuffer
from robustbench_rl.agents.graphs import GraphedUpdates
from robustbench_rl.envs import make_env
from robustbench_rl.networks import Actor, TwinCritic, build_network


@dataclass
class TD3Config:
    """TD3 hyperparameters (defaults: CleanRL / SB3)."""

    hidden: list[int] = field(default_factory=lambda: [256, 256])
    """Hidden layer widths of the actor and of each critic head (ReLU MLPs)."""
    learning_rate: float = 3e-4
    """Adam learning rate of the actor and the critics."""
    buffer_size: int = 1_000_000
    """Replay buffer capacity in transitions (preallocated; never more than the run's --steps)."""
    gamma: float = 0.99
    """Discount factor."""
    tau: float = 0.005
    """Polyak averaging rate of the target networks."""
    batch_size: int = 256
    """Minibatch size of each gradient update."""
    policy_noise: float = 0.2
    """Std of the target policy smoothing noise (normalised action units)."""
    noise_clip: float = 0.5
    """Clip of the target policy smoothing noise."""
    exploration_noise: float = 0.1
    """Std of the Gaussian exploration noise added to the actor's action while collecting data."""
    policy_delay: int = 2
    """Critic updates per actor (and target) update."""
    learning_starts: int = 1_000
    """Env steps of uniform random actions before learning starts (one update per env step after it).
    1000 (between SB3's 100 and CleanRL's 25k): measured on InvertedPendulum-v5, 5000 left 1 of 3 seeds
    short of 1000 at 30k steps, 1000 brought all 3 there by 22.5k (BENCHMARKS.md)."""

    def validate(self) -> None:
        """ValueError naming the first hyperparameter out of range."""
        if not self.hidden or any(w < 1 for w in self.hidden):
            raise ValueError(f"hidden must be positive layer widths, e.g. 256,256; got {self.hidden}")
        check_fields(self, ("buffer_size", "batch_size", "policy_delay"), {
            "learning_rate": self.learning_rate > 0, "gamma": 0 <= self.gamma <= 1, "tau": 0 < self.tau <= 1,
            "policy_noise": self.policy_noise >= 0, "noise_clip": self.noise_clip >= 0,
            "exploration_noise": self.exploration_noise >= 0, "learning_starts": self.learning_starts >= 0})


class UpdatePlan(NamedTuple):
    """What one update does, decided in Python before it runs from the update counter alone, so that
    every update with the same plan launches the same kernels (and can replay one CUDA graph)."""

    oa_critic: bool
    """The OA critic's step with its PGD target (OA-TD3, every oa_every-th update)."""
    monitor: bool
    """Log pgd_q_drop (every PGD_METRIC_EVERY-th OA critic step)."""
    actor: bool
    """An actor step and the target networks' Polyak step (every policy_delay-th update)."""
    oa_gradient: bool
    """The actor step recomputes the OA actor gradient (the OA critic moved since the last one)."""


class TD3Trainer(Trainer):
    """TD3. :class:`OATD3Trainer` overrides its networks, its critic loss and its actor gradient."""

    metric_names = ("critic_loss", "actor_loss", "q_mean")

    def __init__(self, config: TD3Config, env_id: str, seed: int, total_steps: int, device: torch.device) -> None:
        super().__init__(config, env_id, seed, total_steps, device)
        self.env = make_env(env_id)
        self.obs_dim = int(np.prod(self.env.observation_space.shape))
        self.act_dim = int(np.prod(self.env.action_space.shape))
        self.gen = torch.Generator(device=device).manual_seed(seed)

        self.networks = self.network_specs()
        with torch.random.fork_rng(devices=[]):  # seed the init without touching the caller's global RNG
            torch.manual_seed(seed)
            nets = {k: build_network(v, self.obs_dim, self.act_dim).to(device) for k, v in self.networks.items()}
        self.actor: Actor = nets["actor"]
        self.critic: TwinCritic = nets["critic"]
        self.actor_target = copy.deepcopy(self.actor).requires_grad_(False)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=config.learning_rate, fused=True)
        self.add_networks(nets)
        # fused: the single-kernel CPU/GPU Adam (torch's CPU default loops over tensors).
        self.critic_opt = torch.optim.Adam(self.critic_parameters(), lr=config.learning_rate, fused=True)
        self.buffer = ReplayBuffer(self.obs_dim, self.act_dim, min(config.buffer_size, total_steps), device)
        self.replay = self.buffer  # saved beside the resume state by train(), not inside it
        self.metrics = MetricSum(self.metric_names)
        self.n_updates = 0
        self.graphs: GraphedUpdates | None = None
        self._reset_env(seed)

    def network_specs(self) -> dict[str, dict]:
        spec = {"hidden": list(self.config.hidden), "activation": "relu"}
        return {"actor": {"type": "actor", **spec}, "critic": {"type": "twin_critic", **spec}}

    def add_networks(self, nets: dict[str, nn.Module]) -> None:
        """Networks beyond the actor and the critic (none for TD3)."""

    def critic_parameters(self) -> list[nn.Parameter]:
        return list(self.critic.parameters())

    # ---- data collection -------------------------------------------------------------------------

    def _reset_env(self, seed: int | None) -> None:
        obs, _ = self.env.reset(seed=seed)
        self.obs = np.asarray(obs, dtype=np.float32).reshape(-1)
        self.ep_return, self.ep_length = 0.0, 0

    @torch.no_grad()
    def select_action(self) -> np.ndarray:
        """Uniform random before learning_starts, then mu(s) + N(0, exploration_noise), clipped to [-1, 1]."""
        if self.global_step < self.config.learning_starts:
            act = torch.rand(self.act_dim, generator=self.gen, device=self.device) * 2 - 1
        else:
            obs = torch.as_tensor(self.obs, device=self.device).unsqueeze(0)
            noise = torch.randn(self.act_dim, generator=self.gen, device=self.device) * self.config.exploration_noise
            act = (self.actor(obs)[0] + noise).clamp(-1.0, 1.0)
        return act.cpu().numpy()

    def advance(self, until: int) -> list[tuple[float, int]]:
        finished = []
        while self.global_step < until:
            act = self.select_action()
            next_obs, reward, terminated, truncated, _ = self.env.step(act)
            next_obs = np.asarray(next_obs, dtype=np.float32).reshape(-1)
            # `terminated` only: a time-limit cut bootstraps from the real final observation.
            self.buffer.add(self.obs, act, float(reward), next_obs, float(terminated))
            self.ep_return += float(reward)
            self.ep_length += 1
            self.global_step += 1
            if terminated or truncated:
                finished.append((self.ep_return, self.ep_length))
                self._reset_env(None)
            else:
                self.obs = next_obs
            if self.global_step >= self.config.learning_starts:
                self.update()
        return finished

    # ---- learning --------------------------------------------------------------------------------

    def update(self) -> UpdatePlan:
        """One critic update and, every policy_delay updates, an actor update."""
        plan = self.plan()
        batch = self.buffer.sample(self.config.batch_size, self.gen)
        if self.graphs is None:
            self.learn(batch, plan)
        else:
            self.graphs.run(batch, plan)
        self.n_updates += 1
        return plan

    def plan(self) -> UpdatePlan:
        """The next update's plan, from the update counter."""
        actor = (self.n_updates + 1) % self.config.policy_delay == 0
        return UpdatePlan(oa_critic=False, monitor=False, actor=actor, oa_gradient=False)

    def learn(self, b: Batch, plan: UpdatePlan) -> None:
        """The update's tensor work on minibatch b, as `plan` says: it changes parameters, optimiser
        state and the logged metrics, and no Python state (see `update`)."""
        cfg = self.config
        with torch.no_grad():
            noise = (torch.randn(b.act.shape, generator=self.gen, device=self.device) * cfg.policy_noise
                     ).clamp(-cfg.noise_clip, cfg.noise_clip)
            next_act = (self.actor_target(b.next_obs) + noise).clamp(-1.0, 1.0)
            y = b.rew + cfg.gamma * (1.0 - b.done) * self.critic_target.min_q(b.next_obs, next_act)
        q1_pred, q2_pred = self.critic(b.obs, b.act)
        critic_loss = F.mse_loss(q1_pred, y) + F.mse_loss(q2_pred, y)
        self.metrics.add("critic_loss", critic_loss)
        self.metrics.add("q_mean", q1_pred.mean())
        loss = self.critic_loss(critic_loss, b, next_act, plan)
        self.critic_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.critic_opt.step()

        if plan.actor:
            self.actor_step(b.obs, fresh_oa_gradient=plan.oa_gradient)
            self.update_targets()

    def critic_loss(self, nominal: Tensor, b: Batch, next_act: Tensor, plan: UpdatePlan) -> Tensor:
        """The loss of the critic step: TD3's clipped double-Q loss."""
        return nominal

    def update_targets(self) -> None:
        soft_update(self.actor_target, self.actor, self.config.tau)
        soft_update(self.critic_target, self.critic, self.config.tau)

    def actor_step(self, obs: Tensor, fresh_oa_gradient: bool = True) -> None:
        """The deterministic policy gradient step on -Q_1(s, mu(s)).

        The objective is differentiated end to end by autograd, for the actor's parameters only
        (autograd then skips the critic's weight gradients); the critic gets no gradient.
        """
        params = list(self.actor.parameters())
        act = self.actor(obs)
        actor_loss = -self.critic.q1(torch.cat([obs, act], dim=-1)).mean()
        self.metrics.add("actor_loss", actor_loss.detach())
        self.write_actor_gradient(params, obs, act, actor_loss, fresh_oa_gradient)
        self.actor_opt.step()

    def write_actor_gradient(self, params: list[nn.Parameter], obs: Tensor, act: Tensor, actor_loss: Tensor,
                             fresh_oa_gradient: bool) -> None:
        for p, g in zip(params, torch.autograd.grad(actor_loss, params), strict=True):
            p.grad = g

    # ---- checkpoint / resume ---------------------------------------------------------------------

    def pop_metrics(self) -> dict[str, float]:
        return self.metrics.pop()

    def _modules(self) -> dict[str, nn.Module]:
        return {"actor": self.actor, "critic": self.critic, "actor_target": self.actor_target,
                "critic_target": self.critic_target}

    def _optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"actor": self.actor_opt, "critic": self.critic_opt}

    def policy_state(self):
        return {k: m for k, m in self._modules().items() if not k.endswith("_target")}, dict(self.networks), {}, {}

    def state_dict(self) -> dict:
        return {
            "global_step": self.global_step,
            "n_updates": self.n_updates,
            "modules": {k: m.state_dict() for k, m in self._modules().items()},
            "optimizers": {k: o.state_dict() for k, o in self._optimizers().items()},
            "rng": self.gen.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        for k, m in self._modules().items():
            m.load_state_dict(state["modules"][k])
        for k, o in self._optimizers().items():
            o.load_state_dict(state["optimizers"][k])
        self.gen.set_state(state["rng"].cpu())  # generator states are CPU byte tensors, even for CUDA
        self.global_step = int(state["global_step"])
        self.n_updates = int(state["n_updates"])
        if self.graphs is not None:  # the optimisers' state tensors are new: capture again
            self.use_cuda_graphs()
        self._reset_env(self.seed + self.global_step)

    def use_cuda_graphs(self) -> bool:
        """Replay the updates as CUDA graphs, one per update plan (robustbench_rl.agents.graphs): the same
        updates, without the kernel launches that bound them on a GPU. CUDA only."""
        self.graphs = GraphedUpdates(self.learn, self.metrics, self.gen, [self.actor_opt, self.critic_opt])
        return True

    def close(self) -> None:
        self.env.close()


register_algo("td3", TD3Config, TD3Trainer, "TD3 (Fujimoto et al. 2018), CleanRL/SB3 defaults")
