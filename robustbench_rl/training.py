"""The training loop behind ``rbrl train``, shared by every algorithm.

An algorithm is a :class:`robustbench_rl.agents.base.Trainer` (its networks, optimisers, data, RNG
and update) registered with its hyperparameter dataclass; its configuration is resolved by
:mod:`robustbench_rl.config`. Everything around the updates lives here, once: the run directory,
``progress.csv``, the progress bar, periodic checkpoints, deterministic evaluation and resume after
a crash.

Run directory layout::

    RUN_DIR/
      config.toml                 fully resolved config ([run] + [hyperparameters])
      progress.csv                one row per log boundary; no gaps or duplicates across resumes
      policy.safetensors          final policy (written when the run completes)
      checkpoints/step_<N>.safetensors   periodic policy checkpoints
      state.pt                    resume state: tensors + plain values, loaded with weights_only=True
      replay_<N>.bin              off-policy replay buffer of that state, raw float32 (no copy in memory)

Resume state is written atomically (temp file, fsync, rename) after the policy checkpoint of the same
step, so a SIGKILL at any moment leaves the previous state usable. A resumed run restarts the
episode that was in progress (env internals cannot be saved generically); everything else - networks,
optimisers, replay buffer, RNG streams, counters - continues exactly.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from robustbench_rl.config import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    POLICY_FILE,
    PROGRESS_FILE,
    REPLAY_PREFIX,
    STATE_FILE,
    STATE_FORMAT,
    RunConfig,
    config_to_toml,
    get_algo,
    read_toml,
)
from robustbench_rl.device import resolve_device
from robustbench_rl.files import atomic_writer

if TYPE_CHECKING:
    from robustbench_rl.agents.buffers import ReplayBuffer


# --------------------------------------------------------------------------------------------------
# Files: atomic state, progress.csv
# --------------------------------------------------------------------------------------------------

def _atomic_torch_save(obj: Any, path: Path) -> None:
    """torch.save to a temp file in the same folder, fsync, rename: the old file survives any crash."""
    with atomic_writer(path) as fh:
        torch.save(obj, fh)


def _write_replay(replay: ReplayBuffer, out: Path, step: int) -> dict[str, Any]:
    """Write the replay buffer to a per-step file (the previous one stays valid until state.pt moves on)."""
    name = f"{REPLAY_PREFIX}{step:09d}.bin"
    return {"replay_file": name, "replay_rows": replay.write_file(out / name)}


def _read_replay(replay: ReplayBuffer, out: Path, state: dict[str, Any]) -> None:
    path = out / str(state.get("replay_file", ""))
    if "replay_file" not in state or not path.is_file():
        raise ValueError(f"{out / STATE_FILE} refers to a replay buffer file {path.name!r} that is not there; "
                         f"delete {STATE_FILE} to restart the run from scratch")
    replay.read_file(path, int(state["replay_rows"]))


def load_state(path: Path, device: torch.device) -> dict[str, Any]:
    """Read resume state with ``weights_only=True`` (tensors and plain containers only, never code)."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:
        raise ValueError(f"{path} is not a usable resume state ({type(err).__name__}: {str(err)[:120]}); "
                         "delete it to restart the run from scratch") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise ValueError(f"{path} has an unknown resume-state format; delete it to restart the run")
    return state


class ProgressLog:
    """progress.csv: a fixed header, one row per boundary, append-only within a process.

    On resume, rows past the resumed step are dropped (they came from work that is being redone), so
    the file never has duplicated or missing steps; a row torn by a crash is dropped too.
    """

    def __init__(self, path: Path, columns: list[str]) -> None:
        self.path = path
        self.columns = columns

    def start(self, resume_step: int | None) -> None:
        """Create the file (fresh run) or trim it to rows with step <= `resume_step`."""
        rows: list[dict[str, str]] = []
        if resume_step is not None and self.path.is_file():
            with open(self.path, newline="") as fh:
                reader = csv.DictReader(fh)
                if reader.fieldnames and list(reader.fieldnames) != self.columns:
                    raise ValueError(f"{self.path} has columns {reader.fieldnames}, expected {self.columns}")
                for row in reader:
                    try:
                        step = int(row["step"])
                    except (TypeError, ValueError):
                        continue
                    if step <= resume_step and None not in row.values() and None not in row:
                        rows.append(row)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self.columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        from robustbench_rl.files import atomic_write_bytes

        atomic_write_bytes(self.path, buf.getvalue().encode())

    def write(self, row: Mapping[str, Any]) -> None:
        """Append one row (missing columns are left empty; floats get 6 significant digits)."""
        vals = []
        for col in self.columns:
            v = row.get(col)
            if v is None or (isinstance(v, float) and math.isnan(v)):
                vals.append("")
            elif isinstance(v, float):
                vals.append(f"{v:.6g}")
            else:
                vals.append(str(v))
        with open(self.path, "a", newline="") as fh:
            fh.write(",".join(vals) + "\n")
            fh.flush()


