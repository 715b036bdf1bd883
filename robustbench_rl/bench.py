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

import json
import os
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from robustbench_rl.cells import (
    Cell,
    CellTask,
    PolicyInfo,
    build_attack,
    cell_is_sound,
    check_critics,
    critic_attack_names,
    expand_cells,
    load_policies,
    load_policy_on,
    run_cell,
)
from robustbench_rl.executors import Executor, default_workers, make_executor
from robustbench_rl.files import check_writable
from robustbench_rl.provenance import RunLock, cell_timings, now_iso, run_manifest, write_json
from robustbench_rl.results import (
    BENCH_COLUMNS,
    read_cell,
    typed_results,
    write_table,
)
from robustbench_rl.suite import Suite, suite_hash

NO_DEFAULT_SUITE = ("this install has no bundled default suite (robustbench_rl/zoo/suites/quick.toml); reinstall rbrl or "
                    "pass a suite file: rbrl bench examples/suite.toml --out runs/bench")


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
    with RunLock(out):
        expected = {c.filename for c in cells}
        for path in cells_dir.iterdir():
            # leftovers of writes cut short by a kill, and (after --force) cells of the old suite
            if path.name not in expected:
                path.unlink()
        for c in cells:
            path = cells_dir / c.filename
            if path.is_file() and not cell_is_sound(path, c, suite.episodes):
                print(f"note: {path} is damaged; recomputing that cell", file=sys.stderr, flush=True)
                path.unlink()
        todo = [c for c in cells if not (cells_dir / c.filename).is_file()]
        by_name = {p.name: p for p in policies}
        show = sys.stderr.isatty() if progress is None else progress
        started = now_iso()
        manifest = run_manifest(suite, policies, identity, ident_hash, old, len(cells), workers, threads)
        session = {"started": started, "workers": workers, "threads": threads, "cells_run": 0,
                   "cells_skipped": len(cells) - len(todo)}
        manifest["sessions"].append(session)
        manifest["status"] = "running"
        write_json(manifest_path, manifest)

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
        # Heaviest first (planning and learned attacks, then PGD cells, which cost several times a
        # critic-free cell), so that no worker is left running one long cell at the end while the
        # others idle. Rows are combined in suite order anyway.
        from robustbench_rl.attacks.registry import needs_policy

        heavy = critic_attack_names()
        tasks.sort(key=lambda t: (not needs_policy(t.cell.attack), t.cell.attack not in heavy))
        n_workers = max(1, min(workers, len(tasks)))
        ex = executor or make_executor("local", n_workers, threads)
        manifest["executor"] = {"kind": type(ex).__name__, "workers": getattr(ex, "workers", n_workers),
                                "threads_per_worker": threads}
        run = _drive(ex, tasks, len(cells), show)
        session.update(run)
        session.update({"finished": now_iso(), "fit_s": round(fit_s, 3)})
        table = combine_cells(cells_dir, cells)
        write_table(table, out / "results.parquet")
        write_table(table, out / "results.csv")
        manifest["status"] = "complete"
        manifest["timings"] = cell_timings(cells_dir, cells, manifest["sessions"])
        write_json(manifest_path, manifest)
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
    eps_of: dict[tuple[str, str], list[float]] = {}
    for c in todo:
        eps_of.setdefault((c.policy, c.attack), []).append(c.eps)
    for name, attack in dict.fromkeys((c.policy, c.attack) for c in todo):
        if attack == "none":
            sources[(name, attack)] = "none"
            continue
        info = by_name[name]
        policy = load_policy_on(info.spec, info.env_id)
        policy.name = info.name
        att, source = build_attack(policy, attack, suite_d, suite.critic, progress=show)
        sources[(name, attack)] = source
        if hasattr(att, "prepare"):  # e.g. a learned adversary per eps: trained here once, not in every worker
            att.prepare(sorted(set(eps_of[(name, attack)])))
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


