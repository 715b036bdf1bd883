"""`rbrl fit-adversary`: train (or take from the cache) the learned adversary of a policy at each eps.

The command object is :data:`fit_adversary_cmd`; `rbrl`'s group registers it. Like every command it
imports torch only when it runs.
"""

from __future__ import annotations

from pathlib import Path

import click

from robustbench_rl.cli_options import check_output, cli_device, device_option, parse_eps_list, sb3_options
from robustbench_rl.seeds import MAX_SEED


def _eps_list(ctx: click.Context | None, param: click.Parameter | None, value: str) -> list[float]:
    """The shared --eps parser, each budget once, refusing 0 (it needs no adversary)."""
    out = list(dict.fromkeys(parse_eps_list(ctx, param, value)))
    if 0 in out:
        raise click.BadParameter("eps 0 needs no adversary; give budgets above 0, e.g. --eps 0.1,0.2")
    return out


@click.command("fit-adversary")
@click.option("--policy", "policy_spec", required=True, help="Checkpoint path, zoo:NAME or sb3:model.zip.")
@click.option("--eps", "eps_list", default="0.1", show_default=True, callback=_eps_list,
              help="Comma-separated budgets (normalised action units, 0 < eps <= 2): one adversary each.")
@click.option("--steps", default=None, type=click.IntRange(min=1),
              help="Training transitions per adversary, one TD3 update each [default: 20000].")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0, MAX_SEED),
              help="Training seed (episodes, noise, minibatches, init); also the eval seed of --check.")
@click.option("--num-envs", default=None, type=click.IntRange(1, 1024),
              help="Training episodes run side by side [default: 8].")
@click.option("--hidden", default=None, help="Hidden layer widths of the adversary's networks [default: 256,256].")
@click.option("--cache-dir", default=None, type=click.Path(file_okay=False),
              help="Cache [default: $RBRL_CACHE_DIR, else $XDG_CACHE_HOME/rbrl, else ~/.cache/rbrl].")
@click.option("--out", default=None, type=click.Path(dir_okay=False),
              help="Also copy the adversary to this .safetensors file (one --eps only).")
@click.option("--force", is_flag=True, help="Retrain even when the cache has this adversary.")
@click.option("--check", "check_episodes", default=5, show_default=True, type=click.IntRange(min=0),
              help="Evaluate the policy over this many episodes nominally, under random and under the "
                   "adversary at each eps (0: skip).")
@click.option("--env", "env_id", default=None, help="Env id (default: the policy's; required for sb3: policies).")
@sb3_options
@device_option
def fit_adversary_cmd(policy_spec: str, eps_list: list[float], steps: int | None, seed: int, num_envs: int | None,
                      hidden: str | None, cache_dir: str | None, out: str | None, force: bool, check_episodes: int,
                      env_id: str | None, vecnormalize: str | None, trust_pickle: bool, device_name: str) -> None:
    """Train the rl-adversary attack of a policy: a TD3 agent acting in the eps box, rewarded with minus the
    policy's reward. One adversary per eps, cached and tied to the policy file's sha256; `rbrl attack
    --attack rl-adversary` then uses it without training."""
    if out is not None:
        if Path(out).suffix != ".safetensors":
            raise click.BadParameter("use a .safetensors file name", param_hint="--out")
        if len(eps_list) > 1:
            raise click.BadParameter("--out copies one adversary: give a single --eps", param_hint="--out")
        check_output(out, folder=False)
    from robustbench_rl.attacks.adversary import get_adversary, save_adversary
    from robustbench_rl.attacks.adversary_fit import AdversaryConfig
    from robustbench_rl.cells import load_policy_on
    device = cli_device(device_name)
    opts = {"steps": steps, "num_envs": num_envs, "hidden": hidden, "seed": seed}
    config = AdversaryConfig(**{k: v for k, v in opts.items() if v is not None})  # ValueError: a one-line Error
    policy = load_policy_on(policy_spec, env_id, device=device, vecnormalize=vecnormalize, trust_pickle=trust_pickle)
    adversaries = {}
    for eps in eps_list:
        adv = get_adversary(policy, eps, config=config, cache_dir=cache_dir, progress=True, force=force)
        st = adv.meta["stats"]
        how = "cached" if adv.cached else f"trained in {st['wall_s']:.1f} s"
        last = st.get("victim_return_last_tenth")
        click.echo(f"rl-adversary for {policy.name} at eps {eps:g} ({how}; {adv.meta['steps']} steps; victim return "
                   f"over the last tenth of training {'n/a' if last is None else f'{last:.4g}'}): {adv.path}")
        adversaries[eps] = adv
    if out:
        save_adversary(adversaries[eps_list[0]], out)
        click.echo(f"wrote {out}")
    if check_episodes:
        _check(policy, adversaries, check_episodes, seed)


def _check(policy, adversaries: dict, episodes: int, seed: int) -> None:
    """Print the mean return nominally, and under random and the adversary at each eps, on the same episodes."""
    from robustbench_rl.attacks.registry import make_attack
    from robustbench_rl.rollout import evaluate

    class _Fixed:  # one fitted adversary as an attack object
        name, needs_critic = "rl-adversary", None

        def __init__(self, adv) -> None:
            self.adv = adv

        def perturb(self, obs, act, eps, generator=None):
            return self.adv.perturb(obs, act)

    kw = {"episodes": episodes, "seed": seed, "env_id": policy.env_id}
    nominal = evaluate(policy, None, 0.0, **kw)
    click.echo(f"check over {episodes} episodes (eval seed {seed}): nominal return {nominal.mean:.1f} ± {nominal.std:.1f}")
    for eps, adv in adversaries.items():
        rand = evaluate(policy, make_attack("random"), eps, **kw)
        attacked = evaluate(policy, _Fixed(adv), eps, **kw)
        click.echo(f"  eps {eps:g}: rl-adversary {attacked.mean:.1f} ± {attacked.std:.1f}, "
                   f"random {rand.mean:.1f} ± {rand.std:.1f}")


__all__ = ["fit_adversary_cmd"]
