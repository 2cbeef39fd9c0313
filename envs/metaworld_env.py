"""Gymnasium adapter for single Meta-World 3.1.1 tasks (door-open-v3, button-press-v3, ...).

Two goal modes:

``"fresh"`` (default) -- B-Pref's behaviour.
    The raw task class with ``_freeze_rand_vec = False``: every reset draws a new random object / goal
    position, and the goal's three observation entries are zero (the goal is hidden; the agent must infer it
    from the reward). B-Pref drew these positions from numpy's global RNG; here they come from the
    simulator's own ``np_random`` (``seeded_rand_vec = True``), so no global state is touched.

``"preset"`` -- what ``gym.make("Meta-World/MT1", env_name=..., seed=seed)`` does.
    ``metaworld.MT1(task, seed)`` generates 50 goals once (they depend on the construction seed); each reset
    picks one of them uniformly, and the goal is visible in the last three observation entries.

Reproducibility: ``reset(seed=s)`` re-seeds the generator that decides the goal (the simulator's
``np_random`` in "fresh" mode, this adapter's ``np_random`` choosing among the presets in "preset" mode).
Everything else in a Meta-World reset is deterministic given the goal, so the same seed gives the same
initial state and goal. A new adapter's first ``reset()`` equals ``reset(seed=construction seed)``.

Observations are float32 (39 = hand, gripper, objects, the previous frame's copy of those, goal). Actions
are float32 in [-1, 1]^4. Episodes are cut at ``max_episode_steps`` (500) with ``truncated=True``;
``terminated`` is always False (success does not end an episode). ``info["success"]`` is the simulator's
success flag as a float (0.0 or 1.0); an episode succeeds if it was ever 1.

Snapshots: ``get_sim_state``/``set_sim_state`` save and restore an episode exactly (:mod:`envs.sim_state`; a
simulator-only privilege). Besides MuJoCo's state, a Meta-World episode lives in the simulator's Python
fields, which its reward and observation read: the goal (``_target_pos``), the objects' start positions
(``obj_init_pos``, ``init_tcp``, ...), derived constants such as ``maxPullDist``, the path length that ends the
episode, and the previous frame that the next observation repeats (``_prev_obs``). A snapshot copies every
plain (numeric) field of the simulator except the adapter's configuration (:data:`CONFIG_FIELDS`).
"""

from __future__ import annotations

from typing import Any, Literal

import gymnasium as gym
import metaworld
import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding
from metaworld.env_dict import ALL_V3_ENVIRONMENTS
from metaworld.sawyer_xyz_env import SawyerXYZEnv
from metaworld.types import Task

from pref_brl.envs.sim_state import SimState, capture_mujoco, copy_plain, is_plain, restore_mujoco

GOAL_MODES = ("fresh", "preset")

CONFIG_FIELDS = frozenset({"max_path_length", "width", "height", "camera_id", "camera_name", "_np_random_seed"})
"""Plain simulator fields that are the adapter's configuration, not episode state (not in snapshots)."""


def _make_simulator(
    task: str, goal_mode: str, seed: int, render_mode: str | None, render_size: tuple[int, int]
) -> tuple[SawyerXYZEnv, tuple[Task, ...]]:
    """The Meta-World simulator set up for `goal_mode`, and the preset tasks (empty in "fresh" mode)."""
    height, width = render_size
    simulator = ALL_V3_ENVIRONMENTS[task](render_mode=render_mode, width=width, height=height)
    if goal_mode == "preset":
        presets = tuple(metaworld.MT1(task, seed=seed).train_tasks)
        simulator.set_task(presets[0])  # fixes the (goal-visible) observation space before we copy it
        return simulator, presets
    simulator._set_task_called = True  # no Task object: goals are drawn by the simulator itself
    simulator._freeze_rand_vec = False  # a fresh goal at every reset, as in B-Pref
    simulator.seeded_rand_vec = True  # ... drawn from simulator.np_random rather than global np.random
    simulator._partially_observable = True  # goal hidden (zeros), as in B-Pref
    return simulator, ()


