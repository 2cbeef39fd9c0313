"""Start states of the `branch` estimator: snapshots of A's episodes, restored exactly to branch A and B.

The `branch` estimator of the λ-term plays its A/B pairs not from a reset but from states of A's most recent
episode: while A plays an ordinary episode, the loop takes simulator snapshots (`envs.sim_state`) at K steps
drawn in advance; at the next re-sync those K states become the start states of the K pairs, each half
restored exactly and driven by the same noise stream. This is a privilege of simulation: a real robot
cannot be put back into a past state, so `branch` is not available on hardware (the likelihood-ratio
estimator is).

The steps are drawn below L − H (L the episode length, H the branch length), so that a branch never reaches
the episode's time limit: every branch has H steps, and its end is never a truncation of the episode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pref_brl.envs.sim_state import MujocoState, SimState


@dataclass(frozen=True)
class BranchStart:
    """Where a branch starts: the simulator's snapshot before A's action at `step`, and the observation there."""

    state: SimState
    obs: np.ndarray
    step: int


def snapshot_steps(rng: np.random.Generator, episode_length: int, horizon: int, k: int) -> frozenset[int]:
    """K distinct steps t < L − H of an episode of L steps, uniformly (a branch of H steps from t ends first)."""
    room = episode_length - horizon
    if room < k:
        raise ValueError(f"an episode of {episode_length} steps has {max(room, 0)} start steps for branches of "
                         f"{horizon} steps; {k} are needed")
    return frozenset(int(t) for t in rng.choice(room, size=k, replace=False))


def _field_to_checkpoint(value: Any) -> Any:
    if isinstance(value, (np.ndarray, np.generic)):
        return torch.from_numpy(np.array(value))
    return value  # a Python number, bool or None


def _field_from_checkpoint(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        array = value.numpy().copy()
        return array[()] if array.ndim == 0 else array
    return value


def start_to_checkpoint(start: BranchStart) -> dict[str, Any]:
    """A branch start as tensors, numbers and strings (what `torch.load(weights_only=True)` reads back)."""
    state = start.state
    return {"env_id": state.env_id, "elapsed": int(state.elapsed), "step": int(start.step),
            "obs": torch.from_numpy(np.array(start.obs)),
            "integration": torch.from_numpy(np.array(state.mujoco.integration)),
            "poses": {name: torch.from_numpy(np.array(pose)) for name, pose in state.mujoco.model_poses.items()},
            "fields": {name: _field_to_checkpoint(value) for name, value in state.fields.items()}}


def start_from_checkpoint(saved: dict[str, Any]) -> BranchStart:
    """The inverse of `start_to_checkpoint`, bit for bit (numpy scalars come back as numpy scalars)."""
    mujoco = MujocoState(saved["integration"].numpy().copy(),
                         {name: pose.numpy().copy() for name, pose in saved["poses"].items()})
    fields = {name: _field_from_checkpoint(value) for name, value in saved["fields"].items()}
    state = SimState(saved["env_id"], mujoco, saved["elapsed"], fields)
    return BranchStart(state, saved["obs"].numpy().copy(), saved["step"])
