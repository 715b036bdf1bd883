"""Shared pieces of the `rbrl` commands: the group that turns user errors into one-line exits, and the
option parsers and decorators that several commands use. Torch-free, like every module the CLI
imports at start-up.
"""

from __future__ import annotations

import click

from robustbench_rl.device import DEVICE_HELP
from robustbench_rl.seeds import MAX_SEED
from robustbench_rl.threat import STANDARD, ThreatModelViolation, check_eps

# ValueError covers CheckpointError and EnvError (robustbench_rl.errors). OSError: a file or folder
# that cannot be read or written is the user's environment, not a bug.
USER_ERRORS = (ValueError, OSError, KeyError)

SEED = click.IntRange(0, MAX_SEED)
"""Every seed option: the range numpy and gymnasium accept (see robustbench_rl.seeds.MAX_SEED)."""


class RbrlGroup(click.Group):
    """Turns the library's user-facing errors into click's one-line `Error:` exits."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except ThreatModelViolation:
            raise  # a bug, not bad input: keep the traceback
        except USER_ERRORS as err:
            if isinstance(err, KeyError) and err.args:
                msg = err.args[0]
            elif isinstance(err, OSError) and err.filename and err.strerror:
                msg = f"cannot use {err.filename}: {err.strerror}"
            else:
                msg = str(err)
            raise click.ClickException(str(msg).splitlines()[0] if msg else type(err).__name__) from None


def parse_eps_list(ctx: click.Context | None, param: click.Parameter | None, value: str) -> list[float]:
    """'0.05,0.1' -> [0.05, 0.1], each checked against the threat model's range."""
    out = []
    for item in str(value).split(","):
        item = item.strip()
        if not item:
            continue
        try:
            out.append(check_eps(item))
        except ValueError as err:
            raise click.BadParameter(str(err)) from None
    if not out:
        raise click.BadParameter("give at least one eps, e.g. --eps 0.05,0.1,0.2")
    return out


def parse_attack_list(ctx: click.Context | None, param: click.Parameter | None, value: str) -> list[str]:
    """'random,biggest', 'all' or e.g. 'all,min-q' -> registered attack names, each once (without 'none',
    which always runs). 'standard' is the standard attack set alone (robustbench_rl.threat.STANDARD),
    noted in ctx.meta for the command to fix its settings."""
    if value.strip() == "standard":
        if ctx is not None:
            ctx.meta["standard"] = True
        return list(STANDARD["attacks"])
    from robustbench_rl.attacks.registry import default_attacks, list_attacks

    known = list_attacks()
    names: list[str] = []
    for n in (n.strip() for n in value.split(",")):
        if not n:
            continue
        if n == "standard":
            raise click.BadParameter("'standard' is a whole attack set: give --attack standard alone")
        if n not in known and n != "all":
            raise click.BadParameter(f"unknown attack {n!r}; known attacks: {', '.join(known)}, 'all' or 'standard'")
        names += default_attacks() if n == "all" else [n]
    out = [n for n in dict.fromkeys(names) if n != "none"]
    if not out and "none" not in names:
        raise click.BadParameter("give at least one attack, e.g. --attack random,biggest (or 'all')")
    return out


def parse_attack_options(ctx: click.Context | None, param: click.Parameter | None,
                         value: tuple[str, ...]) -> dict[str, dict]:
    """('lookahead.horizon=8', ...) -> {'lookahead': {'horizon': 8}}; values are read as TOML scalars
    (8, 0.5, true, "text"), a bare word as text. Names and settings are checked against the registry."""
    import tomllib

    from robustbench_rl.attacks.registry import check_attack_options

    options: dict[str, dict] = {}
    for item in value:
        target, sep, raw = item.partition("=")
        name, dot, key = target.strip().partition(".")
        if not (sep and dot and name and key.strip() and raw.strip()):
            raise click.BadParameter(f"{item!r}: use NAME.KEY=VALUE, e.g. lookahead.horizon=8")
        try:
            parsed = tomllib.loads(f"v = {raw.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            parsed = raw.strip()
        options.setdefault(name, {})[key.strip()] = parsed
    try:
        return check_attack_options(options)
    except ValueError as err:
        raise click.BadParameter(str(err)) from None


def check_output(path: str | None, *, folder: bool) -> None:
    """A one-line error now, before any work, when --out cannot be written (see files.check_writable)."""
    if path is not None:
        from robustbench_rl.files import check_writable

        check_writable(path, folder=folder)


def sb3_options(fn):
    """--vecnormalize / --trust-pickle, for commands that load sb3: policies."""
    fn = click.option("--trust-pickle", is_flag=True,
                      help="Allow loading --vecnormalize, a pickle that can run code: only for files you trust.")(fn)
    return click.option("--vecnormalize", default=None, type=click.Path(dir_okay=False, exists=True),
                        help="sb3: policies: SB3 VecNormalize statistics (.pkl; needs --trust-pickle).")(fn)


def cli_device(name: str) -> str:
    """The --device value resolved (auto -> cuda or cpu) and checked, as a one-line usage error."""
    try:
        from robustbench_rl.device import resolve_device

        return str(resolve_device(name))
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--device") from None


def device_option(fn):
    """--device for commands that run a policy and PGD. CPU by default: evaluation batches are at most
    num_envs rows, where a GPU's launch latency loses to the CPU (BENCHMARKS.md, "GPUs")."""
    return click.option("--device", "device_name", default="cpu", show_default=True,
                        help=DEVICE_HELP + " A GPU pays for PGD on batches of hundreds of rows, not at "
                             "8-64 envs.")(fn)
