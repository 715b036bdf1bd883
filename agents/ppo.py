"""PPO (CleanRL's ppo_continuous_action).

PPO, per iteration (all in the normalised action space; the policy samples an unbounded Gaussian and
the env executes clip(a, -1, 1)):

    collect num_steps x num_envs transitions with a ~ N(mu(s), exp(log_std)); observations are
        standardised by running statistics (saved in the checkpoint), rewards divided by the running
        std of the discounted return (training only)
    A_gae = GAE(gamma, lambda) over the rollout; returns = A_gae + V(s)
    update_epochs x num_minibatches steps on
        -min(ratio A, clip(ratio, 1 +- clip_coef) A) + vf_coef (V - returns)^2 - ent_coef H
        with per-minibatch advantage normalisation, optional value clipping, grad-norm clipping and a
        linearly annealed learning rate

OA-PPO (:mod:`robustbench_rl.agents.oa_ppo`) is this trainer with an OA critic and a second
advantage; the hooks it overrides are :meth:`PPOTrainer.record_transition`,
:meth:`PPOTrainer.second_advantage`, :meth:`PPOTrainer.policy_advantage` and the network set-up.

Vector envs use gymnasium 1.x next-step autoreset. Rather than store its dummy "reset step" (the
action is ignored and the reward is 0), a finished sub-env is reset at once through the vector env's
``reset_mask`` option, so every stored transition is a real env step. The observation returned with
the done flag is the real final observation: a time-limit truncation bootstraps from it (SB3's
approach: r += gamma V(s_final) before GAE cuts the trace), a termination does not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from robustbench_rl.agents.base import MetricSum, Trainer, check_fields, register_algo
from robustbench_rl.agents.buffers import RolloutBuffer
from robustbench_rl.envs import make_vec_env
from robustbench_rl.networks import GaussianActor, ValueNet, build_network

RMS_EPS = 1e-8  # the same epsilon as robustbench_rl.policy.ObsNormalizer, so training and act() agree


@dataclass
class PPOConfig:
    """PPO hyperparameters (defaults: CleanRL's ppo_continuous_action)."""

    hidden: list[int] = field(default_factory=lambda: [64, 64])
    """Hidden layer widths of the policy mean and of the value network (separate MLPs)."""
    activation: str = "tanh"
    """Activation of the policy and value MLPs (tanh, relu or elu)."""
    log_std_init: float = 0.0
    """Initial log-std of the Gaussian policy (state-independent, learned). Lower = less exploration."""
    learning_rate: float = 3e-4
    """Adam learning rate of the policy and value networks."""
    anneal_lr: bool = True
    """Anneal the learning rate linearly to 0 over the run's --steps."""
    num_envs: int = 1
    """Parallel env copies (a synchronous vector env); a rollout holds num_steps x num_envs steps."""
    num_steps: int = 2048
    """Steps per env per rollout."""
    gamma: float = 0.99
    """Discount factor."""
    gae_lambda: float = 0.95
    """GAE lambda."""
    num_minibatches: int = 32
    """Minibatches per epoch (the rollout is split into this many)."""
    update_epochs: int = 10
    """Passes over each rollout."""
    norm_adv: bool = True
    """Standardise advantages per minibatch (OA-PPO with omega < 1 always standardises both advantages
    before mixing them, since their scales differ; at omega 1 it follows this flag, as PPO does)."""
    clip_coef: float = 0.2
    """PPO ratio clip; also the value clip when clip_vloss is on."""
    clip_vloss: bool = True
    """Clip the value update around the rollout's values (CleanRL's value clipping)."""
    ent_coef: float = 0.0
    """Entropy bonus coefficient."""
    vf_coef: float = 0.5
    """Value loss coefficient."""
    max_grad_norm: float = 0.5
    """Global gradient-norm clip of each PPO step."""
    target_kl: float = 0.0
    """Stop the epochs of an update early when the approximate KL exceeds this; 0 = never."""
    norm_obs: bool = True
    """Standardise observations with running statistics (saved in the checkpoint, applied by the policy)."""
    clip_obs: float = 10.0
    """Clip of the standardised observations."""
    norm_reward: bool = True
    """Divide rewards by the running std of the discounted return (training only)."""
    clip_reward: float = 10.0
    """Clip of the scaled rewards."""

    def validate(self) -> None:
        """ValueError naming the first hyperparameter out of range."""
        check_fields(self, ("num_envs", "num_steps", "num_minibatches", "update_epochs"), {})
        if not self.hidden or any(w < 1 for w in self.hidden):
            raise ValueError(f"hidden must be positive layer widths, e.g. 64,64; got {self.hidden}")
        if 2 * self.num_minibatches > self.num_steps * self.num_envs:  # a minibatch of 1 cannot be standardised
            raise ValueError(f"num-minibatches ({self.num_minibatches}) exceeds half the rollout size "
                             f"num-steps x num-envs = {self.num_steps * self.num_envs}; minibatches need >= 2 samples")
        from robustbench_rl.networks import ACTIVATIONS

        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(sorted(ACTIVATIONS))}, got {self.activation!r}")
        check_fields(self, (), {
            "learning_rate": self.learning_rate > 0, "gamma": 0 <= self.gamma <= 1,
            "gae_lambda": 0 <= self.gae_lambda <= 1, "clip_coef": self.clip_coef > 0,
            "ent_coef": self.ent_coef >= 0, "vf_coef": self.vf_coef >= 0, "max_grad_norm": self.max_grad_norm > 0,
            "target_kl": self.target_kl >= 0, "clip_obs": self.clip_obs > 0, "clip_reward": self.clip_reward > 0,
            "log_std_init": -20 <= self.log_std_init <= 2})


