"""Gymnasium adapters for the DeepMind Control suite and Meta-World, behind one `make_env`.

Every environment returned by :func:`make_env` follows the gymnasium API with flat float32 observations,
float32 actions in [-1, 1], time-limit ends reported as truncations (never terminals) and a reproducible
``reset(seed=s)``: the same seed gives the same initial state and, for Meta-World, the same goal.

Meta-World has two goal modes (see :mod:`envs.metaworld_env`):

- ``"fresh"`` (default, B-Pref's behaviour): a fresh random goal / object position at every reset, with the
  goal hidden from the observation (its three entries are zero).
- ``"preset"`` (``gym.make("Meta-World/MT1", ...)``'s behaviour): each reset picks one of the 50 preset
  goals of the MT1 benchmark, and the goal is part of the observation.

Both adapters save and restore an episode exactly (``get_sim_state``/``set_sim_state``, see
:mod:`envs.sim_state`): a simulator-only privilege, used to branch rollouts from recorded states.

Rendering is off unless ``render_mode="rgb_array"`` is asked for. MuJoCo picks its OpenGL backend when it is
first imported, so this module chooses a default for ``MUJOCO_GL`` before anything imports mujoco, and only
if the variable is unset: ``egl`` on a GPU machine, ``osmesa`` without a GPU or display (when libOSMesa is
installed; otherwise Mesa's software ``egl``), and nothing when a display is available (GLFW).
The simulators themselves are imported lazily, so ``import pref_brl.envs`` stays cheap.
"""

from __future__ import annotations

import ctypes.util
import os
import sys
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import gymnasium

GoalMode = Literal["fresh", "preset"]
"""Meta-World goal sampling: B-Pref's fresh hidden goal per reset, or MT1's 50 preset visible goals."""

DMC_ENVS: dict[str, tuple[str, str]] = {
    "walker_walk": ("walker", "walk"),
    "cheetah_run": ("cheetah", "run"),
    "quadruped_walk": ("quadruped", "walk"),
}
"""Our name -> (dm_control domain, task)."""

METAWORLD_PREFIX = "metaworld_"
METAWORLD_ENVS: tuple[str, ...] = tuple(
    METAWORLD_PREFIX + task
    for task in ("door-open-v3", "button-press-v3", "sweep-into-v3", "drawer-open-v3", "window-open-v3")
)

KNOWN_ENVS: tuple[str, ...] = tuple(DMC_ENVS) + METAWORLD_ENVS
"""Every name :func:`make_env` accepts."""

ENV_SIZES: dict[str, tuple[int, int]] = {
    "walker_walk": (24, 6), "cheetah_run": (17, 6), "quadruped_walk": (78, 12),
    **{name: (39, 4) for name in METAWORLD_ENVS},
}
"""Our name -> (state size, action size), known without building the environment (tests/test_envs.py checks it)."""

DMC_EPISODE_LENGTH = 1000
METAWORLD_EPISODE_LENGTH = 500


def _default_gl_backend() -> str | None:
    """The MuJoCo OpenGL backend to use when the user has not chosen one (None: leave MuJoCo's default)."""
    if os.environ.get("DISPLAY"):
        return None  # GLFW can open a window
    if os.path.exists("/dev/nvidiactl"):
        return "egl"
    if ctypes.util.find_library("OSMesa"):
        return "osmesa"
    if ctypes.util.find_library("EGL"):
        return "egl"  # Mesa's surfaceless software EGL
    return None


if "MUJOCO_GL" not in os.environ and "mujoco" not in sys.modules:
    _backend = _default_gl_backend()
    if _backend is not None:
        os.environ["MUJOCO_GL"] = _backend


def _check_known(name: str) -> None:
    if name not in KNOWN_ENVS:
        raise ValueError(f"unknown environment {name!r}; known environments: {', '.join(KNOWN_ENVS)}")


def is_metaworld(name: str) -> bool:
    """Whether `name` is one of the known Meta-World environments."""
    _check_known(name)
    return name.startswith(METAWORLD_PREFIX)


def episode_length(name: str) -> int:
    """Steps in one episode of `name` before the time-limit truncation (1000 DMC, 500 Meta-World)."""
    return METAWORLD_EPISODE_LENGTH if is_metaworld(name) else DMC_EPISODE_LENGTH


def make_env(
    name: str,
    seed: int,
    *,
    goal_mode: GoalMode = "fresh",
    render_mode: str | None = None,
    max_episode_steps: int | None = None,
    render_size: tuple[int, int] = (480, 480),
) -> gymnasium.Env:
    """Build the environment `name` (one of :data:`KNOWN_ENVS`), seeded with `seed`.

    Args:
        name: e.g. ``"walker_walk"`` or ``"metaworld_door-open-v3"``.
        seed: seeds the simulator's randomness; ``reset()`` right after construction equals
            ``reset(seed=seed)``.
        goal_mode: Meta-World only (DMC ignores it): ``"fresh"`` (B-Pref, default) or ``"preset"``
            (MT1's 50 goals).
        render_mode: ``None`` (no rendering) or ``"rgb_array"``.
        max_episode_steps: overrides :func:`episode_length` (for tests and quick runs).
        render_size: (height, width) of rendered frames.
    """
    if goal_mode not in ("fresh", "preset"):
        raise ValueError(f"goal_mode must be 'fresh' or 'preset', got {goal_mode!r}")
    limit = episode_length(name) if max_episode_steps is None else max_episode_steps
    if is_metaworld(name):
        from pref_brl.envs.metaworld_env import MetaWorldEnv

        return MetaWorldEnv(
            name.removeprefix(METAWORLD_PREFIX),
            seed,
            goal_mode=goal_mode,
            max_episode_steps=limit,
            render_mode=render_mode,
            render_size=render_size,
        )
    from pref_brl.envs.dmc import DMCEnv

    domain, task = DMC_ENVS[name]
    return DMCEnv(domain, task, seed, max_episode_steps=limit, render_mode=render_mode,
                  render_size=render_size)


__all__ = [
    "DMC_ENVS",
    "KNOWN_ENVS",
    "METAWORLD_ENVS",
    "GoalMode",
    "episode_length",
    "is_metaworld",
    "make_env",
]
