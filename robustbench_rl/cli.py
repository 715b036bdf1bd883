"""The `rbrl` command line: thin wrappers that parse, call the library and print.

Every expected failure (bad checkpoint, unknown env or attack, bad number) surfaces as one line
``Error: ...`` with a non-zero exit; tracebacks are for bugs only.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

# Only torch-free modules at the top: help, `rbrl info` and usage errors must not wait for torch,
# gymnasium's MuJoCo envs or pandas; each command imports what it runs.
from robustbench_rl.cli_adversary import fit_adversary_cmd
from robustbench_rl.cli_options import (
    SEED,
    RbrlGroup,
    check_output,
    cli_device,
    device_option,
    parse_attack_list,
    parse_attack_options,
    parse_eps_list,
    sb3_options,
)
from robustbench_rl.threat import (
    DEFAULT_PGD_RESTARTS,
    DEFAULT_PGD_START,
    DEFAULT_PGD_STEPS,
    PGD_STARTS,
    STANDARD,
    standard_label,
)


@click.group(cls=RbrlGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="robustbench-rl", prog_name="rbrl")
def main() -> None:
    """robustbench-rl: how badly does a policy break when its actions are perturbed?"""


@main.command()
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the raw metadata as JSON.")
def info(checkpoint: str, as_json: bool) -> None:
    """Print a checkpoint's metadata (algo, env, dims, networks, config, versions)."""
    from robustbench_rl.checkpoint import read_metadata
    from robustbench_rl.zoo import resolve_spec

    meta = read_metadata(resolve_spec(checkpoint))
    if as_json:
        click.echo(json.dumps(meta, indent=2, sort_keys=True))
        return
    from robustbench_rl.summaries import format_metadata

    click.echo(format_metadata(meta))


@main.command()
@click.option("--policy", "policy_spec", required=True, help="Checkpoint path, zoo:NAME or sb3:model.zip.")
@click.option("--eps", "eps_list", default="0.05,0.1,0.2", show_default=True, callback=parse_eps_list,
              help="Comma-separated budgets in normalised action units (0..2).")
@click.option("--attack", "attacks", default="random,biggest", show_default=True, callback=parse_attack_list,
              help="Comma-separated attack names, 'all' (random, biggest, min-q, min-oa-q), or 'standard': "
                   "the versioned standard set behind a headline number (all four, on fitted critics, default "
                   "PGD; its settings cannot be changed). The nominal policy is always evaluated too.")
@click.option("--attack-option", "attack_options", multiple=True, callback=parse_attack_options,
              metavar="NAME.KEY=VALUE", help="A setting of a policy-built attack, e.g. lookahead.horizon=8 "
              "(repeatable; see docs/attacks.md for each attack's settings).")
@click.option("--critic", "critic_source", type=click.Choice(["auto", "own", "fitted"]), default="auto",
              show_default=True, help="Critic for min-q / min-oa-q: the checkpoint's own, one fitted for this "
              "policy (cached), or auto (own when the checkpoint has it, else fitted).")
@click.option("--pgd-steps", default=DEFAULT_PGD_STEPS, show_default=True, type=click.IntRange(min=1),
              help="PGD steps of min-q / min-oa-q.")
@click.option("--pgd-start", default=DEFAULT_PGD_START, show_default=True, type=click.Choice(PGD_STARTS),
              help="First PGD start of min-q / min-oa-q: fgsm (the box corner one signed gradient step from "
                   "the clean action) or random (uniform in the box).")
@click.option("--restarts", default=DEFAULT_PGD_RESTARTS, show_default=True, type=click.IntRange(min=1),
              help="PGD starts of min-q / min-oa-q per state (the best wins; with --pgd-start fgsm the first "
                   "is the FGSM corner, the others random).")
@click.option("--fit-steps", default=None, type=click.IntRange(min=1),
              help="TD steps when a critic must be fitted (default: the standard budget, see `rbrl fit-critic`).")
@click.option("--eps-train", default=None, type=click.FloatRange(0.0, 2.0),
              help="Adversary budget inside a fitted OA critic's target (default 0.1).")
