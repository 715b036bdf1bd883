"""The benchmark runner: every policy x every attack x every eps x every eval seed, resumable.

A suite (:mod:`robustbench_rl.suite`) expands into *cells* (policy, attack, eps, eval seed); the
nominal cell (attack ``none``) runs at eps 0 only. The run directory holds::

    DIR/manifest.json      suite, policy hashes, versions, git hash, machine, timings, status
    DIR/cells/*.json       one file per finished cell (its rows + timing), written atomically
    DIR/results.parquet    the tidy results table of all cells (+ a ``group`` column), suite order
    DIR/results.csv        the same table as CSV

Cells are written by whoever runs them as soon as they finish, so a run killed at any moment (even
SIGKILL) loses at most the cells in flight, never half a file; rerunning the same command resumes
with the missing cells and ends with exactly the rows of an uninterrupted run. Each cell file's name
carries a fingerprint of everything that decides its numbers (policy file hash, attack settings,
episodes, num_envs, ...), so a resumed run can never mix in a cell computed under other settings.

Critics for min-q / min-oa-q are resolved (and fitted, when needed) once per (policy, attack) in the
parent process before any cell is dispatched; workers then load them from the on-disk cache.
Execution is delegated to a small :class:`Executor` (a local process pool here) so that other
backends (Ray) can run the same cells.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from robustbench_rl.checkpoint import package_versions
from robustbench_rl.executors import Executor, _pid_alive, default_workers, make_executor
from robustbench_rl.files import atomic_write_bytes, check_writable, file_sha256
from robustbench_rl.results import (
    BENCH_COLUMNS,
    read_cell,
    read_cell_record,
    typed_results,
    write_table,
)
from robustbench_rl.suite import Suite, suite_hash

BENCH_FORMAT = 1
NO_DEFAULT_SUITE = ("no bundled default suite exists yet (the policy zoo will provide one); "
                    "pass a suite file: rbrl bench examples/suite.toml --out runs/bench")


# ----------------------------------------------------------------------------------------------------
# Output paths and policies


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
           "pgd_restarts": suite.pgd_restarts, "pgd_step_size": suite.pgd_step_size,
           "fit": [list(kv) for kv in suite.fit]}
    critic_attacks = _critic_attacks()
    for info in policies:
        who = {"name": info.name, "group": info.group, "sha256": info.sha256, "env_id": info.env_id}
        grid = [("none", 0.0)] + [(a, e) for a in suite.attacks for e in suite.eps if e > 0]
        for attack, eps in grid:
            for seed in suite.eval_seeds:
                ident = {"format": BENCH_FORMAT, "policy": who, "attack": attack, "eps": eps, "seed": seed,
                         **common, **(pgd if attack in critic_attacks else {})}
                if seed != 0:  # eval seed 0 has the same reset seeds under the older seed + i scheme
                    ident["reset_seeds"] = "seed * 2**20 + episode"
                key = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()
                cells.append(Cell(len(cells), info.name, attack, float(eps), int(seed), key))
    return cells


def _critic_attacks() -> set[str]:
    """Attacks whose numbers depend on the critic and PGD settings (those settings enter their key)."""
    try:
        from robustbench_rl.attacks.critic import CRITIC_ATTACKS
    except ModuleNotFoundError:
        return set()
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
    attacks = [a for a in suite.attacks if a in _critic_attacks()]
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
                from robustbench_rl.attacks.fit import FitConfig, critic_cache_path

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
    from robustbench_rl.attacks.registry import make_attack

    try:
        from robustbench_rl.attacks.registry import make_policy_attack
    except ModuleNotFoundError as err:  # critic attacks not installed: only critic-free attacks exist
        if err.name != "robustbench_rl.attacks.critic":
            raise
        attack = make_attack(name)
        return attack, "none"
    kw = {}
    if suite.get("fit"):
        from robustbench_rl.attacks.fit import FitConfig

        kw["fit_config"] = FitConfig(**dict(suite["fit"]))
    return make_policy_attack(
        policy, name, critic="auto" if critic == "none" else critic, pgd_steps=suite["pgd_steps"],
        restarts=suite["pgd_restarts"], step_size=suite["pgd_step_size"], pgd_start=suite["pgd_start"],
        cache_dir=suite["critic_cache"],
        progress=progress, **kw,
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
        "rows": {c: [_plain(v) for v in frame[c].tolist()] for c in BENCH_COLUMNS},
    }
    atomic_write_bytes(task.out_file, json.dumps(record).encode())
    return {k: v for k, v in record.items() if k != "rows"}


def _require_cached_critic(policy, cell: Cell, suite: dict) -> None:
    """A worker must find the critic the parent fitted; fitting here would repeat the work in every
    worker and, if the code changed on disk since the parent started, give different numbers."""
    from robustbench_rl.attacks.critic import CRITIC_ATTACKS, CRITIC_KIND
    from robustbench_rl.attacks.fit import FitConfig, critic_locations

    config = FitConfig(**dict(suite["fit"])) if suite.get("fit") else FitConfig()
    bundled, path = critic_locations(policy, CRITIC_KIND[CRITIC_ATTACKS[cell.attack]], config, suite["critic_cache"])
    if not (bundled.is_file() or path.is_file()):
        raise ValueError(f"no cached fitted critic for {cell.policy} {cell.attack} at {path} in a worker: the rbrl "
                         "code or the cache changed while the bench ran; rerun the same command to resume")


def _plain(v: Any) -> Any:
    if v is pd.NA or v is None:
        return None
    if isinstance(v, np.generic):
        return v.item()
    return v


def _cell_is_sound(path: Path, cell: Cell, episodes: int) -> bool:
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


# ----------------------------------------------------------------------------------------------------
# The run


@dataclass
class BenchRun:
    """What :func:`run_bench` produced."""

    out_dir: Path
    table: pd.DataFrame
    manifest: dict
    cells_total: int
    cells_run: int
    cells_skipped: int = 0
    wall_s: float = 0.0
    """Wall time of this call (critic fitting + cells), excluding earlier sessions of a resumed run."""


def run_identity(suite: Suite, policies: list[PolicyInfo]) -> dict:
    """The suite fields that decide the numbers, plus each policy file's hash."""
    ident = suite.identity()
    ident.pop("critic_cache")
    ident["policies"] = [{"name": p.name, "group": p.group, "env_id": p.env_id, "sha256": p.sha256}
                         for p in policies]
    return ident