# --------------------------------------------------------------------------------------------------
# The driver
# --------------------------------------------------------------------------------------------------

BASE_COLUMNS = ["step", "episodes", "episode_return", "episode_length", "eval_return", "eval_return_std",
                "steps_per_s", "wall_s"]


def next_multiple(step: int, every: int) -> int:
    """The smallest multiple of `every` strictly after `step`."""
    return (step // every + 1) * every


def _crossed(before: int, now: int, every: int) -> bool:
    return every > 0 and now // every > before // every


def set_threads(threads: int) -> int:
    """Set torch's intra-op threads (`threads`; 0 leaves torch's default). Returns the number in force.

    Why 1 by default: OpenMP worker threads spin-wait, so when another process holds one of the cores
    a 2-thread update collapses (measured on the 2-core reference machine with one other busy process:
    57 ms vs 1.9 ms per 64x64 TD3 step). On idle cores 2 threads make a batch-256 256x256 TD3 update
    ~1.36x faster: pass --threads 2 there.
    """
    if threads > 0 and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def policy_metadata(run: RunConfig, hp: Any, networks: dict[str, dict], extra: Mapping[str, Any], steps: int) -> dict:
    """Checkpoint metadata of a trained policy: algo, env spec, networks, resolved config, seed, steps."""
    from robustbench_rl.envs import env_spec

    return {**env_spec(run.env), "algo": run.algo, "networks": networks, "config": dataclasses.asdict(hp),
            "run": dataclasses.asdict(run), "seed": run.seed, "steps": int(steps), **extra}


@dataclass
class TrainResult:
    """What :func:`train` returns: where things went and the last figures."""

    run_dir: Path
    policy_path: Path
    steps: int
    resumed_from: int | None
    last_eval: float | None
    wall_s: float
    last_row: dict[str, Any] = field(default_factory=dict)
    already_complete: bool = False
    """True when a resumed run had already reached its steps: nothing was trained or written."""


def train(run: RunConfig, hp: Any, out: str | os.PathLike, resume: bool = False, progress: bool | None = None,
          echo: Callable[[str], None] | None = None,
          stop_when: Callable[[dict[str, Any]], bool] | None = None) -> TrainResult:
    """Train `run.algo` on `run.env` for `run.steps` env steps, writing the run directory `out`.

    Call :func:`resolve_config` first (it does the validation and the resume checks). With `resume`,
    the trainer is restored from ``state.pt`` if one exists (else the run starts over) and
    progress.csv is trimmed to the restored step; a run that already reached `run.steps` is left
    untouched and returned with ``already_complete``. `progress` shows a tqdm bar with the latest
    episode return and steps/s (default: when stderr is a terminal). `echo` receives one-line notes.
    `stop_when(row)` is called with every progress.csv row; True ends the run early there (state and
    policy are saved at that step, and a later --resume continues towards `run.steps`).
    """
    from tqdm.auto import tqdm

    from robustbench_rl.checkpoint import save_checkpoint, state_tensors
    from robustbench_rl.files import atomic_write_bytes

    echo = echo or (lambda msg: None)
    out = Path(out)
    if resume:
        done = completed_steps(out)
        if done is not None and done >= run.steps:
            saved = read_toml(out / CONFIG_FILE)["run"].get("steps", run.steps)
            if done > run.steps and run.steps < saved:
                raise ValueError(f"{out} has already trained {done} steps; --steps {run.steps} cannot shorten it "
                                 f"(give --steps >= {done})")
            # Rewriting anything here would change policy.safetensors' bytes (its creation time), and
            # with them the sha256 that fitted critics and bench runs are tied to.
            return TrainResult(run_dir=out, policy_path=out / POLICY_FILE, steps=done, resumed_from=done,
                               last_eval=None, wall_s=0.0, already_complete=True)
    entry = get_algo(run.algo)
    device = resolve_device(run.device)
    set_threads(run.threads)
    trainer = entry.trainer_cls(hp, run.env, run.seed, run.steps, device)
    resumed_from = None
    driver = {"episodes": 0, "wall_s": 0.0, "last_return": float("nan")}
    state_path = out / STATE_FILE
    if resume and state_path.is_file():
        state = load_state(state_path, device)
        if state["algo"] != run.algo:
            raise ValueError(f"{state_path} was written by {state['algo']}, the run is {run.algo}")
        trainer.load_state_dict(state["trainer"])
        if trainer.replay is not None:
            _read_replay(trainer.replay, out, state)
        driver.update(state["driver"])
        resumed_from = trainer.global_step
        if resumed_from > run.steps:
            trainer.close()
            raise ValueError(f"{out} has already trained {resumed_from} steps; --steps {run.steps} cannot shorten it "
                             f"(give --steps >= {resumed_from})")
        echo(f"resuming {out} from step {resumed_from}")
    elif resume:
        echo(f"no resume state in {out} yet: starting the run from step 0")
    if device.type == "cuda" and run.cuda_graphs:
        trainer.use_cuda_graphs()
    (out / CHECKPOINT_DIR).mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / CONFIG_FILE, config_to_toml(run, hp).encode())

    log = ProgressLog(out / PROGRESS_FILE, BASE_COLUMNS + list(trainer.metric_names))
    log.start(resumed_from if resumed_from is not None else (0 if resume else None))
    tb = None
    if run.tensorboard:
        from robustbench_rl.tblog import TensorBoardLog

        tb = TensorBoardLog(out / "tb", resume_step=None if resumed_from is None else resumed_from + 1)

    def save_policy(path: Path) -> Path:
        modules, networks, extra_tensors, extra_meta = trainer.policy_state()
        tensors = {**state_tensors(modules), **{k: v.detach().cpu() for k, v in extra_tensors.items()}}
        return save_checkpoint(path, tensors, policy_metadata(run, hp, networks, extra_meta, trainer.global_step))

    def evaluate_now() -> tuple[float, float]:
        from robustbench_rl.checkpoint import build_modules
        from robustbench_rl.policy import CheckpointPolicy
        from robustbench_rl.rollout import evaluate

        modules, networks, extra_tensors, extra_meta = trainer.policy_state()
        tensors = {**state_tensors(modules), **{k: v.detach().cpu() for k, v in extra_tensors.items()}}
        meta = policy_metadata(run, hp, networks, extra_meta, trainer.global_step)
        policy = CheckpointPolicy(build_modules(tensors, meta, path="eval"), meta, tensors, name=f"{run.algo}-eval")
        result = evaluate(policy, "none", 0.0, episodes=run.eval_episodes, seed=run.eval_seed,
                          num_envs=min(run.eval_episodes, 8), progress=False)
        return result.mean, result.std

    show = sys.stderr.isatty() if progress is None else progress
    bar = tqdm(total=run.steps, initial=min(trainer.global_step, run.steps), unit="step", disable=not show,
               dynamic_ncols=True, desc=f"{run.algo} {run.env} seed {run.seed}")
    last_eval: float | None = None
    row: dict[str, Any] = {}
    interval_returns: list[float] = []
    interval_lengths: list[int] = []
    interval_start_step = trainer.global_step
    interval_time = 0.0
    t_run = time.perf_counter()
    try:
        while trainer.global_step < run.steps:
            step = trainer.global_step
            boundary = min(next_multiple(step, run.log_every), next_multiple(step, run.checkpoint_every), run.steps)
            if run.eval_every:
                boundary = min(boundary, next_multiple(step, run.eval_every))
            t0 = time.perf_counter()
            # Short chunks keep the progress bar lively; the trainer may overshoot for rollout algorithms.
            finished = trainer.advance(min(boundary, step + 250))
            dt = time.perf_counter() - t0
            interval_time += dt
            driver["wall_s"] += dt
            for ret, length in finished:
                interval_returns.append(ret)
                interval_lengths.append(length)
                driver["last_return"] = ret
            driver["episodes"] += len(finished)
            now = trainer.global_step
            bar.update(min(now, run.steps) - bar.n)
            sps = (now - interval_start_step) / interval_time if interval_time > 0 else float("nan")
            bar.set_postfix(ret=f"{driver['last_return']:.5g}", sps=f"{sps:.0f}", refresh=False)
            at_end = now >= run.steps
            is_log = at_end or _crossed(step, now, run.log_every)
            is_ckpt = at_end or _crossed(step, now, run.checkpoint_every)
            is_eval = run.eval_every > 0 and (at_end or _crossed(step, now, run.eval_every))
            if not (is_log or is_ckpt or is_eval):
                continue
            eval_mean = eval_std = float("nan")
            if is_eval:
                eval_mean, eval_std = evaluate_now()
                last_eval = eval_mean
            row = {
                "step": now, "episodes": driver["episodes"],
                "episode_return": sum(interval_returns) / len(interval_returns) if interval_returns else float("nan"),
                "episode_length": sum(interval_lengths) / len(interval_lengths) if interval_lengths else float("nan"),
                "eval_return": eval_mean, "eval_return_std": eval_std, "steps_per_s": sps,
                "wall_s": driver["wall_s"], **trainer.pop_metrics(),
            }
            log.write(row)
            if tb is not None:
                tb.write(row)
            stop = bool(stop_when(row)) if stop_when is not None else False
            is_ckpt = is_ckpt or stop
            interval_returns, interval_lengths = [], []
            interval_start_step, interval_time = now, 0.0
            if is_eval:
                bar.write(f"step {now}: eval return {eval_mean:.2f} ± {eval_std:.2f}") if show else None
            if is_ckpt:
                save_policy(out / CHECKPOINT_DIR / f"step_{now:09d}.safetensors")
                replay = _write_replay(trainer.replay, out, now) if trainer.replay is not None else {}
                _atomic_torch_save({"format": STATE_FORMAT, "algo": run.algo, "trainer": trainer.state_dict(),
                                    "driver": dict(driver), **replay}, state_path)
                for old in out.glob(f"{REPLAY_PREFIX}*.bin"):  # only after state.pt points at the new one
                    if replay and old.name != replay["replay_file"]:
                        old.unlink(missing_ok=True)
            if stop:
                echo(f"stopping early at step {now} (stop condition met)")
                break
        policy_path = save_policy(out / POLICY_FILE)
    finally:
        bar.close()
        trainer.close()
        if tb is not None:
            tb.close()
    return TrainResult(run_dir=out, policy_path=policy_path, steps=trainer.global_step, resumed_from=resumed_from,
                       last_eval=last_eval, wall_s=time.perf_counter() - t_run, last_row=row)