@click.option("--cache-dir", default=None, type=click.Path(file_okay=False),
              help="Fitted-critic cache (default: $RBRL_CACHE_DIR, else ~/.cache/rbrl).")
@click.option("--episodes", default=10, show_default=True, type=click.IntRange(min=1), help="Episodes per cell.")
@click.option("--seed", default=0, show_default=True, type=SEED,
              help="Eval seed: episode i is reset with seed * 2**20 + i (eval seeds never share an episode).")
@click.option("--num-envs", default=8, show_default=True, type=click.IntRange(min=1), help="Episodes run side by side.")
@click.option("--env", "env_id", default=None, help="Env id (default: the one the policy was trained on).")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Write the tidy per-episode rows (.csv or .parquet).")
@sb3_options
@device_option
@click.pass_context
def attack(ctx: click.Context, policy_spec: str, eps_list: list[float], attacks: list[str],
           attack_options: dict[str, dict], critic_source: str, pgd_steps: int,
           pgd_start: str, restarts: int, fit_steps: int | None, eps_train: float | None, cache_dir: str | None, episodes: int,
           seed: int, num_envs: int, env_id: str | None, out: str | None, vecnormalize: str | None,
           trust_pickle: bool, device_name: str) -> None:
    """Evaluate a policy nominally and under every attack at every eps; print a table and sanity flags.

    Critic attacks (min-q, min-oa-q) run PGD on the policy's own critic or on one fitted for this exact
    policy file (fitted on demand, once: later runs take it from the cache). The table and the CSV say
    which critic each row used.
    """
    import pandas as pd

    from robustbench_rl.attacks.critic import CRITIC_ATTACKS, critic_gradient_stats
    from robustbench_rl.attacks.fit import FitConfig, collect_transitions
    from robustbench_rl.attacks.registry import make_policy_attack
    from robustbench_rl.attacks.sanity import format_flags, sanity_flags
    from robustbench_rl.cells import load_policy_on
    from robustbench_rl.results import result_frame, write_table
    from robustbench_rl.rollout import evaluate

    if out is not None and Path(out).suffix not in (".csv", ".parquet"):
        raise click.BadParameter("use a .csv or .parquet file name", param_hint="--out")
    if ctx.meta.get("standard"):
        flags = {"critic_source": "--critic", "pgd_steps": "--pgd-steps", "pgd_start": "--pgd-start",
                 "restarts": "--restarts", "fit_steps": "--fit-steps", "eps_train": "--eps-train"}
        given = [flag for name, flag in flags.items()
                 if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE]
        if given:
            raise click.UsageError(f"--attack standard fixes its settings; drop {', '.join(given)} "
                                   "(or use --attack all to choose them)")
        critic_source, pgd_steps, restarts, pgd_start = (STANDARD["critic"], STANDARD["pgd_steps"],
                                                         STANDARD["pgd_restarts"], STANDARD["pgd_start"])
    unused = sorted(set(attack_options) - set(attacks))
    if unused:
        raise click.BadParameter(f"options for {unused[0]}, which --attack does not run; add it to --attack",
                                 param_hint="--attack-option")
    check_output(out, folder=False)
    device = cli_device(device_name)
    policy = load_policy_on(policy_spec, env_id, device=device, vecnormalize=vecnormalize,
                            trust_pickle=trust_pickle)
    fit_kw = {k: v for k, v in (("steps", fit_steps), ("eps_train", eps_train)) if v is not None}
    fit_config = FitConfig(**fit_kw)
    built = [(name, *make_policy_attack(policy, name, critic=critic_source, pgd_steps=pgd_steps, restarts=restarts,
                                        pgd_start=pgd_start, cache_dir=cache_dir, progress=True, fit_config=fit_config,
                                        options=attack_options.get(name)))
             for name in attacks]
    kw = {"episodes": episodes, "seed": seed, "num_envs": num_envs, "env_id": env_id}
    frames = [result_frame(policy, evaluate(policy, "none", 0.0, **kw))]
    for _, att, source in built:
        frames += [result_frame(policy, evaluate(policy, att, eps, **kw), critic_source=source) for eps in eps_list]
    table = pd.concat(frames, ignore_index=True)
    grad_stats = {}
    critic_built = [(name, att, source) for name, att, source in built if name in CRITIC_ATTACKS]
    if critic_built:
        # states the policy visits (noise-free), for the zero-gradient check
        obs = collect_transitions(policy, 256, num_envs=8, explore_noise=0.0, seed=seed, env_id=env_id).obs
        act = policy.act(obs)
        grad_stats = {(policy.name, name, source): critic_gradient_stats(att.critic, obs, act)
                      for name, att, source in critic_built}
    from robustbench_rl.summaries import format_summary

    click.echo(format_summary(table))
    if ctx.meta.get("standard"):
        click.echo(standard_label() + "; the worst-case rows are its headline numbers")
    click.echo(format_flags(sanity_flags(table, grad_stats)))
    if out:
        write_table(table, out)
        click.echo(f"wrote {len(table)} rows to {out}")


