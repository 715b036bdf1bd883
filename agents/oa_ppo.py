"""OA-PPO: PPO (:mod:`robustbench_rl.agents.ppo`) with an optimal-adversary-aware critic.

A twin OA critic Q_adv(s, a) that values acting under the worst perturbation in the
eps_train box when following the policy's mean action, trained by TD on a short replay of the last
`replay_rollouts` rollouts (clipped actions, real next states):

    y_adv = r + gamma (1 - terminated) min_d min_i Q_adv'_i(s', clip(clip(mu(s')) + d))

and the policy's advantage mixes GAE's with the OA advantage

    A_adv(s, a) = min_d Q_adv(s, clip(clip(a) + d)) - min_d Q_adv(s, clip(clip(mu(s)) + d))
    A = omega norm(A_gae) + (1 - omega) norm(A_adv)

The min around the sampled action is what makes the current step robust (a baseline alone does not
change the policy gradient). Every min_d is the shared OA inner minimisation
(:func:`robustbench_rl.attacks.pgd.worst_case`: PGD from a random start, the clean action always a
candidate), and both minima of A_adv are one batched call of it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustbench_rl.agents.base import register_algo, soft_update
from robustbench_rl.agents.buffers import ReplayBuffer
from robustbench_rl.agents.ppo import PPOConfig, PPOTrainer, standardize
from robustbench_rl.attacks.base import check_eps
from robustbench_rl.attacks.pgd import worst_case
from robustbench_rl.networks import TwinCritic


@dataclass
class OAPPOConfig(PPOConfig):
    """OA-PPO hyperparameters: PPO's plus the optimal-adversary knobs."""

    omega: float = 0.5
    """Weight of the GAE advantage; 1 - omega goes to the OA advantage. 1 = PPO's policy update."""
    eps_train: float = 0.1
    """L_inf budget of the adversary the OA critic and the OA advantage assume (normalised action units)."""
    pgd_steps: int = 10
    """PGD sign-gradient steps for the OA target and the OA advantage (step size 2.5 eps / steps)."""
    critic_adv_hidden: list[int] = field(default_factory=lambda: [256, 256])
    """Hidden layer widths of each head of the twin OA critic (ReLU MLPs)."""
    critic_adv_lr: float = 3e-4
    """Adam learning rate of the OA critic."""
    critic_adv_batch: int = 256
    """Minibatch size of the OA critic's TD updates."""
    critic_adv_updates: int = 128
    """OA critic TD updates per rollout (before the advantage is computed)."""
    replay_rollouts: int = 16
    """The OA critic's replay holds the transitions of this many most recent rollouts (its TD target follows
    the current mean action, so older data stays valid; too short a replay forgets states and actions the
    policy no longer visits, e.g. a cliff it learned to avoid)."""
    tau: float = 0.01
    """Polyak averaging rate of the OA critic's target network."""

    def validate(self) -> None:
        super().validate()
        if not 0.0 <= self.omega <= 1.0:
            raise ValueError(f"omega must be in [0, 1], got {self.omega}")
        check_eps(self.eps_train)
        for name in ("pgd_steps", "critic_adv_batch", "critic_adv_updates", "replay_rollouts"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if not self.critic_adv_hidden or any(w < 1 for w in self.critic_adv_hidden):
            raise ValueError(f"critic-adv-hidden must be positive layer widths, e.g. 256,256; got {self.critic_adv_hidden}")
        if not self.critic_adv_lr > 0 or not 0 < self.tau <= 1:
            raise ValueError(f"critic-adv-lr must be > 0 and tau in (0, 1], got {self.critic_adv_lr}, {self.tau}")


class OAPPOTrainer(PPOTrainer):
    """OA-PPO: PPO plus an OA critic Q_adv trained by TD on a replay of recent rollouts, and the policy
    step on omega * norm(A_gae) + (1 - omega) * norm(A_adv). Everything else is PPO's."""

    metric_names = (*PPOTrainer.metric_names, "critic_adv_loss", "q_adv_mean", "pgd_q_drop", "adv_oa_mean", "adv_corr")

    def __init__(self, config: OAPPOConfig, env_id: str, seed: int, total_steps: int, device: torch.device) -> None:
        super().__init__(config, env_id, seed, total_steps, device)
        # raw obs, clipped actions, raw rewards: normalised with the latest statistics when sampled
        self.raw_obs = torch.zeros((config.num_steps, self.num_envs, self.obs_dim), device=device)
        self.replay = ReplayBuffer(self.obs_dim, self.act_dim, config.replay_rollouts * config.num_steps * self.num_envs,
                                   device)

    def network_specs(self) -> dict[str, dict]:
        critic = {"type": "twin_critic", "hidden": list(self.config.critic_adv_hidden), "activation": "relu"}
        return {**super().network_specs(), "critic_adv": critic}

    def add_networks(self, nets: dict[str, nn.Module]) -> None:
        self.critic_adv: TwinCritic = nets["critic_adv"].to(self.device)
        self.critic_adv_target = copy.deepcopy(self.critic_adv).requires_grad_(False)
        self.critic_adv_opt = torch.optim.Adam(self.critic_adv.parameters(), lr=self.config.critic_adv_lr, fused=True)

    def record_transition(self, t: int, raw_obs: Tensor, act: np.ndarray, reward: np.ndarray, next_obs: np.ndarray,
                          terminated: np.ndarray) -> None:
        self.raw_obs[t] = raw_obs
        self.replay.add(self.obs, act, reward, next_obs, terminated.astype(np.float32))

    def second_advantage(self, obs: Tensor, act: Tensor, adv: Tensor) -> Tensor | None:
        """The OA critic's TD steps on the replay, then (omega < 1) the OA advantage of the rollout."""
        for _ in range(self.config.critic_adv_updates):
            self.update_critic_adv()
        if self.config.omega == 1.0:
            return None
        adv_oa = self.oa_advantage(obs, act, self.raw_obs.reshape(len(obs), -1))
        self.metrics.add("adv_oa_mean", adv_oa.mean())
        self.metrics.add("adv_corr", torch.corrcoef(torch.stack([adv, adv_oa]))[0, 1].nan_to_num(0.0))
        return adv_oa

    def policy_advantage(self, adv: Tensor, second: Tensor | None) -> Tensor:
        """The OA difference: the omega-mix of the standardised GAE and OA advantages."""
        if second is None:  # omega 1: PPO's step
            return super().policy_advantage(adv, None)
        return self.config.omega * standardize(adv) + (1.0 - self.config.omega) * standardize(second)

    def update_critic_adv(self) -> None:
        """One TD step of the OA critic on the replay: the target acts under PGD's worst perturbation of mu(s')."""
        cfg = self.config
        b = self.replay.sample(cfg.critic_adv_batch, self.gen)
        obs, next_obs = self.normalize(b.obs), self.normalize(b.next_obs)
        with torch.no_grad():
            next_act = self.actor(next_obs).clamp(-1.0, 1.0)

        q_adv_target = self.critic_adv_target.action_objective(next_obs)  # a -> min_i Q_adv'_i(s', a)
        _, q_worst = worst_case(q_adv_target, next_act, cfg.eps_train, cfg.pgd_steps, generator=self.gen)
        with torch.no_grad():
            y = self.scale_reward(b.rew) + cfg.gamma * (1.0 - b.done) * q_worst
            self.metrics.add("pgd_q_drop", (q_adv_target(next_act) - q_worst).mean())
        q1, q2 = self.critic_adv(obs, b.act)
        loss = F.mse_loss(q1, y) + F.mse_loss(q2, y)
        self.critic_adv_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.critic_adv_opt.step()
        soft_update(self.critic_adv_target, self.critic_adv, cfg.tau)
        self.metrics.add("critic_adv_loss", loss.detach())
        self.metrics.add("q_adv_mean", q1.detach().mean())

    def oa_advantage(self, obs: Tensor, act: Tensor, raw_obs: Tensor) -> Tensor:
        """A_adv = min_d Q_adv(s, clip(clip(a) + d)) - min_d Q_adv(s, clip(clip(mu(s)) + d)), one PGD call for both.

        `obs` are the policy's inputs as stored in the rollout (so mu(s) is the mean the samples came
        from); the critic sees `raw_obs` normalised with the latest statistics, as in its TD updates.
        """
        n = obs.shape[0]
        with torch.no_grad():
            mean_act = self.actor(obs).clamp(-1.0, 1.0)
        q_obs = self.normalize(raw_obs).repeat(2, 1)
        start = torch.cat([act.clamp(-1.0, 1.0), mean_act])
        _, worst = worst_case(self.critic_adv.action_objective(q_obs), start, self.config.eps_train,
                              self.config.pgd_steps, generator=self.gen)
        return (worst[:n] - worst[n:]).detach()

    def _modules(self) -> dict[str, nn.Module]:
        return super()._modules() | {"critic_adv": self.critic_adv, "critic_adv_target": self.critic_adv_target}

    def _optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return super()._optimizers() | {"critic_adv": self.critic_adv_opt}

    def state_dict(self) -> dict:
        return {**super().state_dict(), "replay": self.replay.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.replay.load_state_dict(state["replay"])


register_algo("oa-ppo", OAPPOConfig, OAPPOTrainer,
              "OA-PPO: PPO + optimal-adversary-aware critic (PGD target) + omega-mix of GAE and OA advantages")
