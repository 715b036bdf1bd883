"""Package finished zoo runs into robustbench_rl/zoo: policy files, fitted critics, manifest entries.

    python benchmarks/zoo/package.py runs/zoo                 # every finished run not yet packaged
    python benchmarks/zoo/package.py runs/zoo --only hopper-  # names starting with a prefix
    python benchmarks/zoo/package.py runs/zoo --refresh       # re-package runs already in the manifest
    python benchmarks/zoo/package.py --refit-critics          # refit shipped critics after a fit change
    python benchmarks/zoo/package.py --repack                 # re-save shipped policies in the zoo's format

A run OUT/NAME/seed_S (NAME a config in robustbench_rl/zoo/configs) with a final policy.safetensors
becomes zoo:NAME-sS. For each, this script copies the policy (actor and the critics an `own` attack
needs: the training run's policy file already holds nothing else; the critics stored in float16, see
OWN_CRITIC_DTYPE), fits Q^pi and Q_adv^pi at the
default fitting budget into the zoo's bundled critic cache (so benchmarking the zoo fits nothing),
evaluates the nominal return (20 episodes, eval seed 0) and records it all in manifest.json with the
sha256 of every file and the run's training wall time. The manifest is rewritten after every policy,
atomically, so a stopped packaging run loses at most the policy in flight.

--refit-critics needs no run directories: for every shipped policy whose bundled critic is missing at
the current default fitting settings (the settings are part of a critic's file name, so a change of
the fit leaves the old files unmatched), it fits the critic from the zoo's own policy file, removes
the critic files no longer matched, and updates the manifest's checksums. A stopped refit resumes.

--repack re-saves every shipped policy whose own critics are not yet in OWN_CRITIC_DTYPE. Its actor and
observation normaliser are checked bit for bit against the old file, so its bundled fitted critics
(which depend on nothing else) stay valid: they move to the new file's sha256 without a refit.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tomllib
from pathlib import Path

import pandas as pd
import torch

from robustbench_rl import zoo
from robustbench_rl.attacks.critic_cache import critic_cache_path, get_fitted_critic
from robustbench_rl.attacks.fit import KINDS, FitConfig
from robustbench_rl.checkpoint import load_checkpoint, save_checkpoint
from robustbench_rl.files import atomic_write_bytes, file_sha256
from robustbench_rl.policy import load_policy
from robustbench_rl.provenance import machine_info
from robustbench_rl.rollout import evaluate

NOMINAL_EPISODES = 20
OWN_CRITIC_DTYPE = torch.float16
"""How a zoo policy stores the critics only an ``own`` attack uses: half the bytes of float32, within
~1e-4 of the float32 values (they load back as float32). The actor and the normaliser, which decide
the policy's actions, stay at full precision."""
OWN_CRITIC_PREFIXES = ("critic.", "critic_adv.")
CONDITIONS = ("two runs at once on the 2 cores (benchmarks/zoo/train.sh runs/zoo 2), other work alongside: "
              "wall times are upper bounds, compare them only within the zoo")


def machine() -> str:
    """The CPU model and core count, as a short label for the manifest."""
    info = machine_info()
    return f"{info['cpu'] or platform.machine()}, {info['cpu_count']} cores"


def training_cost(run_dir: Path) -> dict:
    """Wall time and speed of a finished run from its progress.csv (wall_s accumulates over resumes)."""
    progress = pd.read_csv(run_dir / "progress.csv")
    last = progress.iloc[-1]
    wall = float(last["wall_s"])
    return {"wall_s": round(wall, 1), "steps": int(last["step"]),
            "steps_per_s": round(float(last["step"]) / wall, 2) if wall > 0 else None,
            "final_eval_return": None if pd.isna(last.get("eval_return")) else float(last["eval_return"])}


def bundle_critics(policy) -> tuple[dict[str, str], int]:
    """The policy's critics at the default fit settings in the zoo's critic cache, fitted where missing;
    returns ({path relative to the zoo: sha256}, how many were fitted)."""
    files, fitted = {}, 0
    for kind in KINDS:
        critic = get_fitted_critic(policy, kind, cache_dir=zoo.ZOO_DIR, progress=True)
        assert critic_cache_path(policy, kind, FitConfig(), zoo.ZOO_DIR) == Path(critic.path)
        files[Path(critic.path).relative_to(zoo.ZOO_DIR).as_posix()] = file_sha256(critic.path)
        fitted += not critic.cached
    return files, fitted


