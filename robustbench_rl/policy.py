"""The one policy interface shared by trainers, attacks and the runner.

A :class:`Policy` maps raw observations (B, obs_dim) to deterministic actions in [-1, 1]^d and exposes
the critics its checkpoint carries (``"q"``, ``"q_adv"``) as :class:`Critic` callables on raw
observations. Observation normalisation, where a checkpoint has it, happens inside: callers never see
normalised observations.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from robustbench_rl.checkpoint import CheckpointError, build_modules, load_checkpoint
from robustbench_rl.networks import ObsNormalizer, TwinCriticView
from robustbench_rl.zoo import resolve_spec, zoo_path  # noqa: F401  (zoo_path: part of this module's API)

CRITIC_PREFIXES = {"q": "critic", "q_adv": "critic_adv"}


@runtime_checkable
class Critic(Protocol):
    """Raw obs (B, obs_dim), normalised action (B, act_dim) -> value (B,)."""

    def __call__(self, obs: Tensor, act: Tensor) -> Tensor: ...


@runtime_checkable
class Policy(Protocol):
    """A deterministic, batched policy in the normalised action space."""

    name: str
    env_id: str
    obs_dim: int
    act_dim: int
    critics: Mapping[str, Critic]

    def act(self, obs: Tensor) -> Tensor: ...


class CheckpointPolicy:
    """A policy rebuilt from an rbrl checkpoint (see :mod:`robustbench_rl.checkpoint`)."""

    def __init__(self, modules: Mapping[str, nn.Module], meta: Mapping[str, Any], tensors: Mapping[str, Tensor],
                 name: str, path: Path | None = None, device: str = "cpu", env_id_trusted: bool = True) -> None:
        if "actor" not in modules:
            raise CheckpointError(f"{name}: checkpoint has no actor network")
        self.meta = dict(meta)
        self.name = name
        self.path = path
        self.algo: str = meta["algo"]
        self.env_id: str = meta["env_id"]
        # False when env_id is a file's say-so that the user has not confirmed (see resolve_env_id)
        self.env_id_trusted = env_id_trusted
        self.obs_dim: int = meta["obs_dim"]
        self.act_dim: int = meta["act_dim"]
        self.device = torch.device(device)
        self.normalize: nn.Module = nn.Identity()
        if "obs_rms.mean" in tensors or "obs_rms.var" in tensors:
            mean, var = tensors.get("obs_rms.mean"), tensors.get("obs_rms.var")
            for key, t in (("obs_rms.mean", mean), ("obs_rms.var", var)):
                if t is None or tuple(t.shape) != (self.obs_dim,):
                    raise CheckpointError(f"{name}: tensor {key} missing or not of shape ({self.obs_dim},)")
            self.normalize = ObsNormalizer(mean, var, clip=float(meta.get("obs_clip", 10.0)))
        self.normalize.to(self.device)
        self.modules = {k: m.to(self.device) for k, m in modules.items()}
        self.actor = self.modules["actor"]
        self.critics: dict[str, Critic] = {
            key: TwinCriticView(self.modules[prefix], self.normalize)
            for key, prefix in CRITIC_PREFIXES.items() if prefix in self.modules
        }
        for module in self.modules.values():
            module.requires_grad_(False)

    @torch.no_grad()
    def act(self, obs: Tensor) -> Tensor:
        """Deterministic actions for a batch of raw observations: tanh actor, or the clipped Gaussian mean."""
        obs = obs.to(self.device, torch.float32)
        return self.actor(self.normalize(obs)).clamp(-1.0, 1.0)

    def __repr__(self) -> str:
        return f"CheckpointPolicy({self.name!r}, algo={self.algo}, env={self.env_id}, critics={sorted(self.critics)})"


def load_policy(spec: str, device: str = "cpu", env_id: str | None = None, *, vecnormalize: str | None = None,
                trust_pickle: bool = False) -> Policy:
    """Load a policy from a spec: ``path/x.safetensors`` (ours), ``zoo:NAME`` (bundled), ``sb3:model.zip``.

    The modules are rebuilt from the checkpoint's metadata and every tensor shape is checked. With
    `env_id`, the env's observation and action sizes are checked against the policy's too, so that a
    policy is never silently run on an env it was not trained for. Loading never imports a module the
    file names: a checkpoint's ``"module:EnvId"`` env id is used (and its module imported) only where
    `env_id` names that same env (:func:`resolve_env_id`). SB3 models need `env_id` (their zips do
    not record it); `vecnormalize` is an SB3 VecNormalize pickle, read only with `trust_pickle`.
    """
    if spec.startswith("sb3:"):
        from robustbench_rl.sb3 import load_sb3_policy

        return load_sb3_policy(spec[4:], env_id, device=device, vecnormalize=vecnormalize, trust_pickle=trust_pickle)
    from robustbench_rl.envs import env_module

    if vecnormalize:
        raise CheckpointError("--vecnormalize applies to sb3: policies only (rbrl checkpoints carry their obs stats)")
    path = resolve_spec(spec)
    tensors, meta = load_checkpoint(path)
    modules = build_modules(tensors, meta, path=str(path))
    # `rbrl train` always writes RUN_DIR/policy.safetensors: name such a policy after its run folder
    name = spec if spec.startswith("zoo:") else path.parent.name if path.stem == "policy" and path.parent.name \
        else path.stem
    policy = CheckpointPolicy(modules, meta, tensors, name=name, path=path, device=device,
                              env_id_trusted=env_module(meta["env_id"]) is None or env_id == meta["env_id"])
    if env_id is not None:
        check_env_compat(policy, env_id)
    return policy


def resolve_env_id(policy: Policy, env_id: str | None = None) -> str:
    """The env id to build for `policy`: `env_id` when the user names one, else the policy's own.

    Call this wherever an env is built for a policy (evaluation, rollouts, critic fitting) instead of
    falling back to ``policy.env_id`` directly. A checkpoint's env id is data from a file; in
    gymnasium's ``"module:EnvId"`` form, building it would import that module, i.e. run code a file
    chose. Such an id is used only when the user named that env, here or when loading the policy
    (``load_policy(spec, env_id=...)``, ``--env``, a suite's ``env``); otherwise CheckpointError says to.
    """
    from robustbench_rl.envs import env_module

    if env_id:
        return env_id
    own = policy.env_id
    if env_module(own) is not None and not getattr(policy, "env_id_trusted", True):
        raise CheckpointError(
            f"policy {policy.name}: the checkpoint names env {own!r}, which rbrl will not import on a file's "
            f"say-so; pass --env {own} (env_id={own!r} in Python) to import it"
        )
    return own


def check_env_compat(policy: Policy, env_id: str) -> None:
    """Raise CheckpointError when the env's dimensions differ from the policy's."""
    from robustbench_rl.envs import env_spec

    if env_id == policy.env_id:
        return
    spec = env_spec(env_id)
    if (spec["obs_dim"], spec["act_dim"]) != (policy.obs_dim, policy.act_dim):
        raise CheckpointError(
            f"policy {policy.name} was trained for {policy.env_id} (obs {policy.obs_dim}, act {policy.act_dim}) "
            f"and cannot run on {env_id} (obs {spec['obs_dim']}, act {spec['act_dim']}); use --env {policy.env_id}"
        )
