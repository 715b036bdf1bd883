"""CUDA graphs of a trainer's update: capture its kernels once per plan, then replay them.

A TD3 update at batch 256 is a few hundred small kernels, and on a GPU their launches, not their
arithmetic, set the pace (BENCHMARKS.md, "GPUs"). A CUDA graph records the kernels of one
call and replays them with one launch. An update can be replayed this way when it:

- takes its minibatch as an argument: each replay copies the batch into the graph's fixed input
  tensors (sampling stays outside, since its bound grows with the buffer);
- decides in Python, from a hashable plan made before the call, everything that changes which
  kernels it launches; one graph is captured per plan;
- keeps its state in tensors updated in place (parameters, optimiser state, target networks, cached
  gradients) and draws its random numbers from one generator;
- reports metrics through `MetricSum.add`: a replay adds the tensors its capture recorded.

The first `warmup` calls of each plan run eagerly on a side stream (lazy initialisations, such as the
optimisers' state, must happen outside a capture); the next call captures, and it and all later ones
replay. A replay draws the same random numbers an eager call would, and runs the same kernels.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable
from typing import Any, NamedTuple

import torch


class _Capture(NamedTuple):
    graph: Any  # torch.cuda.CUDAGraph
    batch: Any  # the fixed input tensors, a NamedTuple like the minibatch
    metrics: list  # (name, tensor) pairs the capture recorded; each replay rewrites the tensors


class GraphedUpdates:
    """Runs `learn(batch, plan)` as a CUDA graph per plan (after `warmup` eager calls of that plan).

    `metrics` is the MetricSum `learn` adds to, `generator` the CUDA generator it draws from, and
    `optimizers` the optimisers it steps (switched to capturable mode here: their step counts stay on
    the GPU). Parameters and optimiser state must not be replaced by new tensors afterwards; make a
    new GraphedUpdates when they are (e.g. after loading a state dict).
    """

    def __init__(self, learn: Callable[[Any, Hashable], None], metrics: Any, generator: torch.Generator,
                 optimizers: list[torch.optim.Optimizer], warmup: int = 3) -> None:
        if generator.device.type != "cuda":
            raise ValueError(f"CUDA graphs need the update on a CUDA device, got {generator.device}")
        self.learn, self.metrics, self.generator, self.warmup = learn, metrics, generator, warmup
        for opt in optimizers:
            for group in opt.param_groups:
                group["capturable"] = True
        self.captures: dict[Hashable, _Capture] = {}
        self.calls: Counter = Counter()
        self.side = torch.cuda.Stream(device=generator.device)

    def run(self, batch: Any, plan: Hashable) -> None:
        """One update on `batch` as `plan` says: eager while warming up, else a graph replay."""
        capture = self.captures.get(plan)
        if capture is None:
            self.calls[plan] += 1
            if self.calls[plan] <= self.warmup:
                self.side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(self.side):
                    self.learn(batch, plan)
                torch.cuda.current_stream().wait_stream(self.side)
                return
            capture = self.captures[plan] = self._capture(batch, plan)
        for fixed, value in zip(capture.batch, batch, strict=True):
            fixed.copy_(value)
        capture.graph.replay()
        for name, value in capture.metrics:
            self.metrics.add(name, value)

    def _capture(self, batch: Any, plan: Hashable) -> _Capture:
        """Record learn's kernels for `plan` on fixed input tensors (recording runs nothing)."""
        fixed = type(batch)(*(t.clone() for t in batch))
        graph = torch.cuda.CUDAGraph()
        # torch with this method (2.11, for one) draws from a non-default generator inside a
        # graph only once it is registered; later torch registers it on first use and deprecates the call.
        register = getattr(graph, "register_generator_state", None)
        if register is not None:
            register(self.generator)
        with self.metrics.recording() as recorded, torch.cuda.graph(graph):
            self.learn(fixed, plan)
        return _Capture(graph, fixed, recorded)
