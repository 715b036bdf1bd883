"""Executors: where independent tasks (bench cells, training seeds) run.

``local`` is a pool of processes (or this process when one worker is enough) and ``ray`` runs Ray
tasks (:mod:`robustbench_rl.ray_executor`). Every executor yields (task, result) as tasks finish,
in any order; the caller writes each result to disk, so a stopped run resumes from what finished.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol


class Executor(Protocol):
    """Runs tasks somewhere and yields each (task, result) as it finishes, in any order.

    Implementations must run `fn` on every task exactly once unless an error is raised, and stop
    promptly (without leaving workers behind) when the consumer stops iterating.
    """

    workers: int

    def map_unordered(self, fn: Callable[[Any], Any], tasks: list[Any],
                      tick: Callable[[], None] | None = None) -> Iterator[tuple[Any, Any]]:
        """`tick`, when given, is called about every TICK_S seconds while tasks run elsewhere (e.g. to
        refresh progress bars from the tasks' own files)."""
        ...


TICK_S = 1.0
"""How often an executor calls its `tick` while it waits for tasks."""


def default_workers() -> int:
    """One worker per CPU core this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    # set_num_interop_threads fails once parallel work ran in this process: then keep what is there
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(threads)


def _init_worker(threads: int, main_pid: int) -> None:
    # Ctrl-C reaches the whole process group: the parent handles it and stops the pool, so the workers
    # ignore it instead of each printing a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _set_threads(threads)
    first_ppid = os.getppid()  # the forkserver (or the main process under spawn)

    def watch_parent() -> None:
        # A SIGKILLed main process cannot stop its pool; without this the workers would wait forever
        # on their task queue. A finished cell is already on disk, an unfinished one is simply redone.
        while os.getppid() == first_ppid and _pid_alive(main_pid):
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch_parent, daemon=True).start()


# Imported once by the forkserver, so that workers start as cheap forks of an interpreter that has
# torch, gymnasium and mujoco loaded, instead of each importing them (seconds per worker).
_PRELOAD = ["robustbench_rl.bench", "robustbench_rl.rollout", "robustbench_rl.results", "robustbench_rl.policy"]


def _mp_context():
    """forkserver where the platform has it (Linux, macOS), else spawn.

    Never plain fork: the parent has usually run torch (loading policies, fitting critics) and may
    hold threads (torch's pools, tqdm's monitor), and a fork copies their locks but not the threads.
    """
    import multiprocessing as mp

    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        with contextlib.suppress(Exception):  # preloading is an optimisation only
            ctx.set_forkserver_preload(_PRELOAD)
        return ctx
    return mp.get_context("spawn")


@dataclass
class SerialExecutor:
    """Runs cells one after another in this process (workers = 1: no process start-up cost)."""

    threads: int = 1
    workers: int = 1

    def map_unordered(self, fn, tasks, tick=None):  # tasks run here, so there is no waiting to tick in
        import torch

        before = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            for task in tasks:
                yield task, fn(task)
        finally:
            torch.set_num_threads(before)


@dataclass
class LocalPoolExecutor:
    """A pool of `workers` local processes, each with `threads` torch threads.

    Processes come from a forkserver that preloads the evaluation modules (spawn where there is no
    forkserver); see :func:`_mp_context`. A worker exits by itself when the main process dies.
    """

    workers: int
    threads: int = 1

    def map_unordered(self, fn, tasks, tick=None):
        from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

        pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=_mp_context(),
                                   initializer=_init_worker, initargs=(self.threads, os.getpid()))
        clean = False
        try:
            pending = {pool.submit(fn, t): t for t in tasks}
            while pending:
                done, _ = wait(pending, timeout=TICK_S if tick else None, return_when=FIRST_COMPLETED)
                if tick:
                    tick()
                for fut in done:
                    task = pending.pop(fut)
                    yield task, fut.result()
            clean = True
        finally:
            if clean:
                pool.shutdown(wait=True)
            else:  # error, Ctrl-C or an abandoned iterator: stop now, the running cells are redone later
                for proc in list(getattr(pool, "_processes", {}).values()):
                    proc.terminate()
                pool.shutdown(wait=False, cancel_futures=True)


EXECUTORS = ("local", "ray")


def make_executor(kind: str = "local", workers: int | None = None, threads: int = 1,
                  address: str | None = None) -> Executor:
    """An executor by name: ``local`` is a process pool (or in-process when workers == 1), ``ray``
    runs Ray tasks (a local Ray with `workers` CPUs, or the cluster at `address`)."""
    if kind not in EXECUTORS:
        raise ValueError(f"unknown executor {kind!r}; known executors: {', '.join(EXECUTORS)}")
    workers = workers or default_workers()
    if workers < 1 or threads < 1:
        raise ValueError(f"workers and threads must be >= 1, got workers={workers}, threads={threads}")
    if kind == "ray":
        from robustbench_rl.ray_executor import RayExecutor, import_ray

        import_ray()  # fail before any work when Ray is missing
        return RayExecutor(workers=workers, threads=threads, address=address, tick_s=TICK_S)
    if address:
        raise ValueError("--address applies to the ray executor only")
    return SerialExecutor(threads=threads) if workers == 1 else LocalPoolExecutor(workers=workers, threads=threads)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
