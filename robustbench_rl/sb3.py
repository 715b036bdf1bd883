"""stable-baselines3 models as rbrl policies, read without unpickling.

An SB3 ``.zip`` holds a JSON ``data`` file (some fields cloudpickled, with readable copies beside
them) and ``policy.pth`` (a plain state dict). We read only the readable JSON and the state dict
(``torch.load(weights_only=True)``), infer the network sizes from the tensor shapes, and rebuild the
actor (and, for TD3 / DDPG / SAC, the Q heads) with our own modules. Nothing in the zip is executed,
so an SB3 model is as safe to attack as one of ours. Only a VecNormalize file is a real pickle: it is
read only with ``trust_pickle=True``.

Supported: TD3, DDPG, SAC (squashed Gaussian: deterministic action tanh(mu)), PPO and A2C (Gaussian:
the mean, clipped to the env bounds, as SB3's ``predict(deterministic=True)`` does), MlpPolicy on a
flat Box observation. gSDE policies are refused.
"""

from __future__ import annotations

import io
import json
import pickle
import re
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from robustbench_rl.checkpoint import CheckpointError
from robustbench_rl.networks import ACTIVATIONS, ActionObjective, ObsNormalizer, TwinCriticView, mlp

DEFAULT_ACTIVATION = {"off_policy": "relu", "on_policy": "tanh"}


def _parse_array(text) -> np.ndarray:
    """SB3 stores Box bounds as numpy reprs like '[-1. -1. -8.]' (or lists, in newer versions)."""
    if isinstance(text, list):
        return np.asarray(text, dtype=np.float64).reshape(-1)
    nums = re.findall(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?inf", str(text))
    return np.asarray([float(x) for x in nums], dtype=np.float64)


def _linear_stack(sd: dict[str, Tensor], prefix: str) -> list[tuple[int, Tensor, Tensor]]:
    """Indices, weights and biases of the Linear layers of an nn.Sequential saved under `prefix`."""
    idx = sorted({int(m.group(1)) for k in sd if (m := re.fullmatch(re.escape(prefix) + r"\.(\d+)\.weight", k))})
    return [(i, sd[f"{prefix}.{i}.weight"], sd[f"{prefix}.{i}.bias"]) for i in idx]


def _load_mlp(sd: dict[str, Tensor], prefix: str, activation: str, final_linear: bool = True) -> nn.Sequential:
    """Rebuild an SB3 Sequential(Linear, act, ..., Linear[, act]) as our MLP and load its weights."""
    layers = _linear_stack(sd, prefix)
    if not layers:
        raise CheckpointError(f"SB3 model has no layers under {prefix!r}")
    in_dim = layers[0][1].shape[1]
    widths = [w.shape[0] for _, w, _ in layers]
    net = mlp(in_dim, widths[-1], widths[:-1], activation)
    if not final_linear:  # a latent extractor that ends in an activation (SB3's latent_pi / policy_net)
        net.append(ACTIVATIONS[activation]())
    linears = [m for m in net if isinstance(m, nn.Linear)]
    with torch.no_grad():
        for lin, (_, w, b) in zip(linears, layers, strict=True):
            lin.weight.copy_(w)
            lin.bias.copy_(b)
    return net


class _TwinFromSB3(nn.Module):
    """SB3's qf0 / qf1 (one head for DDPG) with the TwinCritic interface."""

    def __init__(self, heads: list[nn.Sequential]) -> None:
        super().__init__()
        self.heads = nn.ModuleList(heads)

    def forward(self, obs: Tensor, act: Tensor) -> tuple[Tensor, Tensor]:
        x = torch.cat([obs, act], dim=-1)
        qs = [h(x).squeeze(-1) for h in self.heads]
        return qs[0], qs[-1]

    def min_q(self, obs: Tensor, act: Tensor) -> Tensor:
        q1, q2 = self(obs, act)
        return torch.minimum(q1, q2)

    def action_objective(self, obs: Tensor) -> ActionObjective:
        return ActionObjective(list(self.heads), obs)


class SB3Policy:
    """A stable-baselines3 model wrapped as a :class:`robustbench_rl.policy.Policy`."""

    def __init__(self, path: Path, env_id: str, device: str = "cpu", vecnormalize: str | None = None,
                 trust_pickle: bool = False) -> None:
        self.path = path
        self.name = path.stem
        self.env_id = env_id
        self.device = torch.device(device)
        try:
            with zipfile.ZipFile(path) as zf:
                data = json.loads(zf.read("data"))
                sd = torch.load(io.BytesIO(zf.read("policy.pth")), map_location="cpu", weights_only=True)
        except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, RuntimeError, OSError, pickle.UnpicklingError) as err:
            raise CheckpointError(f"{path} is not a stable-baselines3 model zip ({err})") from None
        if data.get("use_sde"):
            raise CheckpointError(f"{path}: gSDE policies are not supported (no deterministic mean to attack)")
        act_space, obs_space = data.get("action_space", {}), data.get("observation_space", {})
        if "Box" not in str(act_space.get(":type:", "")):
            raise CheckpointError(f"{path}: rbrl needs a Box action space, the model has {act_space.get(':type:')}")
        self.low = torch.as_tensor(_parse_array(act_space["low"]), dtype=torch.float32)
        self.high = torch.as_tensor(_parse_array(act_space["high"]), dtype=torch.float32)
        self.act_dim = int(self.low.numel())
        self.obs_dim = int(np.prod(_parse_array(obs_space.get("_shape", "[0]")).astype(int))) if "_shape" in obs_space \
            else int(_parse_array(obs_space["low"]).size)
        kwargs = data.get("policy_kwargs", {}) or {}
        module = str(data.get("policy_class", {}).get("__module__", ""))
        off_policy = any(k.startswith("actor.mu") for k in sd)
        act_name = str(kwargs.get("activation_fn", ""))
        activation = next((n for n, cls in ACTIVATIONS.items() if cls.__name__ in act_name),
                          DEFAULT_ACTIVATION["off_policy" if off_policy else "on_policy"])
        self.critics = {}
        self.algo = "sb3"
        if "actor.latent_pi.0.weight" in sd:  # SAC
            self.algo = "sb3-sac"
            self._latent = _load_mlp(sd, "actor.latent_pi", activation, final_linear=False)
            self._mu = nn.Linear(*reversed(sd["actor.mu.weight"].shape))
            self._mu.load_state_dict({"weight": sd["actor.mu.weight"], "bias": sd["actor.mu.bias"]})
            self._kind = "squashed"
        elif "actor.mu.0.weight" in sd:  # TD3 / DDPG
            self.algo = "sb3-td3" if "td3" in module else "sb3-ddpg"
            self._latent = nn.Identity()
            self._mu = _load_mlp(sd, "actor.mu", activation)
            self._kind = "squashed"
        elif "action_net.weight" in sd:  # PPO / A2C
            self.algo = "sb3-actor-critic"
            self._latent = (_load_mlp(sd, "mlp_extractor.policy_net", activation, final_linear=False)
                            if "mlp_extractor.policy_net.0.weight" in sd else nn.Identity())
            self._mu = nn.Linear(*reversed(sd["action_net.weight"].shape))
            self._mu.load_state_dict({"weight": sd["action_net.weight"], "bias": sd["action_net.bias"]})
            self._kind = "gaussian"
        else:
            raise CheckpointError(f"{path}: unrecognised SB3 policy layout (keys: {sorted(sd)[:4]} ...)")
        if any(k.startswith("critic.qf0.") for k in sd):
            heads = [_load_mlp(sd, f"critic.qf{i}", activation) for i in range(2) if f"critic.qf{i}.0.weight" in sd]
            self._critic = _TwinFromSB3(heads)
        else:
            self._critic = None
        self.normalize: nn.Module = nn.Identity()
        if vecnormalize:
            self.normalize = _load_vecnormalize(vecnormalize, trust_pickle, self.obs_dim)
        for m in (self._latent, self._mu, self.normalize, *( [self._critic] if self._critic else [])):
            m.to(self.device).eval().requires_grad_(False)
        if self._critic is not None:
            self.critics["q"] = TwinCriticView(self._critic, self.normalize)
        self.meta = {"algo": self.algo, "env_id": env_id, "obs_dim": self.obs_dim, "act_dim": self.act_dim,
                     "seed": data.get("seed")}
        self.low, self.high = self.low.to(self.device), self.high.to(self.device)

    @torch.no_grad()
    def act(self, obs: Tensor) -> Tensor:
        """Deterministic action in [-1, 1]^d: SB3's scaled tanh output, or its clipped mean rescaled."""
        mean = self._mu(self._latent(self.normalize(obs.to(self.device, torch.float32))))
        if self._kind == "squashed":
            return torch.tanh(mean)
        clipped = torch.minimum(torch.maximum(mean, self.low), self.high)
        return (2.0 * (clipped - self.low) / (self.high - self.low) - 1.0).clamp(-1.0, 1.0)

    def __repr__(self) -> str:
        return f"SB3Policy({self.name!r}, algo={self.algo}, env={self.env_id}, critics={sorted(self.critics)})"