def store_policy(dest: Path, tensors: dict, meta: dict) -> str:
    """Write a zoo policy file (own critics in OWN_CRITIC_DTYPE, everything else as given); its sha256."""
    tensors = {k: v.to(OWN_CRITIC_DTYPE) if k.startswith(OWN_CRITIC_PREFIXES) else v for k, v in tensors.items()}
    save_checkpoint(dest, tensors, meta)
    os.chmod(dest, 0o644)
    return file_sha256(dest)


def own_critic_storage(has_own_critics: bool) -> dict:
    """The manifest's note of how a policy's own critics are stored (nothing when it has none)."""
    return {"own_critic_dtype": str(OWN_CRITIC_DTYPE).removeprefix("torch.")} if has_own_critics else {}


def write_manifest(manifest: dict) -> None:
    """Rewrite manifest.json atomically (a stopped run leaves the previous, complete version)."""
    atomic_write_bytes(zoo.MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode())


def package_run(name: str, seed: int, run_dir: Path, threads: int) -> dict:
    """Copy one finished run into the zoo, fit its critics and evaluate it; returns its manifest entry."""
    zoo_name = f"{name}-s{seed}"
    dest = zoo.ZOO_DIR / f"{zoo_name}.safetensors"
    # Re-saved rather than copied: the same metadata and acting tensors (own critics in OWN_CRITIC_DTYPE),
    # plus the tensor checksum that load_policy verifies (files written by older rbrl versions lack it).
    sha = store_policy(dest, *load_checkpoint(run_dir / "policy.safetensors"))
    policy = load_policy(str(dest))
    config = tomllib.loads((run_dir / "config.toml").read_text())
    torch.set_num_threads(threads)
    files = {dest.name: sha, **bundle_critics(policy)[0]}
    res = evaluate(policy, "none", 0.0, episodes=NOMINAL_EPISODES, seed=0, num_envs=8, progress=False)
    return {
        "env_id": policy.env_id, "algo": config["run"]["algo"], "seed": seed,
        "steps": int(config["run"]["steps"]), "config": f"configs/{name}.toml",
        "hyperparameters": config.get("hyperparameters", {}),
        "nominal": {"mean": round(res.mean, 3), "std": round(res.std, 3), "episodes": NOMINAL_EPISODES,
                    "eval_seed": 0, "returns": [round(float(r), 3) for r in res.returns]},
        "training": {**training_cost(run_dir), "machine": machine(), "threads": 1,
                     "conditions": CONDITIONS,
                     "torch": torch.__version__, "python": platform.python_version()},
        "files": files,
        **own_critic_storage(bool(policy.critics)),
    }


def refit_critics(only: str, threads: int) -> int:
    """Fit every bundled critic missing at the current fit settings and drop the stale ones; returns
    how many critics were fitted."""
    torch.set_num_threads(threads)
    manifest = zoo.read_manifest()
    fitted = 0
    for zoo_name, entry in manifest["policies"].items():
        if not zoo_name.startswith(only):
            continue
        critics, n = bundle_critics(load_policy(f"zoo:{zoo_name}"))
        files = {rel: sha for rel, sha in entry["files"].items() if not rel.startswith("critics/")} | critics
        for rel in set(entry["files"]) - set(files):
            (zoo.ZOO_DIR / rel).unlink(missing_ok=True)
        entry["files"] = files
        write_manifest(manifest)
        fitted += n
    print(f"fitted {fitted} critics", file=sys.stderr)
    return fitted


