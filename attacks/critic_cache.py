"""The fitted-critic cache: where a policy's fitted critics live, how they are stored and checked, and
:func:`get_fitted_critic`, which returns one from the zoo's bundled critics or the cache, or fits it.

A fitted critic is one ``.safetensors`` file under ``CACHE/critics/<policy sha256[:16]>/<kind>-<settings
hash>.safetensors``: tied to the exact policy bytes and to every fitting setting, so a changed policy or
setting never reuses a critic fitted for another.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from robustbench_rl.attacks.fit import (
    FIT_ALGO,
    KIND_KEY,
    KINDS,
    FitConfig,
    FittedCritic,
    check_kind,
    fit_critic,
    policy_context,
    policy_file,
    settings_hash,
)
from robustbench_rl.checkpoint import (
    CheckpointError,
    build_modules,
    load_checkpoint,
    save_checkpoint,
    state_tensors,
)
from robustbench_rl.files import file_sha256
from robustbench_rl.policy import CRITIC_PREFIXES, ObsNormalizer, Policy


def default_cache_dir() -> Path:
    """The user cache dir: $RBRL_CACHE_DIR, else $XDG_CACHE_HOME/rbrl, else ~/.cache/rbrl."""
    if os.environ.get("RBRL_CACHE_DIR"):
        return Path(os.environ["RBRL_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "rbrl"


def critic_cache_path(policy: Policy, kind: str, config: FitConfig | None = None,
                      cache_dir: str | os.PathLike | None = None, policy_sha256: str | None = None,
                      env_id: str | None = None) -> Path:
    """Cache location of the critic of `kind` for this exact policy file, env (`env_id`, default the
    policy's) and obs normaliser, and these settings."""
    check_kind(kind)
    config = config or FitConfig()
    sha = policy_sha256 or file_sha256(policy_file(policy))
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    key = settings_hash({**config.settings(kind), **policy_context(policy, env_id)})
    return root / "critics" / sha[:16] / f"{kind}-{key}.safetensors"


def save_critic(critic: FittedCritic, path: str | os.PathLike) -> Path:
    """Write a fitted critic as one safetensors file (atomic), its metadata tying it to the policy's sha256."""
    if "policy_sha256" not in critic.meta:
        raise ValueError("this critic is not tied to a policy file (fit it for a policy loaded from a file)")
    prefix = CRITIC_PREFIXES[KIND_KEY[critic.kind]]
    tensors = state_tensors({prefix: critic.module})
    tensors["obs_rms.mean"] = critic.normalize.mean.detach().cpu()
    tensors["obs_rms.var"] = critic.normalize.var.detach().cpu()
    out = save_checkpoint(path, tensors, critic.meta)
    critic.path = Path(out)
    return critic.path


def load_critic(path: str | os.PathLike, policy: Policy, kind: str | None = None,
                env_id: str | None = None) -> FittedCritic:
    """Load a fitted critic for `policy` on `env_id` (default the policy's env), refusing it unless it was
    fitted for these exact policy bytes in this context.

    CheckpointError when the file is not a fitted critic, when its kind differs from `kind`, when its
    dims differ from the policy's, when the sha256 it records differs from the policy file's (the
    policy changed since the critic was fitted: refit it), or when it was fitted on another env.
    """
    context = policy_context(policy, env_id)
    path = Path(path)
    tensors, meta = load_checkpoint(path)
    if meta.get("algo") != FIT_ALGO or meta.get("kind") not in KINDS:
        raise CheckpointError(f"{path} is not a fitted critic (algo {meta.get('algo')!r}); fit one with `rbrl fit-critic`")
    if kind is not None and meta["kind"] != check_kind(kind):
        raise CheckpointError(f"{path} holds a {meta['kind']!r} critic, not {kind!r}")
    want = file_sha256(policy_file(policy))
    if meta.get("policy_sha256") != want:
        raise CheckpointError(
            f"critic {path.name} was fitted for a policy file with sha256 {str(meta.get('policy_sha256'))[:12]}..., "
            f"but {policy.name} has sha256 {want[:12]}... (the policy changed); refit it with "
            f"`rbrl fit-critic --policy {policy_file(policy)} --kind {meta['kind']}`"
        )
    if meta.get("policy_context", context) != context:
        raise CheckpointError(
            f"critic {path.name} was fitted for {policy.name} in another context ({meta['policy_context']}), "
            f"not {context}; refit it with `rbrl fit-critic`"
        )
    if (meta["obs_dim"], meta["act_dim"]) != (policy.obs_dim, policy.act_dim):
        raise CheckpointError(f"{path}: critic dims do not match policy {policy.name}")
    modules = build_modules(tensors, meta, path=str(path))
    (module,) = modules.values()
    for key in ("obs_rms.mean", "obs_rms.var"):
        if key not in tensors or tuple(tensors[key].shape) != (meta["obs_dim"],):
            raise CheckpointError(f"{path}: tensor {key} missing or not of shape ({meta['obs_dim']},)")
    normalize = ObsNormalizer(tensors["obs_rms.mean"], tensors["obs_rms.var"])
    module.requires_grad_(False)
    device = getattr(policy, "device", "cpu")
    return FittedCritic(module, normalize, meta["kind"], meta, path=path).to(device)


def _zoo_dir() -> Path:
    from importlib.resources import files

    return Path(str(files("robustbench_rl.zoo")))


def critic_locations(policy: Policy, kind: str, config: FitConfig, cache_dir: str | os.PathLike | None = None, *,
                     policy_sha256: str | None = None, env_id: str | None = None) -> tuple[Path, Path]:
    """Where a fitted critic of this policy, kind and settings is looked for, in order: the zoo's
    bundled critics (a read-only cache in the same layout), then the cache (where a fit is written)."""
    sha = policy_sha256 or file_sha256(policy_file(policy))
    return (critic_cache_path(policy, kind, config, _zoo_dir(), policy_sha256=sha, env_id=env_id),
            critic_cache_path(policy, kind, config, cache_dir, policy_sha256=sha, env_id=env_id))


def get_fitted_critic(policy: Policy, kind: str = "q", *, config: FitConfig | None = None,
                      cache_dir: str | os.PathLike | None = None, progress: bool = False,
                      force: bool = False, env_id: str | None = None) -> FittedCritic:
    """The fitted critic of `kind` for this policy file, env and settings: from the cache, else fitted and cached.

    `env_id` is the env the policy is evaluated on (default ``policy.env_id``): the critic is fitted
    on it and the cache key includes it. The cache file's name carries the policy's sha256 and a hash
    of the settings and context, so editing the policy (even one byte) or changing a setting misses
    the cache and fits afresh; a cached file is still re-checked against the policy's hash on load.
    `force` refits even on a hit; the returned critic's ``cached`` says which happened. An unwritable
    cache is a ValueError before the fit, not after it. With `progress`, fitting shows progress bars
    and prints a one-line note of its cost to stderr.
    """
    check_kind(kind)
    config = config or FitConfig()
    bundled, path = critic_locations(policy, kind, config, cache_dir, env_id=env_id)
    for found in (bundled, path):
        if found.is_file() and not force:
            try:
                critic = load_critic(found, policy, kind, env_id=env_id)
                critic.cached = True
                return critic
            except CheckpointError as err:  # a damaged entry (e.g. a disk filled mid-copy): refit into the cache
                print(f"note: ignoring unreadable cached critic {found} ({err}); refitting", file=sys.stderr, flush=True)
    _check_cache_writable(path)
    if progress:
        est = estimate_fit_seconds(kind, config)
        print(f"note: no cached {kind} critic for {policy.name}; fitting one ({config.transitions} transitions, "
              f"{config.steps} TD steps, roughly {est:.0f}s on a 2-core CPU), cached at {path}",
              file=sys.stderr, flush=True)
    critic = fit_critic(policy, kind, config, progress=progress, env_id=env_id)
    save_critic(critic, path)
    if progress:
        st = critic.meta["stats"]
        print(f"note: fitted {kind} critic in {st['wall_s']:.0f}s (gathering {st['collect_s']:.0f}s, "
              f"TD {st['fit_s']:.0f}s); the next request is free", file=sys.stderr, flush=True)
    return critic


def _check_cache_writable(path: Path) -> None:
    """ValueError unless a critic can be saved at `path` (its folders created if missing), before the fit."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path.parent):
            pass
    except OSError as err:
        raise ValueError(f"cannot save fitted critics in {path.parent} ({err.strerror or err}); pass --cache-dir "
                         "(critic_cache in a suite) or set RBRL_CACHE_DIR to a writable folder") from None


def estimate_fit_seconds(kind: str, config: FitConfig) -> float:
    """Rough wall-time estimate of a fit on this project's 2-core CPU (for the note, not a promise).

    Calibrated on the default budget (README, "Critic attacks and fitted critics"): per TD step at
    batch 256 with 128x128 heads ~3 ms, plus ~1.4 ms per PGD step and start inside the OA target; gathering
    ~0.15 ms per transition on MuJoCo. Scaled to first order by width squared and batch size.
    """
    scale = max((sum(config.hidden) / 256) ** 2 * config.batch_size / 256, 0.1)
    per_step = 3e-3 * scale
    if kind == "oa-q":
        per_step += 1.4e-3 * config.pgd_steps * config.pgd_restarts * scale
    return config.steps * per_step + 1.5e-4 * config.transitions


__all__ = ["critic_cache_path", "critic_locations", "default_cache_dir", "estimate_fit_seconds", "get_fitted_critic",
           "load_critic", "save_critic"]