def _load_vecnormalize(path: str, trust_pickle: bool, obs_dim: int) -> ObsNormalizer:
    """Observation statistics from an SB3 VecNormalize file (a pickle: needs explicit trust)."""
    if not trust_pickle:
        raise CheckpointError(
            f"{path} is a pickle (SB3's VecNormalize format) and loading it can run arbitrary code; "
            "pass --trust-pickle only if you trust its source")
    with open(path, "rb") as fh:
        vn = pickle.load(fh)  # gated by trust_pickle above
    rms = vn.obs_rms
    if np.asarray(rms.mean).size != obs_dim:
        raise CheckpointError(f"{path}: VecNormalize has {np.asarray(rms.mean).size} obs dims, the model {obs_dim}")
    eps = float(getattr(vn, "epsilon", 1e-8))
    return ObsNormalizer(torch.as_tensor(rms.mean, dtype=torch.float32),
                         torch.as_tensor(rms.var, dtype=torch.float32) + eps - 1e-8,
                         clip=float(getattr(vn, "clip_obs", 10.0)))


def load_sb3_policy(path: str | Path, env_id: str | None, device: str = "cpu", vecnormalize: str | None = None,
                    trust_pickle: bool = False) -> SB3Policy:
    """Load ``sb3:path.zip``; the env id must be given (SB3 zips do not store it)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"SB3 model not found: {path}")
    if not env_id:
        raise CheckpointError("an sb3: policy needs the env it was trained on: pass --env ENV_ID")
    from robustbench_rl.envs import env_spec

    policy = SB3Policy(path, env_id, device=device, vecnormalize=vecnormalize, trust_pickle=trust_pickle)
    spec = env_spec(env_id)
    if (spec["obs_dim"], spec["act_dim"]) != (policy.obs_dim, policy.act_dim):
        raise CheckpointError(
            f"SB3 model {path.name} has obs {policy.obs_dim}, act {policy.act_dim} but {env_id} has obs "
            f"{spec['obs_dim']}, act {spec['act_dim']}: pass the env it was trained on with --env")
    if not np.allclose(spec["action_low"], policy.low.cpu().numpy()) or \
            not np.allclose(spec["action_high"], policy.high.cpu().numpy()):
        raise CheckpointError(f"SB3 model {path.name} was trained with other action bounds than {env_id}'s")
    return policy
