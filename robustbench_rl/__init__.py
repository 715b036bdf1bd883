"""robustbench-rl: train, attack and score continuous-control policies under bounded action perturbations."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("robustbench-rl")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

from robustbench_rl import envs as _envs  # noqa: F401  (registers the bundled toy envs)