# --------------------------------------------------------------------------------------------------
# Pure pieces (tested on hand-computed values)
# --------------------------------------------------------------------------------------------------

def gae(rewards: Tensor, values: Tensor, dones: Tensor, last_value: Tensor, gamma: float,
        lam: float) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation over a rollout; returns (advantages, returns), each (T, N).

    `rewards`, `values`, `dones` are (T, N); ``dones[t]`` says the episode ended after step t (the
    trace is cut there: no bootstrap, no credit across the boundary; a truncation's bootstrap must
    already be folded into its reward). `last_value` (N,) is V of the observation after the last step.
    delta_t = r_t + gamma V_{t+1} (1 - d_t) - V_t and A_t = delta_t + gamma lam (1 - d_t) A_{t+1}.
    """
    steps = rewards.shape[0]
    adv = torch.zeros_like(rewards)
    last = torch.zeros_like(last_value)
    for t in reversed(range(steps)):
        next_value = last_value if t == steps - 1 else values[t + 1]
        nonterminal = 1.0 - dones[t]
        delta = rewards[t] + gamma * next_value * nonterminal - values[t]
        last = delta + gamma * lam * nonterminal * last
        adv[t] = last
    return adv, adv + values


def clipped_policy_loss(ratio: Tensor, adv: Tensor, clip_coef: float) -> Tensor:
    """PPO's clipped surrogate, to minimise: mean of max(-A ratio, -A clip(ratio, 1 - c, 1 + c))."""
    return torch.max(-adv * ratio, -adv * ratio.clamp(1.0 - clip_coef, 1.0 + clip_coef)).mean()


def value_loss(new_value: Tensor, old_value: Tensor, returns: Tensor, clip_coef: float | None) -> Tensor:
    """0.5 mean (V - R)^2, or with `clip_coef` CleanRL's clipped form 0.5 mean max((V - R)^2, (V_clip - R)^2)
    with V_clip = V_old + clip(V - V_old, +-clip_coef)."""
    unclipped = (new_value - returns) ** 2
    if clip_coef is None:
        return 0.5 * unclipped.mean()
    clipped = old_value + (new_value - old_value).clamp(-clip_coef, clip_coef)
    return 0.5 * torch.max(unclipped, (clipped - returns) ** 2).mean()


