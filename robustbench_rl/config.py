"""Training configuration: the options of a run (:class:`RunConfig`) and of each algorithm (its
hyperparameter dataclass) as TOML tables and as ``rbrl train`` options, and their resolution:
algorithm defaults < saved run (on resume) < ``--config FILE.toml`` < options given on the command line.

The run directory's file names are defined here too (:mod:`robustbench_rl.training` writes them).
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import itertools
import json
import math
import os
import textwrap
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from robustbench_rl.device import resolve_device
from robustbench_rl.seeds import check_seed

if TYPE_CHECKING:
    from robustbench_rl.agents.base import AlgoEntry

STATE_FILE = "state.pt"
REPLAY_PREFIX = "replay_"
CONFIG_FILE = "config.toml"
PROGRESS_FILE = "progress.csv"
POLICY_FILE = "policy.safetensors"
CHECKPOINT_DIR = "checkpoints"
STATE_FORMAT = 2


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


_CHECKED: set[str] = set()


def load_algos() -> dict[str, AlgoEntry]:
    """Every registered algorithm (importing them all), each checked once by :func:`check_algo`."""
    from robustbench_rl.agents.registry import algos

    found = algos()
    for name, entry in found.items():
        if name not in _CHECKED:
            check_algo(entry, found)
            _CHECKED.add(name)
    return found


def get_algo(name: str) -> AlgoEntry:
    """The registry entry of `name`; ValueError listing the registered names otherwise."""
    algos = load_algos()
    if name not in algos:
        raise ValueError(f"unknown algo {name!r}; registered: {', '.join(sorted(algos)) or 'none'}")
    return algos[name]


def check_algo(entry: AlgoEntry, others: Mapping[str, AlgoEntry]) -> None:
    """TypeError unless `entry`'s hyperparameter dataclass can become CLI options and a TOML table:
    every field has a default, a docstring and a supported type, none clashes with a run option, and a
    field shared with another algorithm has the same type there."""
    name, config_cls = entry.name, entry.config_cls
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
        for other in others.values():
            other_hints = typing.get_type_hints(other.config_cls)
            if f.name in other_hints and other_hints[f.name] != hints[f.name] and other.name != name:
                raise TypeError(f"{name}: hyperparameter {f.name!r} is {hints[f.name]} but {other_hints[f.name]} "
                                f"in {other.name}")


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
