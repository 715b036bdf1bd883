"""Environments: construction, action normalisation and the bundled toy envs.

Every env the toolkit touches is built by :func:`make_env`, which wraps it so that the agent acts in
the normalised box [-1, 1]^d (mapped affinely onto the env's own bounds). Attacks, critics and
checkpoints all live in that normalised space, so an eps means the same fraction of every actuator's
half-range whatever the env.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.wrappers import RescaleAction

from robustbench_rl.errors import EnvError


class LedgeEnv(gym.Env):
    """One-step toy task with a cliff: reward a for a <= 0.5, -1 beyond.

    The nominal optimum is a = 0.5, right at the edge; under a worst-case push of eps = 0.2 the robust
    optimum is a = 0.3. It shows what OA training buys in seconds of training.
    """

    metadata = {"render_modes": []}
    ledge = 0.5

    def __init__(self) -> None:
        self.observation_space = spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        return np.zeros(1, dtype=np.float32), {}

    def step(self, action):
        a = float(np.asarray(action, dtype=np.float64).reshape(-1)[0])
        reward = a if a <= self.ledge else -1.0
        return np.zeros(1, dtype=np.float32), reward, True, False, {}

    def get_sim_state(self) -> None:
        """The simulator-state hook (see :func:`get_sim_state`): Ledge has no state between steps."""
        return None

    def set_sim_state(self, state: None) -> None:
        """Restore what :meth:`get_sim_state` returned: nothing to restore."""


def ledge_reward(a: np.ndarray) -> np.ndarray:
    """Vectorised Ledge reward, for brute-force worst-case checks over the action box."""
    return np.where(a <= LedgeEnv.ledge, a, -1.0)


def _register_toy_envs() -> None:
    if "rbrl/Ledge-v0" not in gym.registry:
        gym.register(id="rbrl/Ledge-v0", entry_point=LedgeEnv, max_episode_steps=1)


_register_toy_envs()


def _suggest(env_id: str) -> str:
    close = difflib.get_close_matches(env_id, list(gym.registry.keys()), n=3, cutoff=0.5)
    return f" Did you mean: {', '.join(close)}?" if close else ""


def check_action_space(space: gym.Space, env_id: str) -> spaces.Box:
    """Return the Box action space or raise EnvError saying why the env cannot be attacked."""
    if not isinstance(space, spaces.Box):
        raise EnvError(
            f"{env_id} has a {type(space).__name__} action space; rbrl needs a continuous Box "
            "action space (bounded action perturbations are undefined for discrete actions)."
        )
    if not (np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high))):
        raise EnvError(
            f"{env_id} has an unbounded action space; rbrl needs finite bounds to normalise actions "
            "to [-1, 1] (wrap the env with gymnasium.wrappers.ClipAction/RescaleAction first)."
        )
    return space


def env_module(env_id: str) -> str | None:
    """The module gymnasium imports before building `env_id` (its ``"module:EnvId"`` form), else None.

    gymnasium imports whatever precedes the first colon, so an id with a colon runs that module's code:
    such an id must come from the user, never from a file (see
    :func:`robustbench_rl.policy.resolve_env_id`).
    """
    return env_id.split(":", 1)[0] if ":" in env_id else None


def make_env(env_id: str, seed: int | None = None, **kwargs) -> gym.Env:
    """Build one gymnasium env whose actions live in [-1, 1]^d.

    `env_id` is any registered id, or gymnasium's ``"module:EnvId"`` form for custom envs (the module
    is imported first so that it can register them: pass only ids the user named, see
    :func:`env_module`). The action space must be a bounded Box; it is
    rescaled affinely so that -1 and 1 map exactly onto the env's low and high. `seed`, when given,
    seeds the action space (the env itself is seeded through ``reset(seed=...)`` by the caller).
    """
    try:
        env = gym.make(env_id, **kwargs)
    except gym.error.Error as err:
        raise EnvError(f"cannot build env {env_id!r}: {str(err).rstrip('.')}.{_suggest(env_id)}") from None
    except (ModuleNotFoundError, ImportError) as err:
        raise EnvError(f"cannot build env {env_id!r}: {err}") from None
    try:
        box = check_action_space(env.action_space, env_id)
    except EnvError:
        env.close()
        raise
    if not (np.all(box.low == -1.0) and np.all(box.high == 1.0)):
        ones = np.ones(box.shape, dtype=box.dtype)
        env = RescaleAction(env, min_action=-ones, max_action=ones)
    if seed is not None:
        env.action_space.seed(seed)
    return env


SIM_STATE_HOOK = "get_sim_state() / set_sim_state(state)"
"""The methods an env's unwrapped class defines so that planning attacks can save and restore it."""


