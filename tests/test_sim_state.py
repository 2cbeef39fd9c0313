"""Simulator snapshots: restore-then-step reproduces the recorded steps bit for bit, in another instance too."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

from pref_brl.envs import make_env
from pref_brl.envs.sim_state import SimState

DOOR = "metaworld_door-open-v3"
LIMIT = 100
"""Episode length of the recordings: the replays run into the time-limit truncation."""
SNAPSHOTS = (20, 80)
"""Steps at which the recording takes a snapshot (the door opens, success 0 -> 1, between them)."""
CASES = [("walker_walk", "fresh"), ("quadruped_walk", "fresh"), (DOOR, "fresh"), (DOOR, "preset"),
         ("metaworld_drawer-open-v3", "fresh")]


@dataclass
class Recording:
    """One episode: its actions, every step's outputs, and snapshots taken before some of the steps."""

    actions: list[np.ndarray]
    steps: list[tuple[Any, ...]]
    states: dict[int, SimState]


def _door_actions(env: gym.Env, obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Meta-World's scripted door policy with a little noise (it opens the door within the recording)."""
    from metaworld.policies import SawyerDoorOpenV3Policy

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the policy warns that its gains saturate the action
        action = SawyerDoorOpenV3Policy().get_action(obs.astype(np.float64))
    return np.clip(action + 0.1 * rng.standard_normal(4), -1, 1).astype(np.float32)


def _step(env: gym.Env, action: np.ndarray) -> tuple[Any, ...]:
    obs, reward, terminated, truncated, info = env.step(action)
    return obs, reward, terminated, truncated, info


def _record(name: str, goal_mode: str) -> Recording:
    env = make_env(name, seed=0, goal_mode=goal_mode, max_episode_steps=LIMIT)
    rng = np.random.default_rng(1)
    obs, _ = env.reset(seed=3)
    actions, steps, states = [], [], {}
    for t in range(LIMIT):
        if t in SNAPSHOTS:
            states[t] = env.get_sim_state()
        if name == DOOR:
            action = _door_actions(env, obs, rng)
        else:
            action = rng.uniform(-1, 1, env.action_space.shape).astype(np.float32)
        actions.append(action)
        steps.append(_step(env, action))
        obs = steps[-1][0]
    assert steps[-1][3] is True
    return Recording(actions, steps, states)


def _assert_replays(env: gym.Env, recording: Recording, start: int) -> None:
    """From the snapshot before step `start`, the recorded actions give the recorded outputs exactly."""
    env.set_sim_state(recording.states[start])
    for t in range(start, LIMIT):
        obs, reward, terminated, truncated, info = _step(env, recording.actions[t])
        want = recording.steps[t]
        np.testing.assert_array_equal(obs, want[0], err_msg=f"observation after step {t}")
        assert obs.dtype == want[0].dtype
        assert (reward, terminated, truncated) == want[1:4], t
        assert info == want[4], t


@pytest.fixture(scope="module", params=CASES, ids=lambda case: f"{case[0]}-{case[1]}")
def recorded(request: pytest.FixtureRequest) -> tuple[str, str, Recording]:
    name, goal_mode = request.param
    return name, goal_mode, _record(name, goal_mode)


def test_restore_in_another_instance_replays_exactly(recorded: tuple[str, str, Recording]) -> None:
    name, goal_mode, recording = recorded
    fresh = make_env(name, seed=7, goal_mode=goal_mode, max_episode_steps=LIMIT)  # never reset
    _assert_replays(fresh, recording, SNAPSHOTS[1])
    elsewhere = make_env(name, seed=8, goal_mode=goal_mode, max_episode_steps=LIMIT)
    elsewhere.reset(seed=11)  # another episode (for Meta-World: another goal and door position) ...
    for _ in range(30):  # ... that has moved on
        elsewhere.step(elsewhere.action_space.sample())
    _assert_replays(elsewhere, recording, SNAPSHOTS[0])


def test_restore_in_the_same_instance_after_it_moved_on(recorded: tuple[str, str, Recording]) -> None:
    name, goal_mode, recording = recorded
    env = make_env(name, seed=0, goal_mode=goal_mode, max_episode_steps=LIMIT)
    env.reset(seed=5)
    for _ in range(LIMIT):  # to the end of another episode: truncated, path length at its limit
        env.step(env.action_space.sample())
    _assert_replays(env, recording, SNAPSHOTS[0])
    _assert_replays(env, recording, SNAPSHOTS[1])  # from a snapshot, again, after replaying to the end
    _assert_replays(env, recording, SNAPSHOTS[0])  # snapshots are not changed by being restored


def test_door_recording_crosses_success() -> None:
    recording = _record(DOOR, "fresh")
    success = [step[4]["success"] for step in recording.steps]
    assert max(success[: SNAPSHOTS[0]]) == 0.0 and max(success[SNAPSHOTS[0]:]) == 1.0


def test_a_snapshot_is_refused_by_another_environment() -> None:
    walker, cheetah = make_env("walker_walk", seed=0), make_env("cheetah_run", seed=0)
    walker.reset()
    with pytest.raises(ValueError, match="walker_walk"):
        cheetah.set_sim_state(walker.get_sim_state())
    door = make_env(DOOR, seed=0)
    door.reset()
    with pytest.raises(ValueError, match="fresh"):
        make_env(DOOR, seed=0, goal_mode="preset").set_sim_state(door.get_sim_state())
