"""TD3 (Fujimoto et al. 2018) and OA-TD3, in one file: the OA parts are a visible, small difference.

TD3, per env step after `learning_starts` (CleanRL's td3_continuous_action, in the normalised action
space [-1, 1]^d):

    a'  = clip(mu'(s') + clip(N(0, policy_noise), +-noise_clip), -1, 1)      target policy smoothing
    y   = r + gamma (1 - terminated) min_i Q'_i(s', a')                     clipped double Q
    critic step on (Q_1(s, a) - y)^2 + (Q_2(s, a) - y)^2
    every policy_delay updates: actor step on -Q_1(s, mu(s)); Polyak-average the targets

OA-TD3 adds a twin OA critic Q_adv that values acting under the worst action perturbation in the
eps_train box (the optimal adversary), learned with the OA target

    a~' = PGD argmin over ||d||_inf <= eps_train of min_i Q_adv'_i(s', clip(a' + d))   (one batched call)
    y_adv = r + gamma (1 - terminated) min_i Q_adv'_i(s', a~')

and an actor step mixing two gradients: g_nom of -Q_1(s, mu(s)) and g_adv of
-Q_adv_1(s, clip(mu(s) + d*_s)) with d*_s from PGD held fixed (Danskin's theorem). With 0 < omega < 1
and `surgery`, conflicting gradients are projected onto each other's normal plane (PCGrad); the step
follows omega g_nom + (1 - omega) g_adv. At omega 1 the actor is TD3's (the OA critic is still learned,
so `min-oa-q` can use it); at omega 0 it follows the robust objective alone. With oa_every K > 1 the OA
critic steps on every K-th batch only and g_adv is recomputed once after each of those steps; with
oa_batch_size N the OA parts use the first N rows of each batch. Both are speed knobs whose defaults
are the paper's (see OATD3Config).

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
from robustbench_rl.agents.surgery import project_conflicting
from robustbench_rl.attacks.base import check_eps
from robustbench_rl.attacks.pgd import PGD_STARTS, pgd_minimize
from robustbench_rl.envs import make_env
from robustbench_rl.networks import Actor, TwinCritic, build_network

PGD_METRIC_EVERY = 4
"""OA-TD3 logs pgd_q_drop (clean minus worst target Q) on every 4th update: it costs an extra forward."""


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


@dataclass
class OATD3Config(TD3Config):
    """OA-TD3 hyperparameters: TD3's plus the optimal-adversary knobs."""

    omega: float = 0.5
    """Weight of the nominal actor gradient; 1 - omega goes to the OA (worst-case) gradient. 1 = TD3's actor."""
    eps_train: float = 0.1
    """L_inf budget of the adversary the OA critic and the actor train against (normalised action units)."""
    pgd_steps: int = 2
    """PGD sign-gradient steps per start, for the OA target and the OA actor gradient (step size
    2.5 eps / steps). See pgd_restarts for the measured effect of the defaults."""
    pgd_start: str = "fgsm"
    """Where PGD's first start is: "fgsm" (the box corner one full signed gradient step from the clean
    action; the clean action is a candidate too) or "random" (uniform in the box). Other starts are random."""
    pgd_restarts: int = 2
    """PGD starts per row (the best wins). The default, 2 steps from the FGSM corner plus 2 from a random
    point, costs about what 4 steps from one start do; on Ledge the random start is what finds the
    cliff on the far side of the action (BENCHMARKS.md, "OA-TD3 robustness with the fast defaults")."""
    surgery: bool = True
    """PCGrad gradient surgery between the nominal and OA actor gradients (only when 0 < omega < 1)."""
    oa_batch_size: int = 0
    """Rows of each minibatch the OA parts use (its first rows: a uniform sub-sample): the OA critic's
    step with its PGD target, and the OA actor gradient. 0 = the whole batch (the paper's). A speed
    knob: see README, "Cheaper OA updates", for what it costs."""
    oa_every: int = 1
    """Updates per OA update: the OA critic's step (with its PGD target) runs on every oa_every-th
    batch, and the OA actor gradient is recomputed at the first actor step after it; actor steps in
    between reuse that OA gradient (a few updates stale) with a fresh nominal one. 1 = every update
    (the paper's schedule). See README, "Cheaper OA updates", for the measured speed and robustness."""

    def validate(self) -> None:
        super().validate()
        if not 0.0 <= self.omega <= 1.0:
            raise ValueError(f"omega must be in [0, 1], got {self.omega}")
        check_eps(self.eps_train)
        if not 0 <= self.oa_batch_size <= self.batch_size:
            raise ValueError(f"oa-batch-size must be 1..batch-size ({self.batch_size}), or 0 for the whole batch; "
                             f"got {self.oa_batch_size}")
        if self.oa_every < 1:
            raise ValueError(f"oa-every must be >= 1 (1 = an OA update on every update), got {self.oa_every}")
        if self.pgd_steps < 1 or self.pgd_restarts < 1:
            raise ValueError(f"pgd-steps and pgd-restarts must be >= 1, got {self.pgd_steps}, {self.pgd_restarts}")
        if self.pgd_start not in PGD_STARTS:
            raise ValueError(f"pgd-start must be one of {', '.join(PGD_STARTS)}, got {self.pgd_start!r}")


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
    """TD3, or OA-TD3 when given an :class:`OATD3Config`."""

    def __init__(self, config: TD3Config, env_id: str, seed: int, total_steps: int, device: torch.device) -> None:
        super().__init__(config, env_id, seed, total_steps, device)
        self.oa = isinstance(config, OATD3Config)
        self.env = make_env(env_id)
        self.obs_dim = int(np.prod(self.env.observation_space.shape))
        self.act_dim = int(np.prod(self.env.action_space.shape))
        self.gen = torch.Generator(device=device).manual_seed(seed)

        spec = {"hidden": list(config.hidden), "activation": "relu"}
        self.networks = {"actor": {"type": "actor", **spec}, "critic": {"type": "twin_critic", **spec}}
        if self.oa:
            self.networks["critic_adv"] = {"type": "twin_critic", **spec}
        with torch.random.fork_rng(devices=[]):  # seed the init without touching the caller's global RNG
            torch.manual_seed(seed)
            nets = {k: build_network(v, self.obs_dim, self.act_dim).to(device) for k, v in self.networks.items()}
        self.actor: Actor = nets["actor"]
        self.critic: TwinCritic = nets["critic"]
        self.actor_target = copy.deepcopy(self.actor).requires_grad_(False)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=config.learning_rate, fused=True)
        if self.oa:
            self.critic_adv: TwinCritic = nets["critic_adv"]
            self.critic_adv_target = copy.deepcopy(self.critic_adv).requires_grad_(False)

        # One Adam over both critics (OA-TD3): Adam is per-parameter, so this is exactly two optimisers,
        # at the cost of one. fused: the single-kernel CPU/GPU Adam (torch's CPU default loops over tensors).
        critic_params = list(self.critic.parameters()) + (list(self.critic_adv.parameters()) if self.oa else [])
        self.critic_opt = torch.optim.Adam(critic_params, lr=config.learning_rate, fused=True)
        self.buffer = ReplayBuffer(self.obs_dim, self.act_dim, min(config.buffer_size, total_steps), device)
        self.replay = self.buffer  # saved beside the resume state by train(), not inside it
        self.metric_names = ("critic_loss", "actor_loss", "q_mean")
        if self.oa:
            self.metric_names += ("critic_adv_loss", "actor_adv_loss", "q_adv_mean", "pgd_q_drop", "conflict_share")
        self.metrics = MetricSum(self.metric_names)
        self.n_updates = 0
        # OA-TD3: the last OA actor gradient (flat), reused until the next OA update when oa_every > 1.
        # Updated in place, so that every CUDA graph of an update reads and writes the same tensor.
        n_actor = sum(p.numel() for p in self.actor.parameters())
        self.g_adv: Tensor | None = torch.zeros(n_actor, device=device) if self.oa else None
        self.g_adv_due = True
        self.graphs: GraphedUpdates | None = None
        self._reset_env(seed)

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

    def update(self) -> None:
        """One critic update (both critics for OA-TD3) and, every policy_delay updates, an actor update."""
        plan = self.plan()
        batch = self.buffer.sample(self.config.batch_size, self.gen)
        if self.graphs is None:
            self.learn(batch, plan)
        else:
            self.graphs.run(batch, plan)
        self.n_updates += 1
        if plan.oa_critic:
            self.g_adv_due = True  # the OA critic moved: the next actor step recomputes its OA gradient
        if plan.oa_gradient:
            self.g_adv_due = False

    def plan(self) -> UpdatePlan:
        """The next update's plan, from the update counter (and whether the OA gradient is stale)."""
        cfg, n = self.config, self.n_updates
        oa_critic = self.oa and n % cfg.oa_every == 0
        actor = (n + 1) % cfg.policy_delay == 0
        return UpdatePlan(oa_critic=oa_critic, monitor=oa_critic and (n // cfg.oa_every) % PGD_METRIC_EVERY == 0,
                          actor=actor, oa_gradient=actor and self.oa and cfg.omega < 1 and (self.g_adv_due or oa_critic))

    def learn(self, b: Batch, plan: UpdatePlan) -> None:
        """The update's tensor work on minibatch b, as `plan` says: it changes parameters, optimiser
        state, the OA gradient and the logged metrics, and no Python state (see `update`)."""
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
        loss = critic_loss

        if plan.oa_critic:
            # OA critic: the target acts under the worst perturbation of the smoothed target action
            n = self.oa_rows(cfg.batch_size)  # the OA rows: the batch's first n, a uniform sub-sample
            oa, oa_next_act = type(b)(*(t[:n] for t in b)), next_act[:n]
            q_adv_target = self.critic_adv_target.action_objective(oa.next_obs)  # a -> min_i Q_adv'_i(s', a)
            _, q_worst = pgd_minimize(q_adv_target, oa_next_act, cfg.eps_train, cfg.pgd_steps,
                                      restarts=cfg.pgd_restarts, generator=self.gen, return_value=True,
                                      start=cfg.pgd_start)
            y_adv = oa.rew + cfg.gamma * (1.0 - oa.done) * q_worst
            qa1_pred, qa2_pred = self.critic_adv(oa.obs, oa.act)
            critic_adv_loss = F.mse_loss(qa1_pred, y_adv) + F.mse_loss(qa2_pred, y_adv)
            loss = loss + critic_adv_loss  # disjoint parameters: one backward gives each critic its own gradient
            self.metrics.add("critic_adv_loss", critic_adv_loss)
            self.metrics.add("q_adv_mean", qa1_pred.mean())
            if plan.monitor:  # a monitor: a sample is enough
                self.metrics.add("pgd_q_drop", (q_adv_target(oa_next_act) - q_worst).mean())
        self.critic_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.critic_opt.step()

        if plan.actor:
            self.actor_step(b.obs, fresh_oa_gradient=plan.oa_gradient)
            soft_update(self.actor_target, self.actor, cfg.tau)
            soft_update(self.critic_target, self.critic, cfg.tau)
            if self.oa:
                soft_update(self.critic_adv_target, self.critic_adv, cfg.tau)

    def oa_rows(self, rows: int) -> int:
        """How many of a batch's `rows` (its first ones) the OA parts use: oa_batch_size, 0 = all of them."""
        return min(self.config.oa_batch_size or rows, rows)

    def actor_step(self, obs: Tensor, fresh_oa_gradient: bool = True) -> None:
        """TD3's deterministic policy gradient step; for OA-TD3 the omega-mix of nominal and OA gradients.

        The nominal objective -Q_1(s, mu(s)) is differentiated end to end by autograd, for the actor's
        parameters only (autograd then skips the critic's weight gradients). The OA objective takes the
        critic's analytic action gradient at PGD's worst action (Danskin) and pushes it through the actor.
        The critics get no gradient from either. Without `fresh_oa_gradient` the last OA gradient is
        reused (oa_every > 1).
        """
        params = list(self.actor.parameters())
        act = self.actor(obs)
        actor_loss = -self.critic.q1(torch.cat([obs, act], dim=-1)).mean()
        self.metrics.add("actor_loss", actor_loss.detach())
        omega = self.config.omega if self.oa else 1.0
        if omega == 1.0:
            for p, g in zip(params, torch.autograd.grad(actor_loss, params), strict=True):
                p.grad = g
            self.actor_opt.step()
            return
        if fresh_oa_gradient:
            # The worst perturbation of the current action, held fixed while differentiating (Danskin):
            # d/dmu of Q_adv(s, clip(mu + d*)) is Q_adv's action gradient at the worst action (in [-1, 1]).
            n = self.oa_rows(len(obs))
            # On a sub-batch, its own (small) actor forward: backward through a slice of the full batch's
            # graph would cost the full batch.
            act_oa = act if n == len(obs) else self.actor(obs[:n])
            q_adv = self.critic_adv.action_objective(obs[:n], heads=("q1",))
            worst = pgd_minimize(q_adv, act_oa.detach(), self.config.eps_train, self.config.pgd_steps,
                                 generator=self.gen, restarts=self.config.pgd_restarts, start=self.config.pgd_start)
            q_worst, dq_worst = q_adv.value_and_grad(worst)
            self.metrics.add("actor_adv_loss", -q_worst.mean())
            self.g_adv.copy_(flat_grad(act_oa, params, (-1.0 / n) * dq_worst, retain_graph=omega > 0 and n == len(obs)))
        g_adv = self.g_adv  # with oa_every > 1, possibly from an earlier batch and actor: see OATD3Config
        if omega == 0.0:
            grad = g_adv
        else:
            g_nom = flat_grad(actor_loss, params)
            if self.config.surgery:
                g_nom, g_adv, conflict = project_conflicting(g_nom, g_adv)
            else:
                conflict = torch.dot(g_nom, g_adv) < 0
            self.metrics.add("conflict_share", conflict.float())
            grad = omega * g_nom + (1.0 - omega) * g_adv
        set_flat_grad(params, grad)
        self.actor_opt.step()

    # ---- checkpoint / resume ---------------------------------------------------------------------

    def pop_metrics(self) -> dict[str, float]:
        return self.metrics.pop()

    def _modules(self) -> dict[str, nn.Module]:
        mods = {"actor": self.actor, "critic": self.critic, "actor_target": self.actor_target,
                "critic_target": self.critic_target}
        if self.oa:
            mods |= {"critic_adv": self.critic_adv, "critic_adv_target": self.critic_adv_target}
        return mods

    def _optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"actor": self.actor_opt, "critic": self.critic_opt}

    def policy_state(self):
        modules = {"actor": self.actor, "critic": self.critic}
        if self.oa:
            modules["critic_adv"] = self.critic_adv
        return modules, dict(self.networks), {}, {}

    def state_dict(self) -> dict:
        return {
            "global_step": self.global_step,
            "n_updates": self.n_updates,
            "modules": {k: m.state_dict() for k, m in self._modules().items()},
            "optimizers": {k: o.state_dict() for k, o in self._optimizers().items()},
            "rng": self.gen.get_state(),
            **({"g_adv": self.g_adv, "g_adv_due": self.g_adv_due} if self.oa else {}),
        }

    def load_state_dict(self, state: dict) -> None:
        for k, m in self._modules().items():
            m.load_state_dict(state["modules"][k])
        for k, o in self._optimizers().items():
            o.load_state_dict(state["optimizers"][k])
        self.gen.set_state(state["rng"].cpu())  # generator states are CPU byte tensors, even for CUDA
        self.global_step = int(state["global_step"])
        self.n_updates = int(state["n_updates"])
        if self.oa:  # states saved before oa_every existed have neither: recompute at the next actor step
            if state.get("g_adv") is not None:
                self.g_adv.copy_(state["g_adv"])
            self.g_adv_due = bool(state.get("g_adv_due", True))
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


def flat_grad(out: Tensor, params: list[nn.Parameter], grad_out: Tensor | None = None,
              retain_graph: bool = False) -> Tensor:
    """The vector-Jacobian product grad_out . d out / d params (d out / d params for a scalar `out`), as
    one flat vector (these parameters only)."""
    grads = torch.autograd.grad(out, params, grad_outputs=grad_out, retain_graph=retain_graph)
    return torch.cat([g.reshape(-1) for g in grads])


def set_flat_grad(params: list[nn.Parameter], flat: Tensor) -> None:
    """Write a flat gradient vector into the parameters' .grad, for the optimiser step."""
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset:offset + n].view_as(p).clone()
        offset += n


register_algo("td3", TD3Config, TD3Trainer, "TD3 (Fujimoto et al. 2018), CleanRL/SB3 defaults")
register_algo("oa-td3", OATD3Config, TD3Trainer,
              "OA-TD3: TD3 + optimal-adversary-aware critic (PGD target) + omega-mixed actor with PCGrad surgery")
