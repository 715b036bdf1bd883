"""Benchmark cells: a suite's policies, the (policy, attack, eps, eval seed) cells they expand into,
and the evaluation of one cell (in a worker process or in this one).

Each cell's file name carries a fingerprint of everything that decides its numbers (policy file hash,
attack settings, episodes, num_envs, ...), so a resumed run never mixes in a cell computed under
other settings; :func:`cell_is_sound` tells a finished cell file from a damaged one.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from robustbench_rl.files import atomic_write_bytes, check_writable, file_sha256
from robustbench_rl.results import (
    BENCH_COLUMNS,
    read_cell_record,
)
from robustbench_rl.suite import Suite

BENCH_FORMAT = 1
"""Version of the cell and manifest files; part of every cell's fingerprint."""


def load_policy_on(spec: str, env_id: str | None = None, **kw: Any):
    """`load_policy(spec, env_id=env_id, **kw)`, with the policy's ``env_id`` set to the env it will run on.

    A checkpoint records the env it was trained on; with another `env_id` (same sizes), everything
    that follows ``policy.env_id`` - default evaluations, fitted critics and their cache keys, the
    gradient check's states - must use the evaluated env, or a critic fitted on the training env
    would attack the policy on another one.
    """
    from robustbench_rl.policy import load_policy

    policy = load_policy(spec, env_id=env_id, **kw)
    if env_id:
        policy.env_id = env_id
        policy.env_id_trusted = True  # the user named it (see robustbench_rl.policy.resolve_env_id)
    return policy


# ----------------------------------------------------------------------------------------------------
# Cells


@dataclass(frozen=True)
class PolicyInfo:
    """A suite policy after loading: identity (file hash) and labels."""

    name: str
    spec: str
    path: str
    sha256: str
    algo: str
    group: str
    env_id: str
    train_seed: int | None
    critics: tuple[str, ...]


@dataclass(frozen=True)
class Cell:
    """One unit of work: `episodes` episodes of one policy under one attack at one eps and eval seed."""

    index: int
    policy: str
    attack: str
    eps: float
    seed: int
    key: str
    """Fingerprint of everything that decides this cell's rows."""

    @property
    def filename(self) -> str:
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", self.policy)[:60]
        return f"{slug}__{self.attack}__eps{self.eps:g}__seed{self.seed}__{self.key[:12]}.json"


def expand_cells(suite: Suite, policies: list[PolicyInfo]) -> list[Cell]:
    """All cells of a suite in report order: policies, then nominal + attacks, eps ascending, seeds.

    The nominal cell exists at eps 0 only; eps 0 is not repeated for the attacks (an attack at eps 0
    executes the nominal action bit for bit, so it would duplicate the nominal cell).
    """
    cells = []
    common = {"episodes": suite.episodes, "num_envs": suite.num_envs, "max_episode_steps": suite.max_episode_steps}
    pgd = {"critic": suite.critic, "pgd_steps": suite.pgd_steps, "pgd_start": suite.pgd_start,
           "pgd_restarts": suite.pgd_restarts, "pgd_step_size": suite.pgd_step_size}
    critic_attacks = critic_attack_names()
    fit_settings = fitted_settings_hashes(suite) if suite.critic != "own" else {}
    for info in policies:
        who = {"name": info.name, "group": info.group, "sha256": info.sha256, "env_id": info.env_id}
        grid = [("none", 0.0)] + [(a, e) for a in suite.attacks for e in suite.eps if e > 0]
        for attack, eps in grid:
            for seed in suite.eval_seeds:
                ident = {"format": BENCH_FORMAT, "policy": who, "attack": attack, "eps": eps, "seed": seed,
                         **common, **(pgd if attack in critic_attacks else {})}
                if attack in fit_settings:
                    ident["fit_settings"] = fit_settings[attack]  # a change of the fit refits, so rescore
                if suite.options_of(attack):
                    ident["options"] = suite.options_of(attack)
                if seed != 0:  # eval seed 0 has the same reset seeds under the older seed + i scheme
                    ident["reset_seeds"] = "seed * 2**20 + episode"
                key = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()
                cells.append(Cell(len(cells), info.name, attack, float(eps), int(seed), key))
    return cells


