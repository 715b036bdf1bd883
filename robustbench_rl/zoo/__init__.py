"""The reference zoo: pretrained policies bundled with rbrl, their fitted critics and a manifest.

Every policy ``zoo:NAME`` is one checkpoint ``NAME.safetensors`` in this package (actor plus the critics
an ``own`` attack needs, those stored in float16: they load back as float32). ``critics/`` is a
read-only cache of fitted critics in the layout of the user cache
(``critics/<policy sha256[:16]>/<kind>-<settings hash>.safetensors``), fitted at the default budget, so
benchmarking the zoo fits nothing. ``manifest.json`` records, per policy: env, algo, training seed and
steps, the config it was trained from (``configs/``), its nominal return, its training wall time and
machine, and the sha256 of each of its files. Names read ``<env>-<algo>-s<seed>``, for example
``zoo:hopper-oa-td3-s0``.
"""

from __future__ import annotations

import json
import os
from importlib.resources import files
from pathlib import Path
from typing import Any

from robustbench_rl.errors import CheckpointError

ZOO_DIR = Path(str(files(__name__)))
MANIFEST = ZOO_DIR / "manifest.json"
CONFIGS = ZOO_DIR / "configs"
SUITES = ZOO_DIR / "suites"
MANIFEST_FORMAT = 1


class ZooError(ValueError):
    """A zoo name that is not bundled, or a bundled file that does not match the manifest."""


def zoo_path(name: str) -> Path:
    """Path of a bundled checkpoint ``zoo:NAME``; CheckpointError listing the bundled names if absent."""
    path = ZOO_DIR / f"{name}.safetensors"
    if not path.is_file():
        known = sorted(p.stem for p in ZOO_DIR.glob("*.safetensors"))
        raise CheckpointError(f"no bundled policy zoo:{name}; bundled: {', '.join(known) or 'none yet'}")
    return path


def resolve_spec(spec: str) -> Path:
    """Turn a policy spec (path or ``zoo:NAME``) into a file path."""
    if spec.startswith("zoo:"):
        return zoo_path(spec[4:])
    return Path(os.path.expanduser(spec))


def read_manifest() -> dict[str, Any]:
    """The manifest as a dict ``{"format": 1, "policies": {name: entry}}`` (empty when none is bundled)."""
    if not MANIFEST.is_file():
        return {"format": MANIFEST_FORMAT, "policies": {}}
    data = json.loads(MANIFEST.read_text())
    if data.get("format") != MANIFEST_FORMAT:
        raise ZooError(f"{MANIFEST}: unknown zoo manifest format {data.get('format')!r}; reinstall rbrl")
    return data


def names() -> list[str]:
    """Names of the bundled policies, sorted."""
    return sorted(read_manifest()["policies"])


def entry(name: str) -> dict[str, Any]:
    """The manifest entry of ``zoo:NAME``; ZooError listing the bundled names when it is not bundled."""
    policies = read_manifest()["policies"]
    if name not in policies:
        raise ZooError(f"no bundled policy zoo:{name}; bundled: {', '.join(sorted(policies)) or 'none'} "
                       "(see `rbrl zoo list`)")
    return policies[name]


def verify(name: str) -> None:
    """Check every file of ``zoo:NAME`` against the sha256 the manifest records (ZooError otherwise)."""
    from robustbench_rl.files import file_sha256

    for rel, sha in entry(name)["files"].items():
        path = ZOO_DIR / rel
        if not path.is_file():
            raise ZooError(f"zoo:{name}: bundled file {rel} is missing; reinstall rbrl")
        if file_sha256(path) != sha:
            raise ZooError(f"zoo:{name}: bundled file {rel} does not match its sha256 in the manifest "
                           "(damaged install); reinstall rbrl")


def summary_rows() -> list[dict[str, Any]]:
    """One flat row per bundled policy (name, env, algo, seed, steps, nominal return, training time)."""
    rows = []
    for name, e in sorted(read_manifest()["policies"].items()):
        nominal, training = e["nominal"], e.get("training", {})
        rows.append({"name": name, "env_id": e["env_id"], "algo": e["algo"], "seed": e["seed"], "steps": e["steps"],
                     "nominal_mean": nominal["mean"], "nominal_std": nominal["std"],
                     "episodes": nominal["episodes"], "train_wall_s": training.get("wall_s")})
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """`rows` from :func:`summary_rows` as an aligned text table (the output of `rbrl zoo list`)."""
    if not rows:
        return "no bundled policies"
    cells = [("name", "env", "algo", "seed", "steps", "nominal return", "training")]
    for r in rows:
        wall = r["train_wall_s"]
        cells.append((r["name"], r["env_id"], r["algo"], str(r["seed"]), f"{r['steps']:,}",
                      f"{r['nominal_mean']:.1f} ± {r['nominal_std']:.1f}",
                      f"{wall / 60:.0f} min" if wall is not None else "?"))
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells)
