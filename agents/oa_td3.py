"""OA-TD3: TD3 (:mod:`robustbench_rl.agents.td3`) with an optimal-adversary-aware critic.

A twin OA critic Q_adv values acting under the worst action perturbation in the eps_train box (the
optimal adversary), learned with the OA target

    a~' = PGD argmin over ||d||_inf <= eps_train of min_i Q_adv'_i(s', clip(a' + d))   (one batched call)
    y_adv = r + gamma (1 - terminated) min_i Q_adv'_i(s', a~')

and the actor step mixes two gradients: g_nom of -Q_1(s, mu(s)) and g_adv of
-Q_adv_1(s, clip(mu(s) + d*_s)) with d*_s from PGD held fixed (Danskin's theorem). With 0 < omega < 1
and `surgery`, conflicting gradients are projected onto each other's normal plane (PCGrad); the step
follows omega g_nom + (1 - omega) g_adv. At omega 1 the actor is TD3's (the OA critic is still learned,
so `min-oa-q` can use it); at omega 0 it follows the robust objective alone. With oa_every K > 1 the OA
critic steps on every K-th batch only and g_adv is recomputed once after each of those steps; with
oa_batch_size N the OA parts use the first N rows of each batch. Both are speed knobs whose defaults
are the paper's (see OATD3Config).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustbench_rl.agents.base import register_algo, soft_update
from robustbench_rl.agents.buffers import Batch
from robustbench_rl.agents.surgery import project_conflicting
from robustbench_rl.agents.td3 import TD3Config, TD3Trainer, UpdatePlan
from robustbench_rl.attacks.base import check_eps
from robustbench_rl.attacks.pgd import PGD_STARTS, worst_case
from robustbench_rl.networks import TwinCritic

PGD_METRIC_EVERY = 4
"""OA-TD3 logs pgd_q_drop (clean minus worst target Q) on every 4th update: it costs an extra forward."""


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
    knob: see docs/training.md, "Cheaper OA updates", for what it costs."""
    oa_every: int = 1
    """Updates per OA update: the OA critic's step (with its PGD target) runs on every oa_every-th
    batch, and the OA actor gradient is recomputed at the first actor step after it; actor steps in
    between reuse that OA gradient (a few updates stale) with a fresh nominal one. 1 = every update
    (the paper's schedule). See docs/training.md, "Cheaper OA updates", for the measured speed and robustness."""

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