def fitted_settings_hashes(suite: Suite) -> dict[str, str]:
    """Critic attack -> the hash of the settings of the critic it is fitted with under this suite: a
    cell scored with a fitted critic is valid only for the fit that produced it."""
    from robustbench_rl.attacks.critic import CRITIC_ATTACKS, CRITIC_KIND
    from robustbench_rl.attacks.fit import FitConfig, settings_hash

    config = FitConfig(**dict(suite.fit))
    return {attack: settings_hash(config.settings(CRITIC_KIND[key])) for attack, key in CRITIC_ATTACKS.items()}


def critic_attack_names() -> set[str]:
    """Attacks whose numbers depend on the critic and PGD settings (those settings enter their key)."""
    from robustbench_rl.attacks.critic import CRITIC_ATTACKS

    return set(CRITIC_ATTACKS)


def load_policies(suite: Suite) -> list[PolicyInfo]:
    """Load every suite policy once (shape and env checks happen here, before any work starts).

    A policy without an explicit name is called by its file stem, or, when several policies share a
    stem (``rbrl train`` always writes ``RUN_DIR/policy.safetensors``), by its folder's name.
    """
    from robustbench_rl.policy import resolve_env_id, resolve_spec

    loaded = []
    for entry in suite.policies:
        policy = load_policy_on(entry.spec, entry.env)
        own = getattr(policy, "path", None)
        path = Path(own) if own else Path(entry.spec[4:]) if entry.spec.startswith("sb3:") else resolve_spec(entry.spec)
        loaded.append((entry, policy, path))
    stems = [p.name for e, p, _ in loaded if not e.name]
    out: list[PolicyInfo] = []
    for entry, policy, path in loaded:
        meta = getattr(policy, "meta", {}) or {}
        name = entry.name or (policy.name if stems.count(policy.name) == 1 or entry.spec.startswith("zoo:")
                              else path.parent.name)
        out.append(PolicyInfo(
            name=name, spec=entry.spec, path=str(path), sha256=file_sha256(path), algo=str(meta.get("algo", "unknown")),
            group=entry.group or str(meta.get("algo", "unknown")), env_id=resolve_env_id(policy, entry.env),
            train_seed=meta.get("seed"), critics=tuple(sorted(policy.critics)),
        ))
    names = [p.name for p in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"two suite policies are both named {dupes[0]!r}; give each a distinct name = \"...\"")
    return out


def check_critics(suite: Suite, policies: list[PolicyInfo]) -> None:
    """ValueError, before a run folder exists, when a critic attack cannot get its critic.

    ``critic = "own"`` needs every policy to carry the critic of every critic attack; a critic that
    will be fitted needs a writable cache (unless it is cached already), checked now rather than after
    the run folder was created.
    """
    attacks = [a for a in suite.attacks if a in critic_attack_names()]
    if not attacks:
        return
    from robustbench_rl.attacks.critic import CRITIC_ATTACKS, CRITIC_KIND

    where = suite.source or "suite"
    for info in policies:
        for attack in attacks:
            key = CRITIC_ATTACKS[attack]
            own = key in info.critics
            if suite.critic == "own" and not own:
                have = ", ".join(info.critics) or "none"
                raise ValueError(f"{where}: critic = \"own\" but policy {info.name} has no {key!r} critic for {attack} "
                                 f"(its critics: {have}); use critic = \"auto\" (own where present, else fitted) "
                                 "or \"fitted\"")
            if suite.critic == "fitted" or (suite.critic == "auto" and not own):
                from robustbench_rl.attacks.critic_cache import critic_cache_path
                from robustbench_rl.attacks.fit import FitConfig

                policy = load_policy_on(info.spec, info.env_id)
                config = FitConfig(**dict(suite.fit)) if suite.fit else FitConfig()
                path = critic_cache_path(policy, CRITIC_KIND[key], config, suite.critic_cache, policy_sha256=info.sha256)
                if not path.is_file():
                    check_writable(path, folder=False, what="critic cache file")


# ----------------------------------------------------------------------------------------------------
# Running one cell (in a worker or in-process)


@dataclass(frozen=True)
class CellTask:
    """What a worker needs to run one cell: plain data, cheap to send to another process."""

    cell: Cell
    policy: PolicyInfo
    critic: str
    """The resolved critic source to use ("none", "own" or "fitted")."""
    suite: dict
    out_file: str


_POLICY_CACHE: dict[tuple[str, str], Any] = {}


