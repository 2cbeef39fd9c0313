"""Gymnasium adapter for DeepMind Control suite tasks (walker_walk, cheetah_run, quadruped_walk, ...).

- Observation: the suite's observation dict flattened in the suite's key order into one float32 vector.
- Action: float32 in [-1, 1], mapped affinely onto the task's action bounds when those differ.
- Seeding: the task's ``RandomState`` is created from the seed (``task_kwargs={"random": seed}``), and
  ``reset(seed=s)`` re-seeds it, so the initial state and every later step are reproducible.
- Time limit: dm_control's own limit is disabled and replaced by a step counter; reaching it sets
  ``truncated``. ``terminated`` is only True if the task itself ends the episode (none of ours do).
- Snapshots: ``get_sim_state``/``set_sim_state`` save and restore an episode exactly (:mod:`envs.sim_state`;
  a simulator-only privilege). The suite's walker, cheetah and quadruped tasks keep no episode state outside
  the physics, so the physics, the step counter and dm_control's own episode flags are all there is.
"""

from __future__ import annotations

import os
from typing import Any

# Our rendering (evaluation videos, labelling clips) happens on the thread that made the context, so
# dm_control's render thread buys nothing; freeing a context whose render thread is gone (a context left to
# the garbage collector at interpreter exit) can wait on it forever. Set before dm_control is first imported.
os.environ.setdefault("DISABLE_RENDER_THREAD_OFFLOADING", "1")

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
from dm_control import suite  # noqa: E402
from gymnasium import spaces  # noqa: E402

from pref_brl.envs.sim_state import SimState, capture_mujoco, restore_mujoco  # noqa: E402


class _SensorNameCache(dict):
    """Replacement for quadruped's sensor-name cache that avoids ``np.in1d`` (removed in numpy 2.4)."""

    def __init__(self, physics: Any) -> None:
        super().__init__()
        self._physics = physics

    def __missing__(self, sensor_types: tuple[int, ...]) -> list[str]:
        model = self._physics.model
        ids = np.flatnonzero(np.isin(model.sensor_type, sensor_types))
        names = [model.id2name(int(i), "sensor") for i in ids]
        self[sensor_types] = names
        return names


def _patch_numpy2_sensor_lookup(physics: Any) -> None:
    """dm_control 1.0.28's quadruped looks sensors up with ``np.in1d``; serve that lookup without it."""
    if hasattr(physics, "_sensor_types_to_names") and not hasattr(np, "in1d"):
        physics._sensor_types_to_names = _SensorNameCache(physics)


def observation_views(obs_spec: dict[str, Any], flat: np.ndarray) -> tuple[tuple[str, np.ndarray], ...]:
    """(key, view) pairs: each view is the slice of `flat` holding that entry, shaped as in the spec.

    Entries follow the spec's (= the suite's) key order. Assigning ``view[...] = value`` writes the entry
    with a dtype cast and no temporaries.
    """
    views, start = [], 0
    for key, spec in obs_spec.items():
        size = int(np.prod(spec.shape, dtype=np.int64))
        views.append((key, flat[start : start + size].reshape(spec.shape)))
        start += size
    if start != flat.size:
        raise ValueError(f"observation spec has {start} entries, buffer has {flat.size}")
    return tuple(views)


def observation_size(obs_spec: dict[str, Any]) -> int:
    """Length of the flattened observation."""
    return sum(int(np.prod(spec.shape, dtype=np.int64)) for spec in obs_spec.values())


