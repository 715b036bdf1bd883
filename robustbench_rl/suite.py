"""Benchmark suites: a small TOML file saying which policies to score under which attacks and budgets.

A suite is parsed into a frozen :class:`Suite` with every field defaulted, so the same file always
expands into the same cells. Unknown keys are errors naming the key (a typo such as ``episode = 50``
must never silently fall back to a default). See ``examples/suite.toml`` for a commented example.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from robustbench_rl.threat import (
    CRITIC_SOURCES,
    DEFAULT_PGD_RESTARTS,
    DEFAULT_PGD_START,
    DEFAULT_PGD_STEPS,
    PGD_STARTS,
    check_eps,
)

DEFAULT_ATTACKS = ("random", "biggest", "min-q", "min-oa-q")


@dataclass(frozen=True)
class PolicyEntry:
    """One policy of a suite: where it lives and how it is labelled in tables and plots."""

    spec: str
    """Checkpoint path (relative paths are relative to the suite file) or ``zoo:NAME``."""
    name: str | None = None
    """Display name, the ``policy`` column of the results (default: the checkpoint's file stem)."""
    group: str | None = None
    """Row label in tables and line in plots; policies sharing a group (e.g. training seeds of one
    algorithm) are aggregated (default: the checkpoint's algo)."""
    env: str | None = None
    """Env id to evaluate on (default: the env the policy was trained on)."""


@dataclass(frozen=True)
class Suite:
    """Everything that decides a benchmark's numbers, plus how to run it (workers, threads)."""

    policies: tuple[PolicyEntry, ...]
    name: str = "suite"
    attacks: tuple[str, ...] = DEFAULT_ATTACKS
    """Attacks besides the nominal run (`none` always runs, at eps 0 only)."""
    eps: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3)
    """Budgets in normalised action units; eps 0 is the nominal cell and is not repeated per attack."""
    episodes: int = 10
    """Episodes per cell (episode i of eval seed s is reset with ``rollout.episode_seed(s, i)``)."""
    eval_seeds: tuple[int, ...] = (0,)
    critic: str = "auto"
    """Critic source for min-q / min-oa-q: own, fitted, or auto (own when the checkpoint has it)."""
    pgd_steps: int = DEFAULT_PGD_STEPS
    pgd_start: str = DEFAULT_PGD_START
    pgd_restarts: int = DEFAULT_PGD_RESTARTS
    pgd_step_size: float | None = None
    num_envs: int = 8
    """Episodes run side by side inside one cell."""
    max_episode_steps: int | None = None
    """Override the env's time limit (default: the env's own)."""
    critic_cache: str | None = None
    """Where fitted critics are cached (default: the critic module's user cache dir)."""
    fit: tuple[tuple[str, Any], ...] = ()
    """Overrides of the fitted-critic budget (robustbench_rl.attacks.fit.FitConfig fields), e.g.
    ``[fit] steps = 20000``; empty = the standard budget."""
    attack_options: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...] = ()
    """Settings of policy-built attacks by name, e.g. ``[attack_options.lookahead] horizon = 8``;
    empty = each attack's defaults."""
    workers: int = 0
    """Worker processes; 0 = one per CPU core. Not part of the run's identity."""
    threads_per_worker: int = 1
    """torch threads in each worker. Not part of the run's identity."""
    source: str | None = field(default=None, compare=False)
    """The file the suite was read from (informational)."""

    def identity(self) -> dict[str, Any]:
        """The fields that decide the numbers (everything but workers, threads and the names)."""
        d = asdict(self)
        for key in ("workers", "threads_per_worker", "source", "name"):
            d.pop(key)
        if not self.attack_options:  # so that suites written before attack options keep their identity
            d.pop("attack_options")
        return d

    def options_of(self, attack: str) -> dict[str, Any]:
        """The settings given for `attack` (empty: its defaults)."""
        return dict(dict(self.attack_options).get(attack, ()))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the whole suite."""
        return asdict(self)


_TOP_KEYS = {f for f in Suite.__dataclass_fields__ if f != "source"}
_POLICY_KEYS = set(PolicyEntry.__dataclass_fields__)


def _fail(where: str, msg: str) -> None:
    raise ValueError(f"{where}: {msg}")


def _resolve_spec(spec: str, base_dir: str | os.PathLike | None) -> str:
    """Make a relative checkpoint path (also after ``sb3:``) relative to the suite file's folder."""
    prefix = "sb3:" if spec.startswith("sb3:") else ""
    rest = spec[len(prefix):]
    if base_dir is None or spec.startswith("zoo:"):
        return spec
    path = Path(os.path.expanduser(rest))
    return prefix + str(path if path.is_absolute() else (Path(base_dir) / path).resolve())


