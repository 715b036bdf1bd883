"""Ray executor (extra ``[ray]``): run bench cells and training seeds as Ray tasks.

Local Ray when no address is given (started here with `workers` CPUs and stopped when the work is
done), an existing cluster otherwise (``address="ray://host:10001"`` or ``"auto"``). Each task
reserves `threads` CPUs and sets torch to that many threads, for the same reason as the local pool:
evaluation batches are small and oversubscribed cores only slow every worker down. Results come back
as they finish; the caller (the bench runner) writes each cell to disk, so resume works exactly as
with the local pool. On a cluster, every node needs robustbench-rl installed and the policy files
and critic cache at the same paths (a shared filesystem).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any


def import_ray():
    """Import ray or raise ValueError naming the extra to install."""
    try:
        import ray
    except ImportError:
        raise ValueError("the ray executor needs Ray: pip install 'robustbench-rl[ray]'") from None
    return ray


def _call_with_threads(fn: Callable[[Any], Any], task: Any, threads: int) -> Any:
    import torch

    torch.set_num_threads(threads)
    return fn(task)


@dataclass
class RayExecutor:
    """Runs tasks as Ray tasks of `threads` CPUs each; yields (task, result) as they finish. While it
    waits it calls `tick` every `tick_s` seconds (make_executor passes executors.TICK_S)."""

    workers: int = 2
    threads: int = 1
    address: str | None = None
    tick_s: float | None = None

    def map_unordered(self, fn: Callable[[Any], Any], tasks: list[Any],
                      tick: Callable[[], None] | None = None) -> Iterator[tuple[Any, Any]]:
        ray = import_ray()
        started_here = not ray.is_initialized()
        if started_here:
            kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if self.address:
                ray.init(address=self.address, **kw)
            else:
                ray.init(num_cpus=self.workers * self.threads, **kw)
        remote = ray.remote(num_cpus=self.threads, max_retries=0)(_call_with_threads)
        pending = {remote.remote(fn, task, self.threads): task for task in tasks}
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1, timeout=self.tick_s if tick else None)
                if tick:
                    tick()
                for ref in done:
                    task = pending.pop(ref)
                    yield task, ray.get(ref)
        finally:
            for ref in pending:  # error, Ctrl-C or an abandoned iterator: the unfinished cells are redone later
                ray.cancel(ref, force=True)
            if started_here:
                ray.shutdown()