def build_attack(policy, name: str, suite: dict, critic: str, progress: bool = False):
    """(attack, critic_source) for a policy; critics come from make_policy_attack (fitted ones cached)."""
    from robustbench_rl.attacks.registry import make_policy_attack

    kw = {}
    if suite.get("fit"):
        from robustbench_rl.attacks.fit import FitConfig

        kw["fit_config"] = FitConfig(**dict(suite["fit"]))
    options = dict(dict(suite.get("attack_options") or ()).get(name, ()))
    return make_policy_attack(
        policy, name, critic="auto" if critic == "none" else critic, pgd_steps=suite["pgd_steps"],
        restarts=suite["pgd_restarts"], step_size=suite["pgd_step_size"], pgd_start=suite["pgd_start"],
        cache_dir=suite["critic_cache"], progress=progress, options=options, **kw,
    )


def run_cell(task: CellTask) -> dict:
    """Evaluate one cell, write its rows to `task.out_file` atomically, return its timing summary."""
    from robustbench_rl.results import result_frame
    from robustbench_rl.rollout import evaluate

    cell, info, suite = task.cell, task.policy, task.suite
    cache_key = (info.path, info.sha256, info.env_id)
    if cache_key not in _POLICY_CACHE:
        _POLICY_CACHE[cache_key] = load_policy_on(info.spec, info.env_id)
    policy = _POLICY_CACHE[cache_key]
    policy.name = info.name  # the same file may appear under another name in another suite
    if task.critic == "fitted":
        _require_cached_critic(policy, cell, suite)
    # A fresh attack per cell: an attack that kept state between calls would make a cell's numbers
    # depend on which cells its worker happened to run before it.
    attack, source = build_attack(policy, cell.attack, suite, task.critic)
    start = time.perf_counter()
    res = evaluate(policy, attack, cell.eps, episodes=suite["episodes"], seed=cell.seed,
                   num_envs=suite["num_envs"], env_id=info.env_id, progress=False,
                   max_episode_steps=suite["max_episode_steps"])
    frame = result_frame(policy, res, source)
    frame["group"] = info.group
    record = {
        "format": BENCH_FORMAT, "key": cell.key, "policy": cell.policy, "attack": cell.attack, "eps": cell.eps,
        "eval_seed": cell.seed, "critic_source": source, "wall_s": time.perf_counter() - start,
        "env_steps": res.env_steps, "mean_return": res.mean,
        "finished": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"), "pid": os.getpid(),
        "rows": {c: [plain_value(v) for v in frame[c].tolist()] for c in BENCH_COLUMNS},
    }
    atomic_write_bytes(task.out_file, json.dumps(record).encode())
    return {k: v for k, v in record.items() if k != "rows"}


def _require_cached_critic(policy, cell: Cell, suite: dict) -> None:
    """A worker must find the critic the parent fitted; fitting here would repeat the work in every
    worker and, if the code changed on disk since the parent started, give different numbers."""
    from robustbench_rl.attacks.critic import CRITIC_ATTACKS, CRITIC_KIND
    from robustbench_rl.attacks.critic_cache import critic_locations
    from robustbench_rl.attacks.fit import FitConfig

    config = FitConfig(**dict(suite["fit"])) if suite.get("fit") else FitConfig()
    bundled, path = critic_locations(policy, CRITIC_KIND[CRITIC_ATTACKS[cell.attack]], config, suite["critic_cache"])
    if not (bundled.is_file() or path.is_file()):
        raise ValueError(f"no cached fitted critic for {cell.policy} {cell.attack} at {path} in a worker: the rbrl "
                         "code or the cache changed while the bench ran; rerun the same command to resume")


def plain_value(v: Any) -> Any:
    if v is pd.NA or v is None:
        return None
    if isinstance(v, np.generic):
        return v.item()
    return v


def cell_is_sound(path: Path, cell: Cell, episodes: int) -> bool:
    """Whether a finished cell file holds this cell's rows: readable, its key, every episode, finite returns.

    A file cut short or edited by hand must be recomputed, not counted as done forever.
    """
    try:
        record, rows = read_cell_record(path)
    except ValueError:
        return False
    return (record.get("key") == cell.key and len(rows) == episodes
            and sorted(rows["episode"].tolist()) == list(range(episodes))
            and bool(np.isfinite(rows["return"].to_numpy(dtype=float)).all()))