def _int(where: str, key: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        _fail(where, f"{key} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _list(where: str, key: str, value: Any) -> list:
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return [value]
    if not isinstance(value, list):
        _fail(where, f"{key} must be a list, got {value!r}")
    return value


def parse_suite(data: dict[str, Any], *, base_dir: str | os.PathLike | None = None, where: str = "suite") -> Suite:
    """Validate a suite dict (as read from TOML) and fill in the defaults.

    Relative checkpoint paths are resolved against `base_dir` (the suite file's folder). Raises
    ValueError naming the offending key and what is allowed: unknown keys, empty policy lists,
    unknown attacks or critic sources, out-of-range eps, duplicate policy names.
    """
    from robustbench_rl.attacks.registry import default_attacks, list_attacks

    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        _fail(where, f"unknown key {unknown[0]!r}; allowed keys: {', '.join(sorted(_TOP_KEYS))}")
    raw_policies = _list(where, "policies", data.get("policies", []))
    if not raw_policies:
        _fail(where, "no policies; add [[policies]] tables with spec = \"path/to/policy.safetensors\"")
    policies = []
    for i, raw in enumerate(raw_policies):
        pw = f"{where}: policies[{i}]"
        if isinstance(raw, str):
            raw = {"spec": raw}
        if not isinstance(raw, dict):
            _fail(pw, f"must be a spec string or a table with spec = ..., got {raw!r}")
        bad = sorted(set(raw) - _POLICY_KEYS)
        if bad:
            raise ValueError(f"{pw}: unknown key {bad[0]!r}; allowed keys: {', '.join(sorted(_POLICY_KEYS))}")
        if not isinstance(raw.get("spec"), str) or not raw["spec"]:
            raise ValueError(f"{pw}: needs spec = \"path/to/policy.safetensors\" (or \"zoo:NAME\")")
        for key in ("name", "group", "env"):
            if key in raw and not (isinstance(raw[key], str) and raw[key]):
                raise ValueError(f"{pw}: {key} must be a non-empty string, got {raw[key]!r}")
        spec = _resolve_spec(raw["spec"], base_dir)
        policies.append(PolicyEntry(spec=spec, name=raw.get("name"), group=raw.get("group"), env=raw.get("env")))

    known = list_attacks()
    attacks = []
    for name in _list(where, "attacks", data.get("attacks", list(DEFAULT_ATTACKS))):
        if name == "all":
            attacks += [a for a in default_attacks() if a not in attacks]
            continue
        if not isinstance(name, str) or name not in known:
            hint = " (min-q / min-oa-q need robustbench_rl.attacks.critic)" if name in ("min-q", "min-oa-q") else ""
            _fail(where, f"unknown attack {name!r} in attacks; known attacks: {', '.join(known)}, or 'all'{hint}")
        if name != "none" and name not in attacks:
            attacks.append(name)

    eps_values = []
    for e in _list(where, "eps", data.get("eps", list(Suite.eps))):
        try:
            e = check_eps(e)
        except ValueError as err:
            _fail(where, f"eps: {err}")
        if e not in eps_values:
            eps_values.append(e)
    if not eps_values:
        _fail(where, "eps is empty; give budgets such as eps = [0.05, 0.1, 0.2]")
    from robustbench_rl.rollout import EPISODES_PER_SEED
    from robustbench_rl.seeds import check_seed

    seeds = []
    for s in _list(where, "eval_seeds", data.get("eval_seeds", [0])):
        try:
            seeds.append(check_seed(s, "eval_seeds: each seed"))
        except ValueError as err:
            _fail(where, str(err))
    if not seeds or len(set(seeds)) != len(seeds):
        _fail(where, f"eval_seeds must be distinct integers, got {seeds!r}")
    episodes = _int(where, "episodes", data.get("episodes", Suite.episodes), 1)
    if episodes > EPISODES_PER_SEED:
        _fail(where, f"episodes must be <= {EPISODES_PER_SEED} (the episodes of one eval seed), got {episodes}; "
                     "add eval seeds instead")
    critic = data.get("critic", "auto")
    if critic not in CRITIC_SOURCES:
        _fail(where, f"critic must be one of {', '.join(CRITIC_SOURCES)}, got {critic!r}")
    step_size = data.get("pgd_step_size")
    if step_size is not None and (isinstance(step_size, bool) or not isinstance(step_size, (int, float))
                                  or not math.isfinite(step_size) or step_size <= 0):
        _fail(where, f"pgd_step_size must be a positive finite number (or left out for 2.5 * eps / pgd_steps), "
                     f"got {step_size!r}")
    pgd_start = data.get("pgd_start", Suite.pgd_start)
    if pgd_start not in PGD_STARTS:
        _fail(where, f"pgd_start must be one of {', '.join(PGD_STARTS)}, got {pgd_start!r}")
    max_steps = data.get("max_episode_steps")
    if max_steps is not None:
        max_steps = _int(where, "max_episode_steps", max_steps, 1)
    name = data.get("name", "suite")
    if not isinstance(name, str) or not name:
        _fail(where, f"name must be a non-empty string, got {name!r}")
    cache = data.get("critic_cache")
    if cache is not None:
        if not isinstance(cache, str):
            _fail(where, f"critic_cache must be a folder path, got {cache!r}")
        cache = str((Path(base_dir or ".") / os.path.expanduser(cache)).resolve())
    fit = _parse_fit(data.get("fit", {}), where)
    attack_options = _parse_attack_options(data.get("attack_options", {}), attacks, where)
    return Suite(
        attack_options=attack_options,
        policies=tuple(policies),
        fit=fit,
        name=name,
        attacks=tuple(attacks),
        eps=tuple(sorted(eps_values)),
        episodes=episodes,
        eval_seeds=tuple(seeds),
        critic=critic,
        pgd_steps=_int(where, "pgd_steps", data.get("pgd_steps", Suite.pgd_steps), 1),
        pgd_start=pgd_start,
        pgd_restarts=_int(where, "pgd_restarts", data.get("pgd_restarts", Suite.pgd_restarts), 1),
        pgd_step_size=None if step_size is None else float(step_size),
        num_envs=_int(where, "num_envs", data.get("num_envs", Suite.num_envs), 1),
        max_episode_steps=max_steps,
        critic_cache=cache,
        workers=_int(where, "workers", data.get("workers", Suite.workers), 0),
        threads_per_worker=_int(where, "threads_per_worker", data.get("threads_per_worker", 1), 1),
    )


def _parse_fit(raw: Any, where: str) -> tuple[tuple[str, Any], ...]:
    """Validate the [fit] table against FitConfig's fields (by building one)."""
    if not isinstance(raw, dict):
        _fail(where, f"fit must be a table ([fit] with FitConfig fields), got {raw!r}")
    if not raw:
        return ()
    from robustbench_rl.attacks.fit import FitConfig

    known = set(FitConfig.__dataclass_fields__)
    bad = sorted(set(raw) - known)
    if bad:
        _fail(where, f"unknown key {bad[0]!r} in [fit]; allowed keys: {', '.join(sorted(known))}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}
    try:
        FitConfig(**values)
    except (TypeError, ValueError) as err:
        _fail(where, f"[fit]: {err}")
    return tuple(sorted(values.items()))


def _parse_attack_options(raw: Any, attacks: list[str], where: str) -> tuple[tuple[str, tuple[tuple[str, Any], ...]], ...]:
    """Validate the [attack_options.NAME] tables: known policy-built attacks the suite runs, known settings."""
    if not isinstance(raw, dict):
        _fail(where, f"attack_options must be tables ([attack_options.lookahead] horizon = 8), got {raw!r}")
    from robustbench_rl.attacks.registry import check_attack_options

    try:
        options = check_attack_options(raw)
    except ValueError as err:
        _fail(where, f"[attack_options]: {err}")
    unused = sorted(set(options) - set(attacks))
    if unused:
        _fail(where, f"[attack_options.{unused[0]}] is given but attacks does not include {unused[0]!r}; add it")
    return tuple(sorted((name, tuple(sorted(opts.items()))) for name, opts in options.items() if opts))


def load_suite(path: str | os.PathLike) -> Suite:
    """Read and validate a suite TOML file (see :func:`parse_suite`)."""
    path = Path(os.path.expanduser(str(path)))
    if not path.is_file():
        raise FileNotFoundError(f"suite file {path} not found; see examples/suite.toml for the format")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{path}: not valid TOML ({err})") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a TOML text file (it is not UTF-8 text); give a suite .toml file") from None
    suite = parse_suite(data, base_dir=path.parent, where=str(path))
    return Suite(**{**{k: getattr(suite, k) for k in Suite.__dataclass_fields__}, "source": str(path)})


def suite_hash(identity: dict[str, Any]) -> str:
    """sha256 of a canonical JSON dump: equal hashes mean the same numbers are being asked for."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()