class MetaWorldEnv(gym.Env[np.ndarray, np.ndarray]):
    """One Meta-World task as a gymnasium environment (see the module docstring for the goal modes)."""

    metadata: dict[str, Any] = {"render_modes": ["rgb_array"], "render_fps": 80}

    def __init__(
        self,
        task: str,
        seed: int,
        *,
        goal_mode: Literal["fresh", "preset"] = "fresh",
        max_episode_steps: int = 500,
        render_mode: str | None = None,
        render_size: tuple[int, int] = (480, 480),
    ) -> None:
        if task not in ALL_V3_ENVIRONMENTS:
            raise ValueError(f"unknown Meta-World task {task!r}")
        if goal_mode not in GOAL_MODES:
            raise ValueError(f"goal_mode must be one of {GOAL_MODES}, got {goal_mode!r}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self._sim, self._presets = _make_simulator(task, goal_mode, seed, render_mode, render_size)
        self._sim.max_path_length = max_episode_steps  # the simulator refuses steps past its own limit
        bounds = self._sim.sawyer_observation_space
        self._obs_low = bounds.low.astype(np.float32)
        self._obs_high = bounds.high.astype(np.float32)
        self.observation_space = spaces.Box(self._obs_low, self._obs_high, dtype=np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (4,), np.float32)
        self.action_space.seed(seed)
        self.task_name = task
        self.goal_mode = goal_mode
        self.max_episode_steps = max_episode_steps
        self.render_mode = render_mode
        self._np_random, _ = seeding.np_random(seed)
        self._seed_fresh_goals(seed)
        self._elapsed = 0
        self.env_id = f"{task}/{goal_mode}"

    @property
    def simulator(self) -> SawyerXYZEnv:
        """The Meta-World ``SawyerXYZEnv`` (``.model``, ``.data`` for rendering and state access)."""
        return self._sim

    @property
    def mj_model(self) -> Any:
        """The ``mujoco.MjModel`` being simulated (its visual settings change how frames are rendered)."""
        return self._sim.model

    @property
    def goal(self) -> np.ndarray:
        """The current episode's goal position (3,), whether or not the observation shows it."""
        return np.array(self._sim._target_pos, dtype=np.float64)

    def _seed_fresh_goals(self, seed: int) -> None:
        self._sim.np_random, _ = seeding.np_random(seed)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode with a new goal; with `seed`, that goal and the initial state are reproducible."""
        super().reset(seed=seed)  # this adapter's np_random picks among preset goals
        if seed is not None:
            self._seed_fresh_goals(seed)
        if self._presets:
            self._sim.set_task(self._presets[int(self.np_random.integers(len(self._presets)))])
        obs, _ = self._sim.reset()
        self._elapsed = 0
        # Steps clip observations to the space; reset does not, so do it here.
        return np.clip(obs.astype(np.float32), self._obs_low, self._obs_high), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Advance one step; ``truncated`` at the time limit, ``terminated`` always False."""
        obs, reward, _, _, info = self._sim.step(action)
        self._elapsed += 1
        info["success"] = float(info["success"])
        return obs.astype(np.float32), float(reward), False, self._elapsed >= self.max_episode_steps, info

    def get_sim_state(self) -> SimState:
        """A snapshot of the episode: MuJoCo, the simulator's task fields and the elapsed steps (see above)."""
        fields = {name: copy_plain(value) for name, value in vars(self._sim).items()
                  if name not in CONFIG_FIELDS and is_plain(value)}
        mujoco_state = capture_mujoco(self._sim.model, self._sim.data)
        return SimState(self.env_id, mujoco_state, self._elapsed, fields)

    def set_sim_state(self, state: SimState) -> None:
        """Continue from ``state`` (from any adapter of this task and goal mode): the next step is the recorded one."""
        state.check_for(self.env_id)
        restore_mujoco(self._sim.model, self._sim.data, state.mujoco)
        for name, value in state.fields.items():
            setattr(self._sim, name, copy_plain(value))
        self._elapsed = state.elapsed

    def render(self) -> np.ndarray | None:  # type: ignore[override]
        """An RGB frame when ``render_mode="rgb_array"``, else None."""
        if self.render_mode != "rgb_array":
            return None
        return self._sim.render()

    def close(self) -> None:
        """Release the simulator (and its renderer)."""
        self._sim.close()