def run_bench(
    suite: Suite,
    out_dir: str | os.PathLike,
    *,
    workers: int | None = None,
    threads: int | None = None,
    resume: bool | None = None,
    force: bool = False,
    progress: bool | None = None,
    executor: Executor | None = None,
) -> BenchRun:
    """Run (or resume) a suite into `out_dir` and return the combined results table.

    `workers` (default: the suite's, 0 = one per core) local processes each run with `threads` torch
    threads (default: the suite's, 1): evaluation works on batches of at most num_envs rows, where
    extra threads buy nothing and N workers x N threads would oversubscribe the cores. `resume`
    None continues a run found in `out_dir` and starts one otherwise; True requires one. A run of a
    different suite (or of changed policy files) is refused unless `force`, which keeps the cells
    still valid under the new suite and deletes the rest. Raises ValueError with a one-line reason.
    """
    out = check_writable(out_dir, folder=True)
    manifest_path = out / "manifest.json"
    has_run = manifest_path.is_file()
    if resume and not has_run:
        raise ValueError(f"--resume: {out} holds no bench run (no manifest.json); drop --resume to start one")
    if not has_run and out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} is not empty and holds no bench run; choose a new or empty --out folder")
    # Everything that can be wrong with the suite is found here, before the run folder exists: a
    # folder left behind by a failed start would refuse the corrected suite as "a different suite".
    policies = load_policies(suite)
    check_critics(suite, policies)
    identity = json.loads(json.dumps(run_identity(suite, policies), default=str))  # as the manifest stores it
    ident_hash = suite_hash(identity)
    old: dict = {}
    if has_run:
        try:
            old = json.loads(manifest_path.read_text())
        except ValueError:  # invalid JSON or not text at all
            old = None
        if not isinstance(old, dict):
            raise ValueError(f"{manifest_path} is corrupt; move it away to rerun the suite from its cell files")
        # a run that finished no cell has nothing to protect: a corrected suite may take it over
        finished = any((out / "cells").glob("*.json")) if (out / "cells").is_dir() else False
        if old.get("suite_hash") != ident_hash and not force and finished:
            changed = sorted(k for k in identity if old.get("identity", {}).get(k) != identity[k])
            raise ValueError(
                f"{out} holds a run of a different suite (changed: {', '.join(changed) or 'format'}); "
                "use --force to keep the cells that still match and rerun the rest, or choose another --out"
            )
    workers = workers if workers is not None else (suite.workers or default_workers())
    threads = threads if threads is not None else suite.threads_per_worker
    cells = expand_cells(suite, policies)
    cells_dir = out / "cells"
    cells_dir.mkdir(parents=True, exist_ok=True)
    with _RunLock(out):
        expected = {c.filename for c in cells}
        for path in cells_dir.iterdir():
            # leftovers of writes cut short by a kill, and (after --force) cells of the old suite
            if path.name not in expected:
                path.unlink()
        for c in cells:
            path = cells_dir / c.filename
            if path.is_file() and not _cell_is_sound(path, c, suite.episodes):
                print(f"note: {path} is damaged; recomputing that cell", file=sys.stderr, flush=True)
                path.unlink()
        todo = [c for c in cells if not (cells_dir / c.filename).is_file()]
        by_name = {p.name: p for p in policies}
        show = sys.stderr.isatty() if progress is None else progress
        started = _now()
        manifest = _manifest(suite, policies, identity, ident_hash, old, len(cells), workers, threads)
        session = {"started": started, "workers": workers, "threads": threads, "cells_run": 0,
                   "cells_skipped": len(cells) - len(todo)}
        manifest["sessions"].append(session)
        manifest["status"] = "running"
        _write_json(manifest_path, manifest)

        t0 = time.perf_counter()
        sources, grads = _resolve_critics(todo, by_name, suite, show)
        if grads:  # merged by key: a resumed session only checks the critics it still needs
            known = {(g["policy"], g["attack"]): g for g in manifest.get("critic_gradients", [])}
            known.update({(g["policy"], g["attack"]): g for g in grads})
            manifest["critic_gradients"] = list(known.values())
        fit_s = time.perf_counter() - t0
        suite_d = suite.to_dict()
        tasks = [CellTask(c, by_name[c.policy], sources[(c.policy, c.attack)], suite_d, str(cells_dir / c.filename))
                 for c in todo]
        # Heaviest first (PGD cells cost several times a critic-free cell), so that no worker is left
        # running one long cell at the end while the others idle. Rows are combined in suite order anyway.
        heavy = _critic_attacks()
        tasks.sort(key=lambda t: t.cell.attack not in heavy)
        n_workers = max(1, min(workers, len(tasks)))
        ex = executor or make_executor("local", n_workers, threads)
        manifest["executor"] = {"kind": type(ex).__name__, "workers": getattr(ex, "workers", n_workers),
                                "threads_per_worker": threads}
        run = _drive(ex, tasks, len(cells), show)
        session.update(run)
        session.update({"finished": _now(), "fit_s": round(fit_s, 3)})
        table = combine_cells(cells_dir, cells)
        write_table(table, out / "results.parquet")
        write_table(table, out / "results.csv")
        manifest["status"] = "complete"
        manifest["timings"] = _timings(cells_dir, cells, manifest["sessions"])
        _write_json(manifest_path, manifest)
    return BenchRun(out, table, manifest, len(cells), session["cells_run"], session["cells_skipped"],
                    wall_s=time.perf_counter() - t0)