def gaussian_log_prob(mean: Tensor, log_std: Tensor, act: Tensor) -> Tensor:
    """Log-density of `act` (B, d) under N(mean, exp(log_std)^2) with independent dims, summed over d.

    Written out rather than through torch.distributions.Normal, whose argument validation and object
    construction cost about a third of a small PPO minibatch step on CPU.
    """
    z = (act - mean) * torch.exp(-log_std)
    return (-0.5 * z.square() - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)


def gaussian_entropy(log_std: Tensor) -> Tensor:
    """Entropy of a diagonal Gaussian with the given log-stds (the same for every state)."""
    return (0.5 + 0.5 * math.log(2 * math.pi) + log_std).sum(-1)


def standardize(x: Tensor) -> Tensor:
    """(x - mean) / (std + 1e-8) over the batch."""
    return (x - x.mean()) / (x.std() + 1e-8)


class RunningMeanStd:
    """Running mean / variance over batches (Chan et al.'s parallel update in float64 numpy, as gymnasium's).

    numpy on purpose: it is updated at every env step with a handful of numbers, where a torch op's
    fixed overhead (~3 us each) would dominate.
    """

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.mean = np.zeros(shape, dtype=np.float64)
        self.var = np.ones(shape, dtype=np.float64)
        self.count = 1e-4

    def update(self, x: np.ndarray) -> None:
        """Fold in a batch (B, *shape)."""
        x = np.asarray(x, dtype=np.float64)
        n = x.shape[0]
        batch_mean = x.sum(0) / n  # plain reductions: np.mean / np.var cost several us of wrapper per call
        batch_var = np.square(x - batch_mean).sum(0) / n
        delta = batch_mean - self.mean
        total = self.count + n
        self.mean = self.mean + delta * n / total
        self.var = (self.var * self.count + batch_var * n + delta ** 2 * self.count * n / total) / total
        self.count = total

    def state_dict(self) -> dict:
        return {"mean": torch.from_numpy(np.array(self.mean)), "var": torch.from_numpy(np.array(self.var)),
                "count": float(self.count)}

    def load_state_dict(self, state: dict) -> None:
        self.mean = state["mean"].cpu().double().numpy().reshape(self.mean.shape).copy()
        self.var = state["var"].cpu().double().numpy().reshape(self.var.shape).copy()
        self.count = float(state["count"])


def orthogonal_init_(mlp: nn.Sequential, out_gain: float) -> None:
    """CleanRL's init: orthogonal weights with gain sqrt(2) on hidden layers, `out_gain` on the last, zero biases."""
    linears = [m for m in mlp if isinstance(m, nn.Linear)]
    for i, layer in enumerate(linears):
        nn.init.orthogonal_(layer.weight, out_gain if i == len(linears) - 1 else math.sqrt(2))
        nn.init.zeros_(layer.bias)


# --------------------------------------------------------------------------------------------------
# The trainer
# --------------------------------------------------------------------------------------------------