def repack(only: str) -> int:
    """Re-save the shipped policies whose own critics are not in OWN_CRITIC_DTYPE, carrying their
    bundled critics over to the new file's sha256; returns how many policies were re-saved."""
    manifest = zoo.read_manifest()
    done = 0
    for zoo_name, entry in manifest["policies"].items():
        if not zoo_name.startswith(only):
            continue
        dest = zoo.ZOO_DIR / f"{zoo_name}.safetensors"
        tensors, meta = load_checkpoint(dest)
        if all(v.dtype == OWN_CRITIC_DTYPE for k, v in tensors.items() if k.startswith(OWN_CRITIC_PREFIXES)):
            continue  # already repacked, or no own critics
        old_sha = file_sha256(dest)
        new_sha = store_policy(dest, tensors, meta)
        again, _ = load_checkpoint(dest)
        kept = [k for k in tensors if not k.startswith(OWN_CRITIC_PREFIXES)]
        assert all(torch.equal(again[k], tensors[k]) for k in kept), f"{zoo_name}: acting tensors changed"
        files = {dest.name: new_sha}
        for rel in entry["files"]:
            if not rel.startswith("critics/"):
                continue
            old = zoo.ZOO_DIR / rel
            critic_tensors, critic_meta = load_checkpoint(old)
            assert critic_meta["policy_sha256"] == old_sha, f"{rel} is not tied to {dest.name}"
            new = zoo.ZOO_DIR / "critics" / new_sha[:16] / old.name
            new.parent.mkdir(exist_ok=True)
            save_checkpoint(new, critic_tensors, {**critic_meta, "policy_sha256": new_sha})
            os.chmod(new, 0o644)
            files[new.relative_to(zoo.ZOO_DIR).as_posix()] = file_sha256(new)
            old.unlink()
            if not any(old.parent.iterdir()):
                old.parent.rmdir()
        entry["files"] = files
        entry.update(own_critic_storage(True))  # a policy without own critics was skipped above
        write_manifest(manifest)
        done += 1
        print(f"repacked {zoo_name}: {old_sha[:12]} -> {new_sha[:12]}", file=sys.stderr, flush=True)
    return done


def finished_runs(runs: Path, configs: Path, only: str = "") -> list[tuple[str, int, Path]]:
    """(config name, seed, run directory) of every finished run under `runs` (RUNS/NAME/seed_S with a
    final policy.safetensors, NAME a config in `configs`) whose zoo name NAME-sS starts with `only`."""
    found = []
    for config in sorted(configs.glob("*.toml")):
        name = config.stem
        for run_dir in sorted(p for p in (runs / name).glob("seed_*") if p.is_dir()):
            seed = int(run_dir.name.removeprefix("seed_"))
            if f"{name}-s{seed}".startswith(only) and (run_dir / "policy.safetensors").is_file():
                found.append((name, seed, run_dir))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="?", help="The zoo's run root (benchmarks/zoo/train.sh's output).")
    parser.add_argument("--only", default="", help="Package only names starting with this prefix.")
    parser.add_argument("--refresh", action="store_true", help="Re-package runs already in the manifest.")
    parser.add_argument("--refit-critics", action="store_true",
                        help="Refit the shipped policies' critics missing at the current fit settings.")
    parser.add_argument("--repack", action="store_true",
                        help="Re-save shipped policies with their own critics in the zoo's storage dtype.")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for fitting (default 2).")
    args = parser.parse_args(argv)
    if args.refit_critics:
        refit_critics(args.only, args.threads)
        return 0
    if args.repack:
        print(f"repacked {repack(args.only)} policies", file=sys.stderr)
        return 0
    if args.runs is None:
        parser.error("give the zoo's run root (or --refit-critics / --repack)")
    manifest = zoo.read_manifest()
    done = 0
    for name, seed, run_dir in finished_runs(args.runs, zoo.ZOO_DIR / "configs", args.only):
        zoo_name = f"{name}-s{seed}"
        if zoo_name in manifest["policies"] and not args.refresh:
            continue
        print(f"packaging {zoo_name} from {run_dir}", file=sys.stderr, flush=True)
        manifest["policies"][zoo_name] = package_run(name, seed, run_dir, args.threads)
        manifest["policies"] = dict(sorted(manifest["policies"].items()))
        write_manifest(manifest)
        entry = manifest["policies"][zoo_name]["nominal"]
        print(f"  nominal return {entry['mean']:.1f} +- {entry['std']:.1f} ({entry['episodes']} episodes)",
              file=sys.stderr, flush=True)
        done += 1
    total = sum(p.stat().st_size for p in zoo.ZOO_DIR.rglob("*.safetensors"))
    print(f"packaged {done} policies; the zoo holds {len(manifest['policies'])} policies, "
          f"{total / 2**20:.1f} MiB of weights", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