def _resolve_critics(todo: list[Cell], by_name: dict[str, PolicyInfo], suite: Suite,
                     show: bool) -> tuple[dict[tuple[str, str], str], list[dict]]:
    """Critic source per (policy, attack) with pending cells, fitting missing critics once, here.

    Every later make_policy_attack call for the pair (in the workers) then hits the critic cache.
    Also returns, per critic attack, how informative its critic's action gradient is on states the
    policy visits (the zero-gradient sanity check of the report).
    """
    sources: dict[tuple[str, str], str] = {}
    grads: list[dict] = []
    suite_d = suite.to_dict()
    for name, attack in dict.fromkeys((c.policy, c.attack) for c in todo):
        if attack == "none":
            sources[(name, attack)] = "none"
            continue
        info = by_name[name]
        policy = load_policy_on(info.spec, info.env_id)
        policy.name = info.name
        att, source = build_attack(policy, attack, suite_d, suite.critic, progress=show)
        sources[(name, attack)] = source
        if getattr(att, "critic", None) is not None:
            grads.append({"policy": name, "attack": attack, "critic_source": source,
                          **_gradient_stats(policy, att.critic, info.env_id)})
    return sources, grads


def _gradient_stats(policy, critic, env_id: str) -> dict:
    """critic_gradient_stats on 256 states from noise-free episodes of the policy (fixed seed)."""
    from robustbench_rl.attacks.critic import critic_gradient_stats
    from robustbench_rl.attacks.fit import collect_transitions

    obs = collect_transitions(policy, 256, num_envs=8, explore_noise=0.0, seed=0, env_id=env_id).obs
    return critic_gradient_stats(critic, obs, policy.act(obs))