class PPOTrainer(Trainer):
    """PPO. :class:`OAPPOTrainer` adds the OA critic and mixes the advantages."""

    metric_names = ("policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac", "explained_variance",
                    "action_std", "learning_rate")

    def __init__(self, config: PPOConfig, env_id: str, seed: int, total_steps: int, device: torch.device) -> None:
        super().__init__(config, env_id, seed, total_steps, device)
        cfg = config
        self.envs = make_vec_env(env_id, cfg.num_envs, seed=seed)
        self.num_envs = cfg.num_envs
        self.obs_dim = int(np.prod(self.envs.single_observation_space.shape))
        self.act_dim = int(np.prod(self.envs.single_action_space.shape))
        self.gen = torch.Generator(device=device).manual_seed(seed)

        self.networks = self.network_specs()
        with torch.random.fork_rng(devices=[]):  # seed the init without touching the caller's global RNG
            torch.manual_seed(seed)
            nets = {k: build_network(v, self.obs_dim, self.act_dim) for k, v in self.networks.items()}
            orthogonal_init_(nets["actor"].mean, out_gain=0.01)
            orthogonal_init_(nets["value"].net, out_gain=1.0)
        self.actor: GaussianActor = nets["actor"].to(device)
        self.value: ValueNet = nets["value"].to(device)
        self.params = [*self.actor.parameters(), *self.value.parameters()]
        self.opt = torch.optim.Adam(self.params, lr=cfg.learning_rate, eps=1e-5, fused=True)  # one kernel, not a loop
        self.add_networks(nets)

        self.obs_rms = RunningMeanStd((self.obs_dim,))
        self.ret_rms = RunningMeanStd(())
        self._refresh_obs_stats()
        self.discounted = np.zeros(self.num_envs)  # running discounted returns, for reward scaling
        self.buffer = RolloutBuffer(cfg.num_steps, self.num_envs, self.obs_dim, self.act_dim, device)
        self.metrics = MetricSum(self.metric_names)
        self.iteration = 0
        self._reset_envs(seed)

    def network_specs(self) -> dict[str, dict]:
        spec = {"hidden": list(self.config.hidden), "activation": self.config.activation}
        return {"actor": {"type": "gaussian_actor", **spec, "log_std_init": self.config.log_std_init},
                "value": {"type": "value", **spec}}

    def add_networks(self, nets: dict[str, nn.Module]) -> None:
        """Networks beyond the actor and the value function (none for PPO)."""

    # ---- observation / reward normalisation --------------------------------------------------------

    def normalize(self, obs: Tensor) -> Tensor:
        """Standardise raw observations with the current running statistics (the very ops of the saved policy)."""
        if not self.config.norm_obs:
            return obs
        return ((obs - self._obs_mean) / self._obs_std).clamp(-self.config.clip_obs, self.config.clip_obs)

    def _refresh_obs_stats(self) -> None:
        # float32 copies, as saved in the checkpoint, so that training and the reloaded policy agree bit for bit
        self._obs_mean = torch.as_tensor(self.obs_rms.mean.astype(np.float32), device=self.device)
        self._obs_std = torch.sqrt(torch.as_tensor(self.obs_rms.var.astype(np.float32), device=self.device) + RMS_EPS)

    def scale_reward(self, rew: Tensor | np.ndarray) -> Tensor | np.ndarray:
        """Divide by the running std of the discounted return and clip (identity without norm_reward)."""
        if not self.config.norm_reward:
            return rew
        scale, clip = float(np.sqrt(self.ret_rms.var + RMS_EPS)), self.config.clip_reward
        return (rew / scale).clamp(-clip, clip) if isinstance(rew, Tensor) else np.clip(rew / scale, -clip, clip)

    # ---- data collection -------------------------------------------------------------------------

    def _reset_envs(self, seed: int | None) -> None:
        obs, _ = self.envs.reset(seed=seed)
        self.obs = np.asarray(obs, dtype=np.float32).reshape(self.num_envs, -1)
        self.ep_return = np.zeros(self.num_envs)
        self.ep_length = np.zeros(self.num_envs, dtype=np.int64)
        self.discounted[:] = 0.0

    def collect_rollout(self) -> list[tuple[float, int]]:
        """Fill the rollout buffer with num_steps vector-env steps; returns the episodes that finished."""
        cfg, finished = self.config, []
        self.buffer.reset()
        for t in range(cfg.num_steps):
            if cfg.norm_obs:
                self.obs_rms.update(self.obs)
                self._refresh_obs_stats()
            raw_obs = torch.as_tensor(self.obs, device=self.device)
            obs = self.normalize(raw_obs)
            with torch.no_grad():
                mean, log_std = self.actor(obs), self.actor.log_std
                noise = torch.randn(mean.shape, generator=self.gen, device=self.device)
                act = mean + log_std.exp() * noise
                logprob = (-0.5 * noise.square() - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
                value = self.value(obs)
            act_env = act.clamp(-1.0, 1.0).cpu().numpy()  # the unbounded Gaussian sample is executed clipped
            next_obs, reward, terminated, truncated, _ = self.envs.step(act_env)
            next_obs = np.asarray(next_obs, dtype=np.float32).reshape(self.num_envs, -1)
            done = np.logical_or(terminated, truncated)
            self.ep_return += reward
            self.ep_length += 1
            if cfg.norm_reward:
                self.discounted = self.discounted * cfg.gamma + reward
                self.ret_rms.update(self.discounted)
            rew = self.scale_reward(np.asarray(reward, dtype=np.float32))
            cut = np.logical_and(truncated, np.logical_not(terminated))
            if cut.any():  # a time-limit cut: bootstrap from the real final observation
                with torch.no_grad():
                    final = self.normalize(torch.as_tensor(next_obs[cut], device=self.device))
                    rew[cut] += cfg.gamma * self.value(final).cpu().numpy()
            self.record_transition(t, raw_obs, act_env, reward, next_obs, terminated)
            self.buffer.add(obs, act, logprob, rew, done, value)
            self.global_step += self.num_envs
            if done.any():
                for i in np.flatnonzero(done):
                    finished.append((float(self.ep_return[i]), int(self.ep_length[i])))
                self.ep_return[done], self.ep_length[done], self.discounted[done] = 0.0, 0, 0.0
                # Reset now instead of taking gymnasium's next-step autoreset (a dummy step): all stored steps are real.
                reset_obs, _ = self.envs.reset(options={"reset_mask": done})
                next_obs = np.where(done[:, None], np.asarray(reset_obs, dtype=np.float32).reshape(self.num_envs, -1),
                                    next_obs)
            self.obs = next_obs
        return finished

    def record_transition(self, t: int, raw_obs: Tensor, act: np.ndarray, reward: np.ndarray, next_obs: np.ndarray,
                          terminated: np.ndarray) -> None:
        """Keep a rollout step's raw transition beyond the rollout buffer (PPO does not)."""

    def advance(self, until: int) -> list[tuple[float, int]]:
        finished = []
        while self.global_step < until:
            finished += self.collect_rollout()
            self.update()
        return finished

    # ---- learning --------------------------------------------------------------------------------

    def update(self) -> None:
        """One PPO iteration on the rollout just collected."""
        cfg, buf = self.config, self.buffer
        batch = cfg.num_steps * self.num_envs
        if cfg.anneal_lr:
            iterations = max(1, math.ceil(self.total_steps / batch))
            lr = cfg.learning_rate * max(0.0, 1.0 - self.iteration / iterations)
            for group in self.opt.param_groups:
                group["lr"] = lr
        self.metrics.add("learning_rate", self.opt.param_groups[0]["lr"])
        with torch.no_grad():
            last_value = self.value(self.normalize(torch.as_tensor(self.obs, device=self.device)))
        adv, returns = gae(buf.rew, buf.value, buf.done, last_value, cfg.gamma, cfg.gae_lambda)
        b_obs, b_act = buf.obs.reshape(batch, -1), buf.act.reshape(batch, -1)
        b_logprob, b_value = buf.logprob.reshape(-1), buf.value.reshape(-1)
        b_adv, b_returns = adv.reshape(-1), returns.reshape(-1)
        b_adv_oa = self.second_advantage(b_obs, b_act, b_adv)

        mb_size = batch // cfg.num_minibatches
        for _ in range(cfg.update_epochs):
            perm = torch.randperm(batch, generator=self.gen, device=self.device)
            for start in range(0, mb_size * cfg.num_minibatches, mb_size):
                mb = perm[start:start + mb_size]
                new_logprob = gaussian_log_prob(self.actor(b_obs[mb]), self.actor.log_std, b_act[mb])
                entropy = gaussian_entropy(self.actor.log_std)
                log_ratio = new_logprob - b_logprob[mb]
                ratio = log_ratio.exp()
                with torch.no_grad():
                    approx_kl = ((ratio - 1) - log_ratio).mean()  # the low-variance k3 estimator
                    clipfrac = ((ratio - 1.0).abs() > cfg.clip_coef).float().mean()
                mb_adv = self.policy_advantage(b_adv[mb], None if b_adv_oa is None else b_adv_oa[mb])
                pg_loss = clipped_policy_loss(ratio, mb_adv, cfg.clip_coef)
                v_loss = value_loss(self.value(b_obs[mb]), b_value[mb], b_returns[mb],
                                    cfg.clip_coef if cfg.clip_vloss else None)
                loss = pg_loss - cfg.ent_coef * entropy + cfg.vf_coef * v_loss
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(self.params, cfg.max_grad_norm)
                self.opt.step()
                for name, v in (("policy_loss", pg_loss), ("value_loss", v_loss), ("entropy", entropy),
                                ("approx_kl", approx_kl), ("clipfrac", clipfrac)):
                    self.metrics.add(name, v.detach())
            if cfg.target_kl > 0 and float(approx_kl) > cfg.target_kl:  # the one host sync, only when asked for
                break
        with torch.no_grad():
            var_y = b_returns.var()
            self.metrics.add("explained_variance", torch.where(var_y > 0, 1 - (b_returns - b_value).var() / var_y,
                                                               torch.zeros_like(var_y)))
            self.metrics.add("action_std", self.actor.log_std.exp().mean())
        self.iteration += 1

    def second_advantage(self, obs: Tensor, act: Tensor, adv: Tensor) -> Tensor | None:
        """An advantage to mix with GAE's in the policy step (PPO has none)."""
        return None

    def policy_advantage(self, adv: Tensor, second: Tensor | None) -> Tensor:
        """The minibatch advantage the clipped surrogate uses: GAE's, standardised with norm_adv."""
        return standardize(adv) if self.config.norm_adv else adv

    # ---- checkpoint / resume ---------------------------------------------------------------------

    def pop_metrics(self) -> dict[str, float]:
        return self.metrics.pop()

    def policy_state(self):
        modules = {k: m for k, m in self._modules().items() if not k.endswith("_target")}
        extra_tensors, extra_meta = {}, {"obs_norm": bool(self.config.norm_obs)}
        if self.config.norm_obs:
            extra_tensors = {"obs_rms.mean": torch.from_numpy(self.obs_rms.mean.astype(np.float32)),
                             "obs_rms.var": torch.from_numpy(self.obs_rms.var.astype(np.float32))}
            extra_meta["obs_clip"] = float(self.config.clip_obs)
        return modules, dict(self.networks), extra_tensors, extra_meta

    def _modules(self) -> dict[str, nn.Module]:
        return {"actor": self.actor, "value": self.value}

    def _optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"ppo": self.opt}

    def state_dict(self) -> dict:
        state = {
            "global_step": self.global_step,
            "iteration": self.iteration,
            "modules": {k: m.state_dict() for k, m in self._modules().items()},
            "optimizers": {k: o.state_dict() for k, o in self._optimizers().items()},
            "obs_rms": self.obs_rms.state_dict(),
            "ret_rms": self.ret_rms.state_dict(),
            "rng": self.gen.get_state(),
        }
        return state

    def load_state_dict(self, state: dict) -> None:
        for k, m in self._modules().items():
            m.load_state_dict(state["modules"][k])
        for k, o in self._optimizers().items():
            o.load_state_dict(state["optimizers"][k])
        self.obs_rms.load_state_dict(state["obs_rms"])
        self.ret_rms.load_state_dict(state["ret_rms"])
        self._refresh_obs_stats()
        self.gen.set_state(state["rng"].cpu())  # generator states are CPU byte tensors, even for CUDA
        self.global_step = int(state["global_step"])
        self.iteration = int(state["iteration"])
        self._reset_envs(self.seed + self.global_step)

    def close(self) -> None:
        self.envs.close()


register_algo("ppo", PPOConfig, PPOTrainer, "PPO (clipped surrogate, GAE, obs/reward normalisation), CleanRL defaults")