def completed_steps(out: str | os.PathLike) -> int | None:
    """The steps of a run that ended: those of its final policy.safetensors when no later checkpoint
    exists (a run extended with a larger --steps and killed midway has one), else None."""
    from robustbench_rl.checkpoint import CheckpointError, read_metadata

    out = Path(out)
    try:
        steps = read_metadata(out / POLICY_FILE).get("steps")
    except CheckpointError:
        return None
    if isinstance(steps, bool) or not isinstance(steps, int):
        return None
    later = [p for p in (out / CHECKPOINT_DIR).glob("step_*.safetensors")
             if p.stem[5:].isdigit() and int(p.stem[5:]) > steps]
    return None if later else steps


def train_task(task: tuple) -> dict[str, Any]:
    """Picklable entry point for executors (local pool, Ray): train one resolved run, return a summary.

    `task` is (run, hp, out, resume) or (run, hp, out, resume, progress); progress draws this run's
    own bar, for runs trained one after another in the calling process."""
    run, hp, out, resume, *rest = task
    result = train(run, hp, out, resume=resume, progress=bool(rest and rest[0]))
    return {"seed": run.seed, "steps": result.steps, "policy": str(result.policy_path),
            "last_eval": result.last_eval, "wall_s": result.wall_s, "already_complete": result.already_complete}


def logged_steps(run_dir: str | os.PathLike) -> int:
    """The env step of the last row of RUN_DIR/progress.csv (0 when there is none yet): how far a run
    that trains in another process has got, read without disturbing it."""
    path = Path(run_dir) / PROGRESS_FILE
    try:
        with path.open("rb") as f:
            f.seek(max(0, path.stat().st_size - 4096))
            lines = f.read().splitlines()
    except OSError:
        return 0
    for line in reversed(lines):
        head = line.split(b",", 1)[0]
        if head.isdigit():
            return int(head)
    return 0