def sim_state_kind(env: gym.Env) -> str | None:
    """How the state of `env` can be saved and restored: "hook", "mujoco", or None when it cannot.

    "hook": its unwrapped env defines ``get_sim_state()`` and ``set_sim_state(state)`` (they win over
    the built-in support). "mujoco": a gymnasium MuJoCo env (an ``MjModel`` and ``MjData`` in its
    ``model`` and ``data``).
    """
    u = env.unwrapped
    if callable(getattr(u, "get_sim_state", None)) and callable(getattr(u, "set_sim_state", None)):
        return "hook"
    model, data = getattr(u, "model", None), getattr(u, "data", None)
    if type(model).__name__ == "MjModel" and type(data).__name__ == "MjData":
        return "mujoco"
    return None


def check_sim_state(env: gym.Env, who: str) -> None:
    """Raise EnvError naming the env and the hook to implement unless :func:`sim_state_kind` knows it."""
    if sim_state_kind(env) is None:
        name = env.spec.id if env.spec is not None else type(env.unwrapped).__name__
        raise EnvError(f"{who} needs to save and restore the simulator state, which {name} does not offer: "
                       f"define {SIM_STATE_HOOK} on its unwrapped env ({type(env.unwrapped).__name__})")


def get_sim_state(env: gym.Env) -> Any:
    """A snapshot of the simulator state of `env` (below all wrappers), for :func:`set_sim_state`.

    Wrapper state (a TimeLimit's step count) is not part of it, and later steps of `env` do not change
    it. A MuJoCo snapshot is a whole ``MjData`` copy (``mj_copyData``), not ``mj_getState``: the
    Humanoid and Ant rewards read quantities the last step left in ``MjData`` (``xipos``,
    ``cfrc_ext``), which even ``mjSTATE_INTEGRATION`` leaves out, so a restored state vector alone
    continues with a different reward there.
    """
    u = env.unwrapped
    kind = sim_state_kind(env)
    if kind == "hook":
        return u.get_sim_state()
    if kind != "mujoco":
        check_sim_state(env, "get_sim_state")
    import mujoco

    snapshot = mujoco.MjData(u.model)
    mujoco.mj_copyData(snapshot, u.model, u.data)
    return snapshot


def set_sim_state(env: gym.Env, state: Any) -> None:
    """Put `env` in the snapshot's state; `env` is the snapshot's env or a copy (same id and settings).

    Stepping it afterwards with an action gives the next observation and reward that the original env
    gave for that action, bit for bit. The snapshot itself is not changed, so it can be restored again.
    """
    u = env.unwrapped
    kind = sim_state_kind(env)
    if kind == "hook":
        u.set_sim_state(state)
        return
    if kind != "mujoco":
        check_sim_state(env, "set_sim_state")
    import mujoco

    mujoco.mj_copyData(u.data, u.model, state)  # copies into the env's own MjData: its references stay valid


def make_env_fn(env_id: str, seed: int | None = None, **kwargs) -> Callable[[], gym.Env]:
    """A thunk for vector envs (gymnasium's vector classes take callables)."""
    return lambda: make_env(env_id, seed=seed, **kwargs)


def make_vec_env(env_id: str, num_envs: int, seed: int | None = None, **kwargs) -> gym.vector.SyncVectorEnv:
    """`num_envs` copies of :func:`make_env` in one synchronous vector env (gymnasium's next-step autoreset).

    Synchronous on purpose: on MuJoCo a step costs ~70 us, less than the inter-process overhead of
    AsyncVectorEnv. Sub-env i's action space gets seed + i.
    """
    if num_envs < 1:
        raise EnvError(f"num_envs must be >= 1, got {num_envs}")
    fns = [make_env_fn(env_id, None if seed is None else seed + i, **kwargs) for i in range(num_envs)]
    return gym.vector.SyncVectorEnv(fns)


def env_spec(env_id: str) -> dict:
    """Dimensions and original action bounds of an env, as stored in checkpoint metadata."""
    env = make_env(env_id)
    try:
        box = env.unwrapped.action_space
        obs_space = env.observation_space
        return {
            "env_id": env_id,
            "obs_dim": int(np.prod(obs_space.shape)),
            "act_dim": int(np.prod(box.shape)),
            "action_low": [float(x) for x in np.asarray(box.low).reshape(-1)],
            "action_high": [float(x) for x in np.asarray(box.high).reshape(-1)],
        }
    finally:
        env.close()
