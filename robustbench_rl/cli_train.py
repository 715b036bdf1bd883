"""`rbrl train`: its options are generated from the run options and every registered algorithm's
hyperparameter dataclass, so the command is built on first use (see :class:`robustbench_rl.cli.LazyCommand`)."""

from __future__ import annotations

from pathlib import Path

import click

from robustbench_rl.files import check_writable


def build_train_command() -> click.Command:
    """`rbrl train`: its options are generated from RunConfig and every registered algorithm's dataclass."""
    from robustbench_rl.config import cli_options

    options, run_names, hp_names = cli_options()

    @click.pass_context
    def train(ctx: click.Context, out: str, config_file: str | None, resume: bool, progress: bool | None,
              seeds: str | None, executor: str, workers: int | None, address: str | None, **values) -> None:
        """Train a policy: rbrl train --algo td3 --env Pendulum-v1 --steps 20000 --out runs/pend.

        Writes RUN_DIR/policy.safetensors (final), periodic checkpoints, config.toml, progress.csv and the
        resume state. Values come from the algorithm's defaults, then --config FILE.toml, then the
        options given here. --resume continues a killed run from its last checkpoint and refuses a
        changed config (--steps may be raised to extend a run).
        """
        from robustbench_rl.config import resolve_config
        from robustbench_rl.training import train as run_training

        run_vals = {k: v for k, v in values.items() if k in run_names and v is not None}
        hp_vals = {k: v for k, v in values.items() if k in hp_names and v is not None}
        check_writable(out, folder=True)
        if seeds is not None:
            train_seeds(out, seeds, run_vals, hp_vals, config_file, resume, executor, workers, address, progress)
            return
        if executor != "local" or address:
            raise click.UsageError("--executor ray and --address train several seeds: give --seeds 0,1,2")
        run, hp = resolve_config(out, run_vals, hp_vals, config_file=config_file, resume=resume)
        result = run_training(run, hp, out, resume=resume, progress=progress, echo=click.echo)
        if result.already_complete:
            click.echo(f"{out} is already complete: {result.steps} steps of {run.algo} on {run.env}; nothing to do "
                       "(pass --resume --steps N with a larger N to extend it)")
            click.echo(f"policy: {result.policy_path}")
            return
        row = result.last_row
        msg = f"done: {result.steps} steps of {run.algo} on {run.env} in {result.wall_s:.0f} s"
        sps = row.get("steps_per_s")
        if sps is not None and sps == sps:  # not NaN
            msg += f" ({sps:.0f} steps/s last interval)"
        if result.last_eval is not None:
            msg += f"; final eval return {result.last_eval:.2f}"
        click.echo(msg)
        click.echo(f"policy: {result.policy_path}")

    cmd_params = [
        click.option("--out", required=True, type=click.Path(file_okay=False), help="Run directory to write."),
        click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
                     help="TOML config ([run] and [hyperparameters] tables, as in a run's config.toml)."),
        click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint."),
        click.option("--progress/--no-progress", default=None, help="Progress bar (default: when stderr is a terminal)."),
        click.option("--seeds", default=None, help="Train several seeds (e.g. 0,1,2), one run directory each: "
                     "OUT/seed_S. Replaces --seed."),
        click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
                     help="With --seeds: local processes, or Ray tasks (extra [ray])."),
        click.option("--workers", type=click.IntRange(min=1), default=None,
                     help="With --seeds: seeds trained at once (default: one per CPU core, at most one per seed)."),
        click.option("--address", default=None, help="With --executor ray: a Ray cluster address (default: local Ray)."),
        *options,
    ]
    for deco in reversed(cmd_params):
        train = deco(train)
    return click.command(name="train")(train)


def train_seeds(out: str, seeds: str, run_vals: dict, hp_vals: dict, config_file: str | None, resume: bool,
                 executor: str, workers: int | None, address: str | None, progress: bool | None) -> None:
    """Resolve one run per seed (all checks before any training), then train them on an executor,
    with one progress bar per seed (read from each run's progress.csv while it trains elsewhere)."""
    import sys

    from tqdm.auto import tqdm

    from robustbench_rl.config import resolve_config
    from robustbench_rl.executors import SerialExecutor, default_workers, make_executor
    from robustbench_rl.seeds import check_seed
    from robustbench_rl.training import logged_steps, train_task

    try:
        seed_list = sorted({check_seed(int(x), "each seed") for x in seeds.split(",") if x.strip()})
    except ValueError as err:
        hint = str(err) if "each seed" in str(err) else f"seeds must be comma-separated integers, got {seeds!r}"
        raise click.BadParameter(hint, param_hint="--seeds") from None
    if not seed_list:
        raise click.BadParameter("give at least one seed, e.g. --seeds 0,1,2", param_hint="--seeds")
    if "seed" in run_vals:
        raise click.UsageError("give either --seed or --seeds, not both")
    show = sys.stderr.isatty() if progress is None else progress
    tasks = []
    for seed in seed_list:
        run_dir = str(Path(out) / f"seed_{seed}")
        run, hp = resolve_config(run_dir, {**run_vals, "seed": seed}, hp_vals, config_file=config_file, resume=resume)
        tasks.append((run, hp, run_dir, resume))
    n = min(workers or default_workers(), len(tasks))
    ex = make_executor(executor, n, threads=max(1, tasks[0][0].threads), address=address)
    click.echo(f"training seeds {', '.join(map(str, seed_list))} of {tasks[0][0].algo} on {tasks[0][0].env} "
               f"({type(ex).__name__}, {n} at a time)")
    if isinstance(ex, SerialExecutor):  # each seed trains here in turn and draws its own bar
        tasks = [(*t, show) for t in tasks]
        bars = {}
    else:
        bars = {t[0].seed: tqdm(total=t[0].steps, initial=min(logged_steps(t[2]), t[0].steps), unit="step",
                                desc=f"seed {t[0].seed}", position=i, dynamic_ncols=True, disable=not show)
                for i, t in enumerate(tasks)}

    def tick() -> None:
        for (run, _hp, run_dir, *_), bar in zip(tasks, bars.values(), strict=True):
            bar.update(max(0, min(logged_steps(run_dir), run.steps) - bar.n))

    try:
        for _task, summary in ex.map_unordered(train_task, tasks, tick=tick if bars and show else None):
            if summary["seed"] in bars:
                bar = bars[summary["seed"]]
                bar.update(max(0, min(summary["steps"], bar.total) - bar.n))
            if summary.get("already_complete"):
                msg = f"seed {summary['seed']}: already complete ({summary['steps']} steps) -> {summary['policy']}"
            else:
                ev = "" if summary["last_eval"] is None else f", final eval return {summary['last_eval']:.2f}"
                msg = f"seed {summary['seed']}: {summary['steps']} steps in {summary['wall_s']:.0f} s{ev} -> {summary['policy']}"
            tqdm.write(msg, file=sys.stdout) if bars and show else click.echo(msg)
    finally:
        for bar in bars.values():
            bar.close()