def unit_to_bounds(low: np.ndarray, high: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(scale, offset) mapping [-1, 1] onto [low, high]; None when the bounds already are [-1, 1]."""
    if np.all(low == -1.0) and np.all(high == 1.0):
        return None
    return (high - low) / 2.0, (high + low) / 2.0


class DMCEnv(gym.Env[np.ndarray, np.ndarray]):
    """One dm_control suite task as a gymnasium environment (see the module docstring)."""

    metadata: dict[str, Any] = {"render_modes": ["rgb_array"]}

    def __init__(
        self,
        domain: str,
        task: str,
        seed: int,
        *,
        max_episode_steps: int = 1000,
        render_mode: str | None = None,
        render_size: tuple[int, int] = (480, 480),
    ) -> None:
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        # dm_control's own time limit is disabled: the step counter below owns truncation.
        self._env = suite.load(domain, task, task_kwargs={"random": seed, "time_limit": float("inf")})
        _patch_numpy2_sensor_lookup(self._env.physics)
        obs_spec = self._env.observation_spec()
        obs_dim = observation_size(obs_spec)
        self._scratch = np.empty(obs_dim, dtype=np.float32)
        self._views = observation_views(obs_spec, self._scratch)
        act_spec = self._env.action_spec()
        self._affine = unit_to_bounds(act_spec.minimum, act_spec.maximum)
        self.observation_space = spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, act_spec.shape, np.float32)
        self.action_space.seed(seed)
        self.max_episode_steps = max_episode_steps
        self.render_mode = render_mode
        self.render_size = render_size
        self.metadata = {**self.metadata, "render_fps": round(1.0 / self._env.control_timestep())}
        self._elapsed = 0
        self.env_id = f"{domain}_{task}"

    @property
    def physics(self) -> Any:
        """The dm_control ``Physics`` (for rendering, state access, named indexing)."""
        return self._env.physics

    @property
    def mj_model(self) -> Any:
        """The ``mujoco.MjModel`` being simulated (its visual settings change how frames are rendered)."""
        return self._env.physics.model.ptr

    @property
    def dm_env(self) -> Any:
        """The wrapped ``dm_control.rl.control.Environment``."""
        return self._env

    def _flatten(self, observation: dict[str, Any]) -> np.ndarray:
        for key, view in self._views:
            view[...] = observation[key]
        return self._scratch.copy()  # callers may keep observations (replay buffers, segments)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode; with `seed`, the task's RandomState is re-seeded first (reproducible start)."""
        super().reset(seed=seed)
        if seed is not None:
            self._env.task.random.seed(seed)
        self._elapsed = 0
        return self._flatten(self._env.reset().observation), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Advance one control step; the time limit gives ``truncated=True``, never ``terminated``."""
        if self._affine is not None:
            action = action * self._affine[0] + self._affine[1]
        time_step = self._env.step(action)
        self._elapsed += 1
        terminated = time_step.last()  # dm_control's time limit is off, so only a task can end it
        truncated = not terminated and self._elapsed >= self.max_episode_steps
        return self._flatten(time_step.observation), float(time_step.reward), terminated, truncated, {}

    def get_sim_state(self) -> SimState:
        """A snapshot of the episode: physics, elapsed steps and dm_control's episode flags (see envs.sim_state)."""
        physics = self._env.physics
        flags = {"_step_count": self._env._step_count, "_reset_next_step": self._env._reset_next_step}
        return SimState(self.env_id, capture_mujoco(physics.model.ptr, physics.data.ptr), self._elapsed, flags)

    def set_sim_state(self, state: SimState) -> None:
        """Continue from ``state`` (from any adapter of this task): the next ``step`` is the recorded one."""
        state.check_for(self.env_id)
        physics = self._env.physics
        restore_mujoco(physics.model.ptr, physics.data.ptr, state.mujoco)
        for name, value in state.fields.items():
            setattr(self._env, name, value)
        self._elapsed = state.elapsed

    def render(self) -> np.ndarray | None:  # type: ignore[override]
        """An RGB frame from camera 0 when ``render_mode="rgb_array"``, else None."""
        if self.render_mode != "rgb_array":
            return None
        height, width = self.render_size
        return self._env.physics.render(height=height, width=width, camera_id=0)

    def close(self) -> None:
        """Release the simulator and, where this thread can, its rendering contexts now (the env is unusable
        afterwards). Left to the garbage collector, a context freed at interpreter exit could wait forever on
        dm_control's render thread."""
        self._env.close()
        try:
            self._env.physics.free()
        except RuntimeError:
            # The context is current on another thread (it rendered there; a run trained on a thread of its own
            # closes here), and only that thread may free it. With no render thread (above) nothing waits on it:
            # it goes with the process.
            pass
