"""Every command on bad input: a non-zero exit, exactly one `Error:` line, no traceback, no new file.

Each case gets a fresh workspace of tiny inputs (Ledge / Pendulum checkpoints, suites, results tables,
an existing file and a non-empty folder) and compares it before and after, so a case that creates,
replaces or half-writes anything fails, whatever its message, without disturbing the next case.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import write_constant_ledge_policy, write_random_checkpoint

from robustbench_rl.cli import main
from robustbench_rl.results import RESULT_COLUMNS

BIG = str(2**70)
JUNK = b"\x80\x04\x95\x00\xff\xfe binary \x00\x01 not text"


def _unwritable_dir(root: Path) -> Path | None:
    """A folder this process cannot create files in: a read-only folder, or for root (who ignores
    permissions) a kernel filesystem that refuses new files."""
    if os.geteuid() != 0:
        locked = root / "locked"
        locked.mkdir()
        locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
        return locked
    for candidate in (Path("/sys/kernel"), Path("/sys")):
        try:
            with tempfile.TemporaryFile(dir=candidate):
                pass
        except OSError:
            return candidate
    return None


def _suite(path: Path, policy: Path, extra: str = "", *, table: str = "", episodes: int = 1) -> Path:
    path.write_text(f'attacks = ["random", "min-q"]\neps = [0.1]\nepisodes = {episodes}\nnum_envs = 1\n{extra}\n'
                    f'{table}\n[[policies]]\nspec = "{policy}"\n')
    return path


@pytest.fixture
def ws(tmp_path):
    """The workspace: paths by name, plus W (the workspace) and LOCKED (an unwritable folder or None)."""
    w = tmp_path / "ws"
    w.mkdir()
    p = {"W": w}
    p["ledge"] = write_constant_ledge_policy(w / "ledge.safetensors", 0.45)  # no critics
    p["pend"] = write_random_checkpoint(w / "pend.safetensors", critics=("critic",))
    (w / "junk.bin").write_bytes(JUNK)
    (w / "junk.csv").write_bytes(JUNK)
    (w / "afile").write_text("a file, not a folder\n")
    (w / "busy").mkdir()
    (w / "busy" / "notes.txt").write_text("someone's notes\n")
    (w / "folder.csv").mkdir()
    rows = [{"policy": "p", "algo": "td3", "env_id": "rbrl/Ledge-v0", "train_seed": 0, "attack": att,
             "critic_source": "none", "eps": eps, "eval_seed": 0, "episode": i, "reset_seed": i,
             "return": 0.4 - eps, "length": 1} for att, eps in (("none", 0.0), ("random", 0.1)) for i in range(3)]
    pd.DataFrame(rows)[RESULT_COLUMNS].to_csv(w / "good.csv", index=False)
    clash = pd.DataFrame(rows)[RESULT_COLUMNS]
    clash["return"] += 1.0  # the same policy name and episodes with other returns: not poolable
    clash.to_csv(w / "clash.csv", index=False)
    nan = pd.DataFrame(rows)[RESULT_COLUMNS]
    nan.loc[1, "return"] = float("nan")
    nan.to_csv(w / "nan.csv", index=False)
    pd.DataFrame({"a": [1], "b": [2]}).to_csv(w / "cols.csv", index=False)
    suites = w / "suites"
    suites.mkdir()
    _suite(suites / "nan_step.toml", p["pend"], "pgd_step_size = nan")
    _suite(suites / "inf_step.toml", p["pend"], "pgd_step_size = inf")
    _suite(suites / "own.toml", p["ledge"], 'critic = "own"')
    _suite(suites / "neg_seed.toml", p["pend"], "eval_seeds = [-1]")
    _suite(suites / "big_seed.toml", p["pend"], f"eval_seeds = [{2**40}]")
    _suite(suites / "many.toml", p["pend"], episodes=2**21)
    _suite(suites / "fit_inf.toml", p["ledge"], table="[fit]\nlr = inf")
    _suite(suites / "missing.toml", w / "nope.safetensors")
    _suite(suites / "good.toml", p["pend"])
    (suites / "junk.toml").write_bytes(JUNK)
    p["LOCKED"] = _unwritable_dir(w)
    yield p
    if p["LOCKED"] is not None and p["LOCKED"].is_relative_to(w):
        p["LOCKED"].chmod(stat.S_IRWXU)


TRAIN = ["train", "--algo", "td3", "--env", "rbrl/Ledge-v0", "--steps", "20", "--no-progress"]

# (id, args with {name} placeholders from the workspace, text the one error line must contain)
CASES = [
    ("top-unknown-command", ["nosuch"], "No such command"),
    # info
    ("zoo-show-unknown", ["zoo", "show", "zoo:nope"], "no bundled policy zoo:nope"),
    ("zoo-unknown-subcommand", ["zoo", "fetch"], "No such command 'fetch'"),
    ("info-missing", ["info", "{W}/nope.safetensors"], "checkpoint not found"),
    ("info-binary", ["info", "{W}/junk.bin"], "not a valid safetensors checkpoint"),
    ("info-folder", ["info", "{W}/busy"], "is a directory"),
    # attack
    ("attack-seed-negative", ["attack", "--policy", "{ledge}", "--seed", "-1"], "not in the range 0<=x<=4294967295"),
    ("attack-seed-huge", ["attack", "--policy", "{ledge}", "--seed", BIG], "not in the range 0<=x<=4294967295"),
    ("attack-out-under-a-file", ["attack", "--policy", "{ledge}", "--out", "{W}/afile/x.csv"],
     "afile is a file, not a folder"),
    ("attack-out-unwritable", ["attack", "--policy", "{ledge}", "--out", "{LOCKED}/x.csv"], "cannot write in"),
    ("attack-out-is-a-folder", ["attack", "--policy", "{ledge}", "--out", "{W}/folder.csv"], "is a directory"),
    ("attack-out-suffix", ["attack", "--policy", "{ledge}", "--out", "{W}/x.txt"], "use a .csv or .parquet"),
    ("attack-all-and-unknown", ["attack", "--policy", "{ledge}", "--attack", "all,foo"], "unknown attack 'foo'"),
    ("attack-eps-nan", ["attack", "--policy", "{ledge}", "--eps", "nan"], "eps must be in [0, 2.0]"),
    ("attack-episodes-zero", ["attack", "--policy", "{ledge}", "--episodes", "0"], "not in the range x>=1"),
    ("attack-binary-policy", ["attack", "--policy", "{W}/junk.bin"], "not a valid safetensors checkpoint"),
    ("attack-missing-policy", ["attack", "--policy", "{W}/nope.safetensors"], "checkpoint not found"),
    ("attack-unknown-env", ["attack", "--policy", "{ledge}", "--env", "Nope-v0"], "Nope-v0"),
    ("attack-other-sized-env", ["attack", "--policy", "{ledge}", "--env", "Pendulum-v1"], "trained for rbrl/Ledge-v0"),
    ("attack-own-critic-missing", ["attack", "--policy", "{ledge}", "--attack", "min-q", "--critic", "own"],
     "has no 'q' critic"),
    ("attack-cache-unwritable", ["attack", "--policy", "{ledge}", "--attack", "min-q", "--critic", "fitted",
                                 "--cache-dir", "{LOCKED}/cache"], "cannot save fitted critics"),
    ("attack-device", ["attack", "--policy", "{ledge}", "--device", "tpu"], "unknown device 'tpu'"),
    # fit-critic
    ("fit-seed-negative", ["fit-critic", "--policy", "{ledge}", "--seed", "-1"], "not in the range 0<=x<=4294967295"),
    ("fit-seed-huge", ["fit-critic", "--policy", "{ledge}", "--seed", BIG], "not in the range 0<=x<=4294967295"),
    ("fit-out-under-a-file", ["fit-critic", "--policy", "{ledge}", "--out", "{W}/afile/c.safetensors"],
     "afile is a file, not a folder"),
    ("fit-out-unwritable", ["fit-critic", "--policy", "{ledge}", "--out", "{LOCKED}/c.safetensors"], "cannot write in"),
    ("fit-out-suffix", ["fit-critic", "--policy", "{ledge}", "--out", "{W}/c.txt"], "use a .safetensors file name"),
    ("fit-cache-unwritable", ["fit-critic", "--policy", "{ledge}", "--cache-dir", "{LOCKED}/cache"],
     "cannot save fitted critics"),
    ("fit-cache-under-a-file", ["fit-critic", "--policy", "{ledge}", "--cache-dir", "{W}/afile/cache"],
     "cannot save fitted critics"),
    ("fit-kind", ["fit-critic", "--policy", "{ledge}", "--kind", "v"], "'v' is not one of"),
    ("fit-transitions", ["fit-critic", "--policy", "{ledge}", "--transitions", "1"], "not in the range x>=2"),
    ("fit-missing-policy", ["fit-critic", "--policy", "{W}/nope.safetensors"], "checkpoint not found"),
    ("fit-binary-policy", ["fit-critic", "--policy", "{W}/junk.bin"], "not a valid safetensors checkpoint"),
    # fit-adversary
    ("adv-eps-zero", ["fit-adversary", "--policy", "{ledge}", "--eps", "0"], "eps 0 needs no adversary"),
    ("adv-eps-huge", ["fit-adversary", "--policy", "{ledge}", "--eps", "3"], "eps must be in"),
    ("adv-seed-negative", ["fit-adversary", "--policy", "{ledge}", "--seed", "-1"], "not in the range 0<=x<=4294967295"),
    ("adv-hidden", ["fit-adversary", "--policy", "{ledge}", "--hidden", "a,b"], "invalid rl-adversary option hidden"),
    ("adv-out-suffix", ["fit-adversary", "--policy", "{ledge}", "--out", "{W}/a.txt"], "use a .safetensors file name"),
    ("adv-out-two-eps", ["fit-adversary", "--policy", "{ledge}", "--eps", "0.1,0.2", "--out", "{W}/a.safetensors"],
     "give a single --eps"),
    ("adv-out-unwritable", ["fit-adversary", "--policy", "{ledge}", "--out", "{LOCKED}/a.safetensors"],
     "cannot write in"),
    ("adv-cache-unwritable", ["fit-adversary", "--policy", "{ledge}", "--cache-dir", "{LOCKED}/cache"], "cannot save"),
    ("adv-missing-policy", ["fit-adversary", "--policy", "{W}/nope.safetensors"], "checkpoint not found"),
    # train
    ("train-seed-negative", [*TRAIN, "--out", "{W}/run", "--seed", "-1"], "seed must be an integer in [0, 4294967295]"),
    ("train-seed-huge", [*TRAIN, "--out", "{W}/run", "--seed", BIG], "seed must be an integer in [0, 4294967295]"),
    ("train-eval-seed-negative", [*TRAIN, "--out", "{W}/run", "--eval-every", "10", "--eval-seed", "-5"],
     "eval-seed must be an integer in [0, 4294967295]"),
    ("train-seeds-negative", [*TRAIN, "--out", "{W}/runs", "--seeds", "0,-1"], "each seed must be an integer"),
    ("train-seeds-huge", [*TRAIN, "--out", "{W}/runs", "--seeds", f"0,{BIG}"], "each seed must be an integer"),
    ("train-out-not-empty", [*TRAIN, "--out", "{W}/busy"], "is not empty and holds no training run"),
    ("train-out-is-a-file", [*TRAIN, "--out", "{W}/afile"], "is a file"),
    ("train-out-under-a-file", [*TRAIN, "--out", "{W}/afile/run"], "afile is a file, not a folder"),
    ("train-out-unwritable", [*TRAIN, "--out", "{LOCKED}/run"], "cannot write in"),
    ("train-config-binary", [*TRAIN, "--out", "{W}/run", "--config", "{W}/junk.bin"], "not valid TOML"),
    ("train-eval-episodes-huge", [*TRAIN, "--out", "{W}/run", "--eval-episodes", str(2**21)],
     "eval-episodes must be <="),
    ("train-steps-zero", [*TRAIN, "--out", "{W}/run", "--steps", "0"], "steps must be >= 1"),
    ("train-resume-nothing", [*TRAIN, "--out", "{W}/run", "--resume"], "nothing to resume"),
    # bench
    ("bench-suite-missing", ["bench", "{W}/suites/nope.toml", "--out", "{W}/b"], "not found"),
    ("bench-suite-binary", ["bench", "{W}/suites/junk.toml", "--out", "{W}/b"], "junk.toml: not a TOML text file"),
    ("bench-step-size-nan", ["bench", "{W}/suites/nan_step.toml", "--out", "{W}/b"], "pgd_step_size must be a positive"),
    ("bench-step-size-inf", ["bench", "{W}/suites/inf_step.toml", "--out", "{W}/b"], "pgd_step_size must be a positive"),
    ("bench-own-critic-missing", ["bench", "{W}/suites/own.toml", "--out", "{W}/b"], "has no 'q' critic for min-q"),
    ("bench-eval-seed-negative", ["bench", "{W}/suites/neg_seed.toml", "--out", "{W}/b"],
     "must be an integer in [0, 4294967295]"),
    ("bench-eval-seed-huge", ["bench", "{W}/suites/big_seed.toml", "--out", "{W}/b"],
     "must be an integer in [0, 4294967295]"),
    ("bench-episodes-huge", ["bench", "{W}/suites/many.toml", "--out", "{W}/b"], "episodes must be <="),
    ("bench-fit-lr-inf", ["bench", "{W}/suites/fit_inf.toml", "--out", "{W}/b"], "lr=inf"),
    ("bench-policy-missing", ["bench", "{W}/suites/missing.toml", "--out", "{W}/b"], "checkpoint not found"),
    ("bench-out-under-a-file", ["bench", "{W}/suites/good.toml", "--out", "{W}/afile/b"], "afile is a file, not a folder"),
    ("bench-out-unwritable", ["bench", "{W}/suites/good.toml", "--out", "{LOCKED}/b"], "cannot write in"),
    ("bench-out-not-empty", ["bench", "{W}/suites/good.toml", "--out", "{W}/busy"], "not empty and holds no bench run"),
    ("bench-resume-nothing", ["bench", "{W}/suites/good.toml", "--out", "{W}/b", "--resume"], "holds no bench run"),
    # report
    ("attack-standard-with-settings", ["attack", "--policy", "{pend}", "--attack", "standard", "--critic", "own"],
     "--attack standard fixes its settings; drop --critic"),
    ("attack-standard-among-others", ["attack", "--policy", "{pend}", "--attack", "standard,random"],
     "'standard' is a whole attack set"),
    ("report-missing", ["report", "{W}/nope.csv"], "does not exist"),
    ("report-nan-returns", ["report", "{W}/nan.csv"], "non-finite return"),
    ("report-eps-absent", ["report", "{W}/good.csv", "--eps", "0.7"], "eps 0.7 is not in the results"),
    ("report-binary", ["report", "{W}/junk.csv"], "not a readable results table"),
    ("report-columns", ["report", "{W}/cols.csv"], "missing columns"),
    ("report-pooled-clash", ["report", "{W}/good.csv", "{W}/clash.csv"], "has different returns in"),
    ("report-format", ["report", "{W}/good.csv", "--format", "md,pdf"], "unknown report format 'pdf'"),
    ("report-out-under-a-file", ["report", "{W}/good.csv", "--out", "{W}/afile/rep"], "afile is a file, not a folder"),
    ("report-out-unwritable", ["report", "{W}/good.csv", "--out", "{LOCKED}/rep"], "cannot write in"),
    ("report-runs-without-progress", ["report", "{W}/good.csv", "--runs", "{W}/busy"], "has no progress.csv"),
]


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for path in root.rglob("*"):
        try:
            st = path.lstat()
        except OSError:
            continue
        out[str(path.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return out


@pytest.mark.parametrize("args, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_error_line_and_leaves_nothing(ws, monkeypatch, args, message):
    if any("{LOCKED}" in a for a in args) and ws["LOCKED"] is None:
        pytest.skip("no folder on this machine refuses new files to this user")
    monkeypatch.setenv("RBRL_CACHE_DIR", str(ws["W"] / "cache"))
    argv = [a.format(**{k: str(v) for k, v in ws.items()}) for a in args]
    before = _snapshot(ws["W"])
    res = CliRunner().invoke(main, argv)
    out = res.output
    assert res.exit_code != 0, out
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert "Traceback" not in out
    errors = [line for line in out.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, out
    assert message in errors[0], out
    assert _snapshot(ws["W"]) == before, "the failed command created or changed files"


def test_matrix_covers_every_command():
    listed = set(main.commands)
    covered = {c[1][0] for c in CASES}
    assert listed <= covered, f"commands without bad-input cases: {sorted(listed - covered)}"


def test_files_follow_the_umask(tmp_path):
    """Outputs get the permissions of files made with open(): 0o666 minus the umask, not a temp file's 0o600."""
    from robustbench_rl.files import atomic_write_bytes

    old = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "a.txt", b"x")
        os.umask(0o077)
        atomic_write_bytes(tmp_path / "b.txt", b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "b.txt").stat().st_mode) == 0o600