class OATD3Trainer(TD3Trainer):
    """OA-TD3: TD3 plus the OA critic Q_adv (its own TD step on the OA target) and the omega-mixed actor
    gradient. Everything else is TD3's."""

    metric_names = (*TD3Trainer.metric_names,
                    "critic_adv_loss", "actor_adv_loss", "q_adv_mean", "pgd_q_drop", "conflict_share")

    def __init__(self, config: OATD3Config, env_id: str, seed: int, total_steps: int, device: torch.device) -> None:
        super().__init__(config, env_id, seed, total_steps, device)
        # The last OA actor gradient (flat), reused until the next OA update when oa_every > 1. Updated
        # in place, so that every CUDA graph of an update reads and writes the same tensor.
        self.g_adv = torch.zeros(sum(p.numel() for p in self.actor.parameters()), device=device)
        self.g_adv_due = True

    def network_specs(self) -> dict[str, dict]:
        specs = super().network_specs()
        return {**specs, "critic_adv": dict(specs["critic"])}

    def add_networks(self, nets: dict[str, nn.Module]) -> None:
        self.critic_adv: TwinCritic = nets["critic_adv"]
        self.critic_adv_target = copy.deepcopy(self.critic_adv).requires_grad_(False)

    def critic_parameters(self) -> list[nn.Parameter]:
        # One Adam over both critics: Adam is per-parameter, so this is exactly two optimisers at the cost of one.
        return super().critic_parameters() + list(self.critic_adv.parameters())

    def critic_loss(self, nominal: Tensor, b: Batch, next_act: Tensor, plan: UpdatePlan) -> Tensor:
        """TD3's critic loss plus the OA critic's, whose target acts under the worst perturbation of the
        smoothed target action (PGD on the target OA critic)."""
        if not plan.oa_critic:
            return nominal
        cfg = self.config
        n = self.oa_rows(cfg.batch_size)  # the OA rows: the batch's first n, a uniform sub-sample
        oa, oa_next_act = type(b)(*(t[:n] for t in b)), next_act[:n]
        q_adv_target = self.critic_adv_target.action_objective(oa.next_obs)  # a -> min_i Q_adv'_i(s', a)
        _, q_worst = worst_case(q_adv_target, oa_next_act, cfg.eps_train, cfg.pgd_steps,
                                restarts=cfg.pgd_restarts, start=cfg.pgd_start, generator=self.gen)
        y_adv = oa.rew + cfg.gamma * (1.0 - oa.done) * q_worst
        qa1_pred, qa2_pred = self.critic_adv(oa.obs, oa.act)
        critic_adv_loss = F.mse_loss(qa1_pred, y_adv) + F.mse_loss(qa2_pred, y_adv)
        self.metrics.add("critic_adv_loss", critic_adv_loss)
        self.metrics.add("q_adv_mean", qa1_pred.mean())
        if plan.monitor:  # a monitor: a sample is enough
            self.metrics.add("pgd_q_drop", (q_adv_target(oa_next_act) - q_worst).mean())
        return nominal + critic_adv_loss  # disjoint parameters: one backward gives each critic its own gradient

    def write_actor_gradient(self, params: list[nn.Parameter], obs: Tensor, act: Tensor, actor_loss: Tensor,
                             fresh_oa_gradient: bool) -> None:
        """omega g_nom + (1 - omega) g_adv, after PCGrad surgery where the two conflict.

        g_adv differentiates -Q_adv_1(s, clip(mu(s) + d*)) with d* PGD's worst perturbation held fixed
        (Danskin): the OA critic's analytic action gradient at the worst action, pushed through the
        actor. Without `fresh_oa_gradient` the last g_adv is reused (oa_every > 1).
        """
        omega = self.config.omega
        if omega == 1.0:
            return super().write_actor_gradient(params, obs, act, actor_loss, fresh_oa_gradient)
        if fresh_oa_gradient:
            n = self.oa_rows(len(obs))
            # On a sub-batch, its own (small) actor forward: backward through a slice of the full batch's
            # graph would cost the full batch.
            act_oa = act if n == len(obs) else self.actor(obs[:n])
            q_adv = self.critic_adv.action_objective(obs[:n], heads=("q1",))
            worst, _ = worst_case(q_adv, act_oa.detach(), self.config.eps_train, self.config.pgd_steps,
                                  restarts=self.config.pgd_restarts, start=self.config.pgd_start, generator=self.gen)
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

    def update_targets(self) -> None:
        super().update_targets()
        soft_update(self.critic_adv_target, self.critic_adv, self.config.tau)

    # ---- the OA schedule (oa_every, oa_batch_size: speed knobs, the paper's at their defaults) -------

    def update(self) -> UpdatePlan:
        plan = super().update()
        if plan.oa_critic:
            self.g_adv_due = True  # the OA critic moved: the next actor step recomputes its OA gradient
        if plan.oa_gradient:
            self.g_adv_due = False
        return plan

    def plan(self) -> UpdatePlan:
        """TD3's plan, plus whether this update steps the OA critic, logs the PGD monitor and refreshes
        the OA actor gradient."""
        cfg, n = self.config, self.n_updates
        oa_critic = n % cfg.oa_every == 0
        actor = super().plan().actor
        return UpdatePlan(oa_critic=oa_critic, monitor=oa_critic and (n // cfg.oa_every) % PGD_METRIC_EVERY == 0,
                          actor=actor, oa_gradient=actor and cfg.omega < 1 and (self.g_adv_due or oa_critic))

    def oa_rows(self, rows: int) -> int:
        """How many of a batch's `rows` (its first ones) the OA parts use: oa_batch_size, 0 = all of them."""
        return min(self.config.oa_batch_size or rows, rows)

    # ---- checkpoint / resume ---------------------------------------------------------------------

    def _modules(self) -> dict[str, nn.Module]:
        return super()._modules() | {"critic_adv": self.critic_adv, "critic_adv_target": self.critic_adv_target}

    def state_dict(self) -> dict:
        return {**super().state_dict(), "g_adv": self.g_adv, "g_adv_due": self.g_adv_due}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        # states saved before oa_every existed have neither: recompute at the next actor step
        if state.get("g_adv") is not None:
            self.g_adv.copy_(state["g_adv"])
        self.g_adv_due = bool(state.get("g_adv_due", True))


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


register_algo("oa-td3", OATD3Config, OATD3Trainer,
              "OA-TD3: TD3 + optimal-adversary-aware critic (PGD target) + omega-mixed actor with PCGrad surgery")
