"""Generic training infrastructure shared by every algorithm behind ``rbrl train``.

An algorithm plugs in with :func:`register_algo`: a hyperparameter dataclass (one docstring per field;
the docstrings become ``--help`` text, the fields become CLI options and a ``[hyperparameters]`` TOML
table) and a :class:`Trainer` subclass holding the networks, optimisers, data and RNG. Everything
else lives here, once: config resolution (defaults < saved run < ``--config`` file < CLI), the run
directory, ``progress.csv``, the progress bar, periodic checkpoints, deterministic evaluation and
resume after a crash.

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

import abc
import ast
import contextlib
import csv
import dataclasses
import inspect
import io
import itertools
import json
import math
import os
import sys
import textwrap
import time
import tomllib
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn

from robustbench_rl.device import resolve_device
from robustbench_rl.files import atomic_writer
from robustbench_rl.seeds import MAX_SEED, check_seed  # noqa: F401  (MAX_SEED: part of this module's API)

if TYPE_CHECKING:
    from robustbench_rl.agents.buffers import ReplayBuffer

STATE_FILE = "state.pt"
REPLAY_PREFIX = "replay_"
CONFIG_FILE = "config.toml"
PROGRESS_FILE = "progress.csv"
POLICY_FILE = "policy.safetensors"
CHECKPOINT_DIR = "checkpoints"
STATE_FORMAT = 2
# Algorithm modules that register themselves on import. An algorithm file adds its module here.
ALGO_MODULES = ("robustbench_rl.agents.td3", "robustbench_rl.agents.ppo")


# --------------------------------------------------------------------------------------------------
# Run-level options (shared by every algorithm) and the algorithm registry
# --------------------------------------------------------------------------------------------------

@dataclass
class RunConfig:
    """Options of a training run that are not algorithm hyperparameters."""

    algo: str = ""
    """Algorithm to train: td3, oa-td3 (TD3 with the OA critic and actor mix), ppo, or oa-ppo."""
    env: str = ""
    """Gymnasium env id (any registered id, or module:EnvId)."""
    steps: int = 100_000
    """Total environment steps to train for (may be raised on --resume to extend a run)."""
    seed: int = 0
    """Seed of everything random in the run: network init, exploration, replay sampling, env resets."""
    eval_every: int = 0
    """Deterministic evaluation (no exploration noise, no attack) every N env steps and at the end; 0 = off."""
    eval_episodes: int = 10
    """Episodes per evaluation (episode i is reset with ``rollout.episode_seed(eval_seed, i)``)."""
    eval_seed: int = 1_000_000
    """Seed of the evaluation episodes (fixed, so evaluations along a run are comparable)."""
    checkpoint_every: int = 10_000
    """Save a policy checkpoint and the resume state every N env steps."""
    log_every: int = 1_000
    """Write a progress.csv row every N env steps (also at every eval, checkpoint and the end)."""
    device: str = "cpu"
    """Torch device for networks, buffers and PGD: cpu, cuda, cuda:N, or auto (cuda when there is one)."""
    threads: int = 1
    """torch intra-op threads (0 = torch's default). 1 is robust on shared machines; try 2-4 on idle cores."""
    tensorboard: bool = False
    """Also write the progress.csv scalars as TensorBoard events under RUN_DIR/tb (extra [tb])."""
    cuda_graphs: bool = True
    """On a CUDA device, replay TD3 / OA-TD3 updates as CUDA graphs (the same updates, several times
    faster: kernel launches bound them on a GPU); --no-cuda-graphs runs them eagerly. No effect on the CPU."""


# Run fields that may differ when a run is resumed: they change neither the algorithm nor its data.
RESUME_MUTABLE = ("steps", "device", "threads", "tensorboard", "cuda_graphs")


class Trainer(abc.ABC):
    """One algorithm's training state and step logic; :func:`train` does all I/O around it.

    Subclasses set `metric_names` (the progress.csv columns they report), build their envs, networks
    and optimisers in ``__init__(config, env_id, seed, total_steps, device)`` and keep `global_step`
    (env steps taken, summed over vector-env copies) up to date.
    """

    metric_names: ClassVar[tuple[str, ...]] = ()
    replay: ReplayBuffer | None = None
    """A replay buffer too large to copy into the resume state (TD3's): :func:`train` writes it to its
    own file beside ``state.pt`` with :meth:`ReplayBuffer.write_file`, and :meth:`state_dict` leaves it out."""

    def __init__(self, config: Any, env_id: str, seed: int, total_steps: int, device: torch.device) -> None:
        self.config = config
        self.env_id = env_id
        self.seed = seed
        self.total_steps = total_steps
        self.device = device
        self.global_step = 0

    @abc.abstractmethod
    def advance(self, until: int) -> list[tuple[float, int]]:
        """Take env steps (and updates) until `global_step` >= `until`.

        An algorithm with natural chunks (a PPO rollout) may stop past `until`. Returns the
        (return, length) of every episode that finished meanwhile.
        """

    @abc.abstractmethod
    def pop_metrics(self) -> dict[str, float]:
        """Means of the training metrics since the last call (keys from `metric_names`), then reset."""

    @abc.abstractmethod
    def policy_state(self) -> tuple[dict[str, nn.Module], dict[str, dict], dict[str, Tensor], dict[str, Any]]:
        """What the policy checkpoint holds: modules by prefix, their network specs, extra tensors
        (e.g. ``obs_rms.mean``/``obs_rms.var``) and extra metadata (e.g. ``{"obs_norm": True}``)."""

    @abc.abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue training: tensors, ints, floats, strings, lists and dicts only."""

    @abc.abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; the env restarts a fresh episode seeded from (seed, global_step)."""

    def use_cuda_graphs(self) -> bool:
        """Replay updates as CUDA graphs from now on (:mod:`robustbench_rl.graphs`), if this algorithm
        can; returns whether it does. Called by :func:`train` on a CUDA device after any resume."""
        return False

    def close(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Release envs and other resources."""


@dataclass(frozen=True)
class AlgoEntry:
    """A registered algorithm: its hyperparameter dataclass and its trainer class."""

    name: str
    config_cls: type
    trainer_cls: type[Trainer]
    description: str


_ALGOS: dict[str, AlgoEntry] = {}


def register_algo(name: str, config_cls: type, trainer_cls: type[Trainer], description: str) -> None:
    """Make an algorithm available to ``rbrl train --algo NAME``.

    `config_cls` must be a dataclass whose every field has a default and a docstring (checked here,
    because the docstrings are the CLI help); its fields become CLI options shared by name across
    algorithms, so two algorithms that both have e.g. ``learning_rate`` must give it the same type.
    """
    if not dataclasses.is_dataclass(config_cls):
        raise TypeError(f"{name}: config class {config_cls.__name__} is not a dataclass")
    docs = field_docs(config_cls)
    hints = typing.get_type_hints(config_cls)
    run_fields = {f.name for f in dataclasses.fields(RunConfig)}
    for f in dataclasses.fields(config_cls):
        if f.name not in docs:
            raise TypeError(f"{name}: hyperparameter {f.name!r} has no docstring")
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise TypeError(f"{name}: hyperparameter {f.name!r} has no default")
        if f.name in run_fields:
            raise TypeError(f"{name}: hyperparameter {f.name!r} clashes with a run option")
        _option_kind(hints[f.name])  # raises for an unsupported type
        for other in _ALGOS.values():
            other_hints = typing.get_type_hints(other.config_cls)
            if f.name in other_hints and other_hints[f.name] != hints[f.name] and other.name != name:
                raise TypeError(f"{name}: hyperparameter {f.name!r} is {hints[f.name]} but {other_hints[f.name]} "
                                f"in {other.name}")
    _ALGOS[name] = AlgoEntry(name, config_cls, trainer_cls, description)


def load_algos() -> dict[str, AlgoEntry]:
    """Import every algorithm module that exists (each registers itself) and return the registry."""
    import importlib
    import importlib.util

    for module in ALGO_MODULES:
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if found:
            importlib.import_module(module)
    return dict(_ALGOS)


def get_algo(name: str) -> AlgoEntry:
    """The registry entry of `name`; ValueError listing the registered names otherwise."""
    algos = load_algos()
    if name not in algos:
        raise ValueError(f"unknown algo {name!r}; registered: {', '.join(sorted(algos)) or 'none'}")
    return algos[name]


# --------------------------------------------------------------------------------------------------
# Dataclass fields -> docs, option kinds, TOML
# --------------------------------------------------------------------------------------------------

def field_docs(cls: type) -> dict[str, str]:
    """The docstring written under each dataclass field (CleanRL style), inherited ones included."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        body = tree.body[0].body  # type: ignore[attr-defined]
        for node, nxt in itertools.pairwise(body):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                    and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                    and isinstance(nxt.value.value, str)):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def _option_kind(tp: Any) -> str:
    if tp is bool:
        return "bool"
    if tp in (int, float, str):
        return tp.__name__
    if typing.get_origin(tp) in (list, tuple) and typing.get_args(tp)[:1] in ((int,), (float,)):
        return "list_" + typing.get_args(tp)[0].__name__
    raise TypeError(f"unsupported hyperparameter type {tp}; use bool, int, float, str or list[int]/list[float]")


def coerce_value(name: str, tp: Any, value: Any) -> Any:
    """Turn a TOML/CLI value into the field's type; ValueError naming the field otherwise."""
    kind = _option_kind(tp)
    try:
        if kind == "bool":
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
                return value.lower() in ("true", "1", "yes", "on")
            raise ValueError
        if kind == "int":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if kind == "float":
            if isinstance(value, bool):
                raise ValueError
            out = float(value)
            if not math.isfinite(out):
                raise ValueError
            return out
        if kind == "str":
            if not isinstance(value, str):
                raise ValueError
            return value
        elem = int if kind == "list_int" else float
        items = [x for x in value.split(",") if x.strip()] if isinstance(value, str) else list(value)
        if not items:
            raise ValueError
        return [coerce_value(name, elem, x) for x in items]
    except (ValueError, TypeError):
        want = {"list_int": "a comma-separated list of ints", "list_float": "a comma-separated list of floats"}
        raise ValueError(f"{name} must be {want.get(kind, 'a ' + kind)}, got {value!r}") from None


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ("nan" if math.isnan(value) else ("inf" if value > 0 else "-inf"))
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def config_to_toml(run: RunConfig, hp: Any) -> str:
    """The fully resolved config as TOML: a ``[run]`` table and a ``[hyperparameters]`` table, with the
    field docstrings as comments so the file documents itself."""
    out = ["# rbrl train: fully resolved config of this run (`rbrl train --config` reads this format)", ""]
    for title, obj in (("run", run), ("hyperparameters", hp)):
        docs = field_docs(type(obj))
        out.append(f"[{title}]")
        for f in dataclasses.fields(obj):
            if f.name in docs:
                out.append(f"# {docs[f.name]}")
            out.append(f"{f.name} = {_toml_value(getattr(obj, f.name))}")
        out.append("")
    return "\n".join(out)


def read_toml(path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Read a config TOML (``[run]`` and/or ``[hyperparameters]`` tables); ValueError on anything else."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid TOML: {err}") from None
    unknown = sorted(set(data) - {"run", "hyperparameters"})
    if unknown:
        raise ValueError(f"{path}: unknown table or key {unknown[0]!r}; a config has [run] and [hyperparameters] tables")
    for key in ("run", "hyperparameters"):
        if key in data and not isinstance(data[key], dict):
            raise ValueError(f"{path}: {key!r} must be a table ([{key}])")
    return {"run": dict(data.get("run", {})), "hyperparameters": dict(data.get("hyperparameters", {}))}


def _apply(cls: type, base: Any, values: Mapping[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in values:
        if key not in names:
            raise ValueError(f"{where}: unknown option {key!r} for {cls.__name__} (known: {', '.join(sorted(names))})")
    return dataclasses.replace(base, **{k: coerce_value(k, hints[k], v) for k, v in values.items()})


# --------------------------------------------------------------------------------------------------
# Config resolution: defaults < saved run (resume) < --config file < explicit CLI options
# --------------------------------------------------------------------------------------------------

def resolve_config(out: str | os.PathLike, run_values: Mapping[str, Any], hp_values: Mapping[str, Any],
                   config_file: str | os.PathLike | None = None, resume: bool = False) -> tuple[RunConfig, Any]:
    """Build the run's (RunConfig, hyperparameters) from all sources, validated.

    `run_values` / `hp_values` hold only options the user gave explicitly. Without `resume`, RUN_DIR
    must not already hold a run. With `resume`, the saved ``config.toml`` is the base and any given
    value that differs from it is refused (except --steps, --device and --threads), so a resumed run
    is the same experiment.
    """
    out = Path(out)
    file_vals = read_toml(config_file) if config_file else {"run": {}, "hyperparameters": {}}
    saved_path = out / CONFIG_FILE
    if resume:
        if not saved_path.is_file():
            raise FileNotFoundError(f"nothing to resume: {saved_path} does not exist (start the run without --resume)")
        saved = read_toml(saved_path)
        run = _apply(RunConfig, RunConfig(), saved["run"], str(saved_path))
        entry = get_algo(run.algo)
        hp = _apply(entry.config_cls, entry.config_cls(), saved["hyperparameters"], str(saved_path))
        for source, vals in ((str(config_file), file_vals), ("command line", {"run": run_values, "hyperparameters": hp_values})):
            new_run = _apply(RunConfig, run, vals["run"], source)
            new_hp = _apply(entry.config_cls, hp, vals["hyperparameters"], source)
            for old_obj, new_obj in ((run, new_run), (hp, new_hp)):
                for f in dataclasses.fields(old_obj):
                    old, new = getattr(old_obj, f.name), getattr(new_obj, f.name)
                    if old != new and f.name not in RESUME_MUTABLE:
                        raise ValueError(
                            f"--resume refuses a changed config: {out} was started with {f.name}={old!r}, "
                            f"the {source} gives {new!r} (drop the option, or start a new run with another --out)")
            run, hp = new_run, new_hp
    else:
        if (out / CONFIG_FILE).exists() or (out / STATE_FILE).exists():
            raise FileExistsError(f"{out} already holds a run; pass --resume to continue it, or choose a new --out")
        if out.exists() and not out.is_dir():
            raise FileExistsError(f"{out} is a file, not a run directory; choose a new --out folder")
        if out.exists() and any(out.iterdir()):
            # a run writes policy.safetensors, progress.csv, checkpoints/ ...: never over someone's files
            raise FileExistsError(f"{out} is not empty and holds no training run; choose a new or empty --out folder")
        run = _apply(RunConfig, RunConfig(), file_vals["run"], str(config_file))
        run = _apply(RunConfig, run, run_values, "command line")
        if not run.algo:
            raise ValueError(f"no algo given: pass --algo ({', '.join(sorted(load_algos()))}) or set it in [run]")
        if not run.env:
            raise ValueError("no env given: pass --env ENV_ID (e.g. Pendulum-v1) or set env in [run]")
        entry = get_algo(run.algo)
        others = [k for k in hp_values if k not in {f.name for f in dataclasses.fields(entry.config_cls)}]
        if others:
            owners = [a.name for a in load_algos().values() if others[0] in {f.name for f in dataclasses.fields(a.config_cls)}]
            raise ValueError(f"--{others[0].replace('_', '-')} is not a {run.algo} hyperparameter "
                             f"(it belongs to {', '.join(owners)})")
        hp = _apply(entry.config_cls, entry.config_cls(), file_vals["hyperparameters"], str(config_file))
        hp = _apply(entry.config_cls, hp, hp_values, "command line")
    validate_run(run)
    from robustbench_rl.envs import env_spec

    env_spec(run.env)  # EnvError now, before anything is written
    check = getattr(hp, "validate", None)
    if callable(check):
        check()
    return run, hp


def check_fields(cfg: Any, at_least_one: tuple[str, ...], ranges: Mapping[str, bool]) -> None:
    """ValueError naming the first field of `cfg` below 1 (`at_least_one`) or failing its range check."""
    for name in at_least_one:
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name.replace('_', '-')} must be >= 1, got {getattr(cfg, name)}")
    for name, ok in ranges.items():
        if not ok:
            raise ValueError(f"{name.replace('_', '-')} is out of range: {getattr(cfg, name)}")


def validate_run(run: RunConfig) -> None:
    """ValueError for run options out of range."""
    from robustbench_rl.rollout import EPISODES_PER_SEED

    for name in ("steps", "checkpoint_every", "log_every", "eval_episodes"):
        if getattr(run, name) < 1:
            raise ValueError(f"{name.replace('_', '-')} must be >= 1, got {getattr(run, name)}")
    for name in ("eval_every", "threads"):
        if getattr(run, name) < 0:
            raise ValueError(f"{name.replace('_', '-')} must be >= 0, got {getattr(run, name)}")
    if run.eval_episodes > EPISODES_PER_SEED:
        raise ValueError(f"eval-episodes must be <= {EPISODES_PER_SEED} (the episodes of one eval seed), "
                         f"got {run.eval_episodes}")
    check_seed(run.seed, "seed")
    check_seed(run.eval_seed, "eval-seed")
    resolve_device(run.device)


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
    ~1.36x faster (shared/research/perf-anchors.md): pass --threads 2 there.
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


# --------------------------------------------------------------------------------------------------
# Small helpers algorithms share
# --------------------------------------------------------------------------------------------------

def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """Polyak averaging target <- (1 - tau) target + tau source, in place, on the device (no host sync)."""
    with torch.no_grad():
        tgt = [p for p in target.parameters()]
        src = [p for p in source.parameters()]
        torch._foreach_lerp_(tgt, src, tau)


class MetricSum:
    """Running sums of scalar tensors kept on the device, read (one host sync) only at log time."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = names
        self._recorded: list[tuple[str, Tensor | float]] | None = None
        self.reset()

    def reset(self) -> None:
        self.sums: dict[str, Tensor | float] = dict.fromkeys(self.names, 0.0)
        self.counts: dict[str, int] = dict.fromkeys(self.names, 0)

    def add(self, name: str, value: Tensor | float) -> None:
        if isinstance(value, Tensor):
            value = value.detach()
        if self._recorded is not None:
            self._recorded.append((name, value))
            return
        self.sums[name] = self.sums[name] + value
        self.counts[name] += 1

    @contextlib.contextmanager
    def recording(self) -> Iterator[list[tuple[str, Tensor | float]]]:
        """Inside, `add` only appends (name, value) to the yielded list (a CUDA graph capture: the
        values are tensors each replay rewrites, added after each replay)."""
        recorded: list[tuple[str, Tensor | float]] = []
        self._recorded = recorded
        try:
            yield recorded
        finally:
            self._recorded = None

    def pop(self) -> dict[str, float]:
        out = {n: (float(self.sums[n]) / self.counts[n] if self.counts[n] else float("nan")) for n in self.names}
        self.reset()
        return out


def rng_state(generator: torch.Generator) -> Tensor:
    """A torch generator's state as a CPU uint8 tensor (safe to save with weights_only loading)."""
    return generator.get_state().clone()


# --------------------------------------------------------------------------------------------------
# CLI options generated from the dataclasses (used by `rbrl train`)
# --------------------------------------------------------------------------------------------------

def _fmt_default(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    if isinstance(value, bool):
        return str(value).lower()
    return f"{value:g}" if isinstance(value, float) else str(value)


def cli_options() -> tuple[list, list[str], list[str]]:
    """Click options for every RunConfig field and every registered hyperparameter (union over algos).

    Every option defaults to None so that only values the user gave override the config file and the
    saved run. Returns (options, run field names, hyperparameter field names).
    """
    import click

    algos = load_algos()
    options: list = []
    run_names: list[str] = []
    docs = field_docs(RunConfig)
    run_hints = typing.get_type_hints(RunConfig)
    for f in dataclasses.fields(RunConfig):
        run_names.append(f.name)
        flag = "--" + f.name.replace("_", "-")
        default = "" if f.name in ("algo", "env") else f" [default: {_fmt_default(f.default)}]"
        if _option_kind(run_hints[f.name]) == "bool":
            options.append(click.option(f"{flag}/--no-{f.name.replace('_', '-')}", f.name, default=None,
                                        help=docs[f.name] + default))
            continue
        if f.name == "algo":
            ptype: Any = click.Choice(sorted(algos))
        else:
            ptype = {"int": int, "float": float, "str": str}[_option_kind(run_hints[f.name])]
        options.append(click.option(flag, f.name, type=ptype, default=None, help=docs[f.name] + default))
    hp: dict[str, dict[str, Any]] = {}
    for entry in algos.values():
        hints = typing.get_type_hints(entry.config_cls)
        edocs = field_docs(entry.config_cls)
        defaults = dataclasses.asdict(entry.config_cls())
        for f in dataclasses.fields(entry.config_cls):
            slot = hp.setdefault(f.name, {"type": hints[f.name], "docs": {}, "defaults": {}})
            slot["docs"].setdefault(edocs[f.name], []).append(entry.name)
            slot["defaults"][entry.name] = defaults[f.name]
    for name, slot in sorted(hp.items()):
        kind = _option_kind(slot["type"])
        defaults = "; ".join(f"{a}: {_fmt_default(v)}" for a, v in slot["defaults"].items())
        docs = slot["docs"]  # algorithms may document a shared option differently
        doc = next(iter(docs)) if len(docs) == 1 else " ".join(f"({', '.join(a)}) {d}" for d, a in docs.items())
        help_text = f"{doc} [{defaults}]"
        flag = "--" + name.replace("_", "-")
        if kind == "bool":
            options.append(click.option(f"{flag}/--no-{name.replace('_', '-')}", name, default=None, help=help_text))
        else:
            ptype = {"int": int, "float": float, "str": str}.get(kind, str)
            options.append(click.option(flag, name, type=ptype, default=None, help=help_text))
    return options, run_names, sorted(hp)