@main.command("fit-critic")
@click.option("--policy", "policy_spec", required=True, help="Checkpoint path, zoo:NAME or sb3:model.zip.")
@click.option("--kind", type=click.Choice(["q", "oa-q"]), default="q", show_default=True,
              help="q: Q^pi of the fixed policy; oa-q: Q_adv^pi (worst case within --eps-train from the next step on).")
@click.option("--eps-train", default=None, type=click.FloatRange(0.0, 2.0),
              help="oa-q: the adversary's budget inside the TD target [default: 0.1].")
@click.option("--steps", default=None, type=click.IntRange(min=1), help="TD steps [default: 10000].")
@click.option("--transitions", default=None, type=click.IntRange(min=2),
              help="Env transitions gathered with the policy [default: 50000].")
@click.option("--seed", default=0, show_default=True, type=SEED, help="Fitting seed (episodes, noise, minibatches, init).")
@click.option("--cache-dir", default=None, type=click.Path(file_okay=False),
              help="Critic cache [default: $RBRL_CACHE_DIR, else $XDG_CACHE_HOME/rbrl, else ~/.cache/rbrl].")
@click.option("--out", default=None, type=click.Path(dir_okay=False),
              help="Also write the critic to this .safetensors file.")
@click.option("--force", is_flag=True, help="Refit even when the cache has this critic.")
@click.option("--check", "check_episodes", default=5, show_default=True, type=click.IntRange(min=0),
              help="q: compare Q(s0, pi(s0)) with Monte-Carlo discounted returns of this many episodes (0: skip).")
@click.option("--env", "env_id", default=None, help="Env id (default: the policy's; required for sb3: policies).")
@sb3_options
@device_option
def fit_critic_cmd(policy_spec: str, kind: str, eps_train: float | None, steps: int | None,
                   transitions: int | None, seed: int, cache_dir: str | None, out: str | None, force: bool,
                   check_episodes: int, env_id: str | None, vecnormalize: str | None, trust_pickle: bool,
                   device_name: str) -> None:
    """Fit Q^pi or Q_adv^pi of a fixed policy by TD learning; cached, tied to the policy file's sha256."""
    from robustbench_rl.attacks.critic_cache import get_fitted_critic, save_critic
    from robustbench_rl.attacks.fit import FitConfig, monte_carlo_returns
    from robustbench_rl.cells import load_policy_on

    if out is not None and Path(out).suffix != ".safetensors":
        raise click.BadParameter("use a .safetensors file name", param_hint="--out")
    check_output(out, folder=False)
    device = cli_device(device_name)
    policy = load_policy_on(policy_spec, env_id, device=device, vecnormalize=vecnormalize,
                            trust_pickle=trust_pickle)
    opts = (("steps", steps), ("transitions", transitions), ("eps_train", eps_train), ("seed", seed))
    config = FitConfig(**{k: v for k, v in opts if v is not None})
    critic = get_fitted_critic(policy, kind, config=config, cache_dir=cache_dir, progress=True, force=force)
    path = critic.path
    st = critic.meta["stats"]
    how = "cached" if critic.cached else f"fitted in {st['wall_s']:.1f} s"
    click.echo(f"{kind} critic for {policy.name} ({how}; {st['transitions']} transitions, "
               f"{critic.meta['fit']['steps']} TD steps, final TD loss {st['td_loss_final']:.4g}): {path}")
    if out:
        save_critic(critic, out)
        click.echo(f"wrote {out}")
    if kind == "q" and check_episodes:
        obs0, mc = monte_carlo_returns(policy, config.gamma, check_episodes, seed=seed, env_id=policy.env_id)
        pred = critic(obs0, policy.act(obs0)).cpu()
        err = (pred - mc).abs().mean().item()
        click.echo(f"check: Q(s0, pi(s0)) mean {pred.mean().item():.2f} vs Monte-Carlo discounted return "
                   f"{mc.mean().item():.2f} over {check_episodes} episodes (mean abs error {err:.2f})")


