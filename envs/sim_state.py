"""Exact snapshots of a simulator mid-episode, for branching rollouts from recorded states.

Both adapters (:class:`envs.dmc.DMCEnv`, :class:`envs.metaworld_env.MetaWorldEnv`) offer

- ``get_sim_state() -> SimState``: a snapshot of everything the next steps depend on;
- ``set_sim_state(state)``: put that snapshot into this adapter, or into another adapter built for the same
  environment (any seed, reset or not), after which ``step(a)`` returns exactly (bit for bit) what the
  recorded adapter's ``step(a)`` returned: observation, reward, ``terminated``, ``truncated`` (the snapshot
  holds the episode's elapsed steps) and ``info``.

A snapshot is a privilege of the simulator: a real robot cannot be put back into a past state, so a
method that branches from restored states (e.g. a λ-term estimator that compares two policies from the
same start states) is only available in simulation.

What a snapshot does not hold: the generators that decide the *next* episode's start state and goal. A
``reset()`` without a seed after ``set_sim_state`` continues the restoring adapter's own generators.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import mujoco
import numpy as np

INTEGRATION = mujoco.mjtState.mjSTATE_INTEGRATION
"""MuJoCo's full integration state: time, qpos, qvel, act, the solver's warm start, controls, applied forces,
active equality constraints, mocap poses, user data and plugin state (``mj_getState``)."""

MODEL_POSES = ("body_pos", "body_quat", "site_pos", "site_quat")
"""Model fields that tasks move at reset (Meta-World places its objects and goal sites in the model)."""


@dataclass(frozen=True)
class MujocoState:
    """A MuJoCo simulation's integration state and the poses its task wrote into the model."""

    integration: np.ndarray
    model_poses: dict[str, np.ndarray]


def capture_mujoco(model: mujoco.MjModel, data: mujoco.MjData) -> MujocoState:
    """A copy of (model, data)'s :data:`INTEGRATION` state and :data:`MODEL_POSES`."""
    integration = np.empty(mujoco.mj_stateSize(model, INTEGRATION))
    mujoco.mj_getState(model, data, integration, INTEGRATION)
    return MujocoState(integration, {name: np.array(getattr(model, name)) for name in MODEL_POSES})


def restore_mujoco(model: mujoco.MjModel, data: mujoco.MjData, state: MujocoState) -> None:
    """Write ``state`` into (model, data) and recompute the derived quantities (positions, sensors, ...).

    ``mj_forward`` brings every derived field in line with the restored state, as after a recorded step;
    the integration state is then written once more, so that nothing ``mj_forward`` touches (the solver's
    warm start) differs from the recording.
    """
    expected = mujoco.mj_stateSize(model, INTEGRATION)
    if state.integration.shape != (expected,):
        raise ValueError(f"simulator state has {state.integration.size} entries, this model needs {expected}")
    for name, value in state.model_poses.items():
        getattr(model, name)[...] = value
    mujoco.mj_setState(model, data, state.integration, INTEGRATION)
    mujoco.mj_forward(model, data)
    mujoco.mj_setState(model, data, state.integration, INTEGRATION)


@dataclass(frozen=True)
class SimState:
    """An exact snapshot of one adapter mid-episode (see the module docstring).

    ``env_id`` names the environment (and goal mode) the snapshot belongs to; ``elapsed`` is the episode's
    step count, which decides the time-limit truncation; ``fields`` holds the simulator's own Python-side
    episode state (e.g. Meta-World's goal, object start positions and path length). A snapshot is plain data
    (numpy arrays, numbers, strings), so it pickles; restoring copies out of it and never changes it.
    """

    env_id: str
    mujoco: MujocoState
    elapsed: int
    fields: dict[str, Any] = field(default_factory=dict)

    def check_for(self, env_id: str) -> None:
        """Raise ValueError unless this snapshot belongs to ``env_id``."""
        if self.env_id != env_id:
            raise ValueError(f"simulator state of {self.env_id!r} cannot be restored into {env_id!r}")


def is_plain(value: Any) -> bool:
    """Whether ``value`` is plain episode data (a number, bool, None or numeric array) that a copy captures."""
    if value is None or isinstance(value, (bool, int, float, np.number, np.bool_)):
        return True
    return isinstance(value, np.ndarray) and value.dtype.kind in "biuf"


def copy_plain(value: Any) -> Any:
    """A copy of a plain value that later in-place changes of either side cannot reach."""
    return value.copy() if isinstance(value, np.ndarray) else value