def _drive(ex: Executor, tasks: list[CellTask], total: int, show: bool) -> dict:
    from tqdm.auto import tqdm

    start = time.perf_counter()
    cell_s = 0.0
    steps = 0
    bar = tqdm(total=total, initial=total - len(tasks), desc="cells", unit="cell", disable=not show,
               dynamic_ncols=True, smoothing=0.1)
    n = 0
    try:
        for task, summary in ex.map_unordered(run_cell, tasks):
            n += 1
            cell_s += summary["wall_s"]
            steps += summary["env_steps"]
            bar.set_postfix_str(f"{task.cell.policy} {task.cell.attack} eps={task.cell.eps:g}", refresh=False)
            bar.update(1)
    finally:
        bar.close()
    wall = time.perf_counter() - start
    return {"cells_run": n, "cells_wall_s": round(wall, 3), "cell_s_sum": round(cell_s, 3), "env_steps": steps,
            "env_steps_per_s": round(steps / wall, 1) if wall > 0 else None}


def combine_cells(cells_dir: Path, cells: Iterable[Cell]) -> pd.DataFrame:
    """The results table of all cells, in suite order (so it does not depend on finishing order)."""
    frames = [read_cell(cells_dir / c.filename) for c in cells]
    return typed_results(pd.concat(frames, ignore_index=True)[BENCH_COLUMNS])


# ----------------------------------------------------------------------------------------------------
# Manifest


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _write_json(path: Path, obj: dict) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, default=str) + "\n").encode())


def git_info() -> dict | None:
    """Commit and dirty flag of the rbrl source checkout, or None when it is not a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": bool(dirty)}


def machine_info() -> dict:
    """Where the numbers were made (CPU, cores, OS, Python)."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"hostname": socket.gethostname(), "platform": platform.platform(), "python": platform.python_version(),
            "cpu": cpu, "cpu_count": os.cpu_count(), "usable_cores": default_workers()}


def _manifest(suite, policies, identity, ident_hash, old, n_cells, workers, threads) -> dict:
    return {
        "format": BENCH_FORMAT,
        "suite": suite.to_dict(),
        "identity": identity,
        "suite_hash": ident_hash,
        "policies": [p.__dict__ for p in policies],
        "cells": n_cells,
        "columns": BENCH_COLUMNS,
        "versions": package_versions(),
        "git": git_info(),
        "machine": machine_info(),
        "executor": {"kind": "local", "workers": workers, "threads_per_worker": threads},
        "created": old.get("created", _now()),
        "sessions": list(old.get("sessions", [])),
        "critic_gradients": list(old.get("critic_gradients", [])),
        "status": "running",
    }


def _timings(cells_dir: Path, cells: list[Cell], sessions: list[dict]) -> dict:
    per_attack: dict[str, float] = {}
    steps: dict[str, int] = {}
    for c in cells:
        rec = json.loads((cells_dir / c.filename).read_text())
        per_attack[c.attack] = per_attack.get(c.attack, 0.0) + rec["wall_s"]
        steps[c.attack] = steps.get(c.attack, 0) + rec["env_steps"]
    return {
        "wall_s": round(sum(s.get("cells_wall_s", 0.0) + s.get("fit_s", 0.0) for s in sessions), 3),
        "critic_fit_s": round(sum(s.get("fit_s", 0.0) for s in sessions), 3),
        "cell_s_by_attack": {k: round(v, 3) for k, v in per_attack.items()},
        "env_steps_per_s_by_attack": {k: round(steps[k] / v, 1) if v > 0 else None for k, v in per_attack.items()},
    }


class _RunLock:
    """DIR/.lock holding host:pid:start time: two benches writing one directory would race on its cells.

    The process start time tells a live bench from a lock left by a killed one whose pid the system
    has since given to another process.
    """

    def __init__(self, out: Path) -> None:
        self.path = out / ".lock"

    def __enter__(self) -> _RunLock:
        host = socket.gethostname()
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            pid = "?"
            try:
                other_host, pid, *rest = self.path.read_text().split(":")
                started = rest[0] if rest and rest[0] else None
                alive = other_host == host and _pid_alive(int(pid)) and (
                    started is None or _process_start(int(pid)) in (None, started))
            except (OSError, ValueError):
                alive = False
            if alive:
                raise ValueError(f"another rbrl bench (pid {pid}) is writing {self.path.parent}: wait for it or stop "
                                 f"it first (if no bench runs there, delete the lock file {self.path})") from None
            self.path.unlink(missing_ok=True)  # left by a killed run
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        with os.fdopen(fd, "w") as fh:
            fh.write(f"{host}:{os.getpid()}:{_process_start(os.getpid()) or ''}")
        return self

    def __exit__(self, *exc) -> None:
        self.path.unlink(missing_ok=True)


def _process_start(pid: int) -> str | None:
    """A process's start time (clock ticks since boot, /proc/PID/stat field 22); None where unknown."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None