@main.command()
@click.argument("suite", required=False, type=click.Path(dir_okay=False))
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Run directory (results.parquet/.csv, manifest.json, cells/). Required with a suite file; "
                   "a bundled suite NAME defaults to runs/bench-NAME.")
@click.option("--workers", type=click.IntRange(min=0), default=None,
              help="Worker processes (default: the suite's `workers`; 0 = one per CPU core).")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="torch threads per worker (default: the suite's `threads_per_worker`, 1).")
@click.option("--resume", is_flag=True, help="Require an existing run in --out and continue it "
              "(continuing is already the default when --out holds a run).")
@click.option("--force", is_flag=True, help="Accept a changed suite: keep the finished cells that still "
              "match it, delete the others, run the rest.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="Where cells run: a local process pool, or Ray tasks (extra [ray]).")
@click.option("--address", default=None, help="Ray cluster address (default: start a local Ray).")
def bench(suite: str | None, out_dir: str | None, workers: int | None, threads: int | None, resume: bool,
          force: bool, quiet: bool, executor: str, address: str | None) -> None:
    """Run a benchmark SUITE (TOML): every policy x attack x eps x eval seed, resumable.

    Without SUITE, runs the bundled quick suite (zoo policies, robust vs baseline) into
    runs/bench-quick; a bundled suite can also be named (`rbrl bench quick`).
    """
    from robustbench_rl import zoo
    from robustbench_rl.bench import NO_DEFAULT_SUITE, run_bench
    from robustbench_rl.suite import load_suite

    preset = suite is None or (not Path(suite).exists() and (zoo.SUITES / f"{suite}.toml").is_file())
    if preset:
        name = suite or "quick"
        suite = str(zoo.SUITES / f"{name}.toml")
        if not Path(suite).is_file():
            raise click.ClickException(NO_DEFAULT_SUITE)
        out_dir = out_dir or f"runs/bench-{name}"
    if out_dir is None:
        raise click.UsageError("give a run directory with --out DIR")
    spec = load_suite(suite)
    ex = None
    if executor == "ray" or address:
        from robustbench_rl.executors import default_workers, make_executor

        ex = make_executor(executor, workers or spec.workers or default_workers(),
                           threads or spec.threads_per_worker, address=address)
    try:
        run = run_bench(spec, out_dir, workers=workers or None, threads=threads, resume=resume or None,
                        force=force, progress=False if quiet else None, executor=ex)
    except KeyboardInterrupt:
        raise click.ClickException(f"interrupted; finished cells are kept in {out_dir}/cells: rerun the same "
                                   "command to resume") from None
    click.echo(f"{run.cells_total} cells ({run.cells_skipped} already done, {run.cells_run} run) in "
               f"{run.wall_s:.1f} s; {len(run.table)} rows -> {Path(out_dir) / 'results.parquet'} "
               f"(+ results.csv, manifest.json)")
    click.echo(f"next: rbrl report {out_dir}   (tables, robustness curves and report.html)")


@main.command()
@click.argument("results", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--format", "formats", default="md,tex,csv,html", show_default=True,
              help="Comma-separated outputs: md, tex, csv, html (figures are always written as PNG + SVG).")
@click.option("--eps", "eps_list", default=None, callback=lambda c, p, v: None if v is None else parse_eps_list(c, p, v),
              help="Comma-separated eps to show in the tables and the bar charts (default: all eps in "
                   "the tables, bars at the largest).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Where to write the report (default: DIR/report for one bench directory, else "
                   "NAME-report next to the first input, e.g. td3+oa-td3-report).")
@click.option("--runs", "run_dirs", multiple=True, type=click.Path(file_okay=False, exists=True),
              help="Training run directory (repeatable): adds training curves from its progress.csv.")
@click.option("--by", type=click.Choice(["group", "algo", "policy"]), default="group", show_default=True,
              help="Row / line unit: suite groups (seeds pooled), algorithms, or single policies.")
@click.option("--stat", "statistic", type=click.Choice(["mean", "iqm"]), default="mean", show_default=True,
              help="Statistic shown in tables and plots (CIs are bootstrap 95% of this statistic).")
def report(results: tuple[str, ...], formats: str, eps_list: list[float] | None, out_dir: str | None, run_dirs: tuple[str, ...],
           by: str, statistic: str) -> None:
    """Tables, robustness curves and report.html from bench directories or results files.

    Several RESULTS are pooled into one report, e.g. `rbrl report td3.csv oa-td3.csv` compares two
    policies attacked by separate `rbrl attack` runs."""
    import matplotlib

    matplotlib.use("Agg")  # the report writes files and never opens a window, display or not
    from robustbench_rl.reports import make_report

    fmts = [f.strip() for f in formats.split(",") if f.strip()]
    paths = make_report(list(results), out_dir, formats=fmts, eps=eps_list, run_dirs=run_dirs, by=by, statistic=statistic)
    where = paths[0].parent if paths else out_dir
    html = [p for p in paths if p.name == "report.html"]
    click.echo(f"wrote {len(paths)} files to {where}" + (f"; open {html[0]}" if html else ""))


class LazyCommand(click.Command):
    """A command whose options are built on first use: `rbrl train`'s come from every algorithm's
    hyperparameter dataclass, which means importing the trainers (torch), and `rbrl --help` should
    not pay for that. Listing the commands reads only the short help given here."""

    def __init__(self, name: str, build, short_help: str) -> None:
        super().__init__(name, short_help=short_help, help=short_help)
        self._build = build
        self._real: click.Command | None = None

    def real(self) -> click.Command:
        if self._real is None:
            self._real = self._build()
        return self._real

    def make_context(self, info_name, args, parent=None, **extra):
        return self.real().make_context(info_name, args, parent=parent, **extra)

    def get_params(self, ctx):
        return self.real().get_params(ctx)

    def invoke(self, ctx):
        return self.real().invoke(ctx)


def _build_train() -> click.Command:
    from robustbench_rl.cli_train import build_train_command

    return build_train_command()


main.add_command(LazyCommand("train", _build_train, "Train a policy (td3, oa-td3, ppo, oa-ppo) into a run directory."))
main.add_command(fit_adversary_cmd)


@main.group("zoo")
def zoo_group() -> None:
    """The bundled reference policies: list them, or show one's manifest entry."""


@zoo_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON instead of a table.")
def zoo_list(as_json: bool) -> None:
    """A table of the bundled policies (use them as zoo:NAME anywhere a policy is asked for)."""
    from robustbench_rl import zoo

    rows = zoo.summary_rows()
    click.echo(json.dumps(rows, indent=1) if as_json else zoo.format_table(rows))


@zoo_group.command("show")
@click.argument("name")
def zoo_show(name: str) -> None:
    """The manifest entry of zoo:NAME: env, algo, config, nominal return, training cost, file hashes."""
    from robustbench_rl import zoo

    try:
        entry = zoo.entry(name.removeprefix("zoo:"))
    except zoo.ZooError as err:
        raise click.ClickException(str(err)) from None
    click.echo(json.dumps({"name": name.removeprefix("zoo:"), **entry}, indent=1))


if __name__ == "__main__":
    main()
