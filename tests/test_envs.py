"""Environment adapters: spaces, SB3's check_env, reproducible resets, goal modes, time limits, success."""

from __future__ import annotations

import os
import warnings

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3.common.env_checker import check_env

from pref_brl.envs import ENV_SIZES, KNOWN_ENVS, METAWORLD_ENVS, episode_length, is_metaworld, make_env
from pref_brl.envs.dmc import unit_to_bounds

DOOR = "metaworld_door-open-v3"
DIMS = {"walker_walk": (24, 6), "cheetah_run": (17, 6), "quadruped_walk": (78, 12)}
DIMS.update({name: (39, 4) for name in METAWORLD_ENVS})


def _rollout(env: gym.Env, seed: int, actions: np.ndarray) -> np.ndarray:
    """Observations of reset(seed) followed by `actions`, stacked."""
    obs, _ = env.reset(seed=seed)
    trajectory = [obs]
    for action in actions:
        trajectory.append(env.step(action)[0])
    return np.stack(trajectory)


def _actions(env: gym.Env, n: int, seed: int = 0) -> np.ndarray:
    shape = (n, *env.action_space.shape)
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


@pytest.fixture(scope="module")
def walker() -> gym.Env:
    return make_env("walker_walk", seed=0)


@pytest.fixture(scope="module")
def door() -> gym.Env:
    return make_env(DOOR, seed=0)


# --- names -------------------------------------------------------------------------------------------


def test_known_names_and_episode_lengths() -> None:
    assert set(KNOWN_ENVS) == set(DIMS)
    assert episode_length("walker_walk") == 1000 and episode_length(DOOR) == 500
    assert is_metaworld(DOOR) and not is_metaworld("cheetah_run")


@pytest.mark.parametrize("call", [make_env, episode_length, is_metaworld])
def test_unknown_name_lists_known_names(call) -> None:
    args = ("walker_run", 0) if call is make_env else ("walker_run",)
    with pytest.raises(ValueError, match="walker_run") as error:
        call(*args)
    for name in KNOWN_ENVS:
        assert name in str(error.value)


def test_sizes_known_without_building_the_env_are_the_envs_own() -> None:
    assert ENV_SIZES == DIMS  # DIMS is checked against each built env's spaces below


def test_bad_goal_mode_is_rejected() -> None:
    with pytest.raises(ValueError, match="goal_mode"):
        make_env(DOOR, 0, goal_mode="fixed")  # type: ignore[arg-type]


# --- spaces and SB3 compatibility -----------------------------------------------------------------------


def _check_adapter(name: str, goal_mode: str = "fresh") -> None:
    env = make_env(name, seed=3, goal_mode=goal_mode)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an SB3 warning means the adapter would misbehave somewhere
        check_env(env, warn=True)
    obs_dim, act_dim = DIMS[name]
    assert env.observation_space.shape == (obs_dim,) and env.observation_space.dtype == np.float32
    assert env.action_space == gym.spaces.Box(-1.0, 1.0, (act_dim,), np.float32)
    obs, info = env.reset(seed=1)
    assert obs.shape == (obs_dim,) and obs.dtype == np.float32 and isinstance(info, dict)
    obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
    assert obs.shape == (obs_dim,) and obs.dtype == np.float32 and np.isfinite(obs).all()
    assert type(reward) is float and terminated is False and truncated is False
    env.close()


@pytest.mark.parametrize("name", KNOWN_ENVS)
def test_check_env_and_spaces(name: str) -> None:
    _check_adapter(name)


@pytest.mark.parametrize(
    "name", [DOOR] + [pytest.param(n, marks=pytest.mark.slow) for n in METAWORLD_ENVS if n != DOOR]
)
def test_check_env_preset_goals(name: str) -> None:
    _check_adapter(name, goal_mode="preset")


def test_dmc_observation_is_the_suite_dict_flattened_in_order(walker: gym.Env) -> None:
    from dm_control import suite

    raw = suite.load("walker", "walk", task_kwargs={"random": 11})
    expected = np.concatenate([np.ravel(v) for v in raw.reset().observation.values()]).astype(np.float32)
    np.testing.assert_array_equal(walker.reset(seed=11)[0], expected)
    assert list(raw.observation_spec()) == ["orientations", "height", "velocity"]
    action = np.linspace(-1, 1, 6, dtype=np.float32)
    expected = np.concatenate([np.ravel(v) for v in raw.step(action).observation.values()])
    np.testing.assert_array_equal(walker.step(action)[0], expected.astype(np.float32))


def test_unit_to_bounds_maps_the_unit_box_onto_the_bounds() -> None:
    assert unit_to_bounds(-np.ones(2), np.ones(2)) is None
    scale, offset = unit_to_bounds(np.array([0.0, -2.0]), np.array([1.0, 4.0]))
    np.testing.assert_allclose(-1 * scale + offset, [0.0, -2.0])
    np.testing.assert_allclose(1 * scale + offset, [1.0, 4.0])


def test_unwrapped_exposes_the_simulators(walker: gym.Env, door: gym.Env) -> None:
    assert walker.unwrapped.physics.model.nu == 6
    assert door.unwrapped.simulator.model.nq > 0


# --- reproducible resets ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name, goal_mode", [("walker_walk", "fresh"), (DOOR, "fresh"), (DOOR, "preset")])
def test_same_seed_same_episode(name: str, goal_mode: str) -> None:
    env = make_env(name, seed=0, goal_mode=goal_mode)
    actions = _actions(env, 100)
    first = _rollout(env, 5, actions)
    goal = getattr(env.unwrapped, "goal", None)
    for _ in range(3):  # disturb the simulator and the generators between the two seeded episodes
        env.reset()
        for action in actions[::-1]:
            env.step(action)
    np.testing.assert_array_equal(_rollout(env, 5, actions), first)
    if goal is not None:
        np.testing.assert_array_equal(env.unwrapped.goal, goal)
    other = _rollout(env, 6, actions)
    assert not np.array_equal(other[0], first[0])
    assert goal is None or not np.array_equal(env.unwrapped.goal, goal)


@pytest.mark.parametrize("name, goal_mode", [("walker_walk", "fresh"), (DOOR, "fresh"), (DOOR, "preset")])
def test_first_reset_equals_reset_with_the_construction_seed(name: str, goal_mode: str) -> None:
    a, b = make_env(name, seed=4, goal_mode=goal_mode), make_env(name, seed=4, goal_mode=goal_mode)
    np.testing.assert_array_equal(a.reset()[0], b.reset(seed=4)[0])
    np.testing.assert_array_equal(a.reset()[0], b.reset()[0])  # and the streams stay in step


@pytest.mark.parametrize("name", ["walker_walk", DOOR])
def test_reset_seed_alone_fixes_the_episode_across_instances(name: str) -> None:
    a, b = make_env(name, seed=1), make_env(name, seed=2)
    actions = _actions(a, 50)
    np.testing.assert_array_equal(_rollout(a, 9, actions), _rollout(b, 9, actions))


# --- Meta-World goal modes ------------------------------------------------------------------------------


def test_fresh_mode_draws_a_new_hidden_goal_every_reset(door: gym.Env) -> None:
    goals = []
    for i in range(10):
        obs, _ = door.reset(seed=100) if i == 0 else door.reset()
        np.testing.assert_array_equal(obs[-3:], 0.0)  # goal hidden, as in B-Pref
        goals.append(door.unwrapped.goal)
    assert len({tuple(g) for g in goals}) == 10
    door.reset(seed=100)
    np.testing.assert_array_equal(door.unwrapped.goal, goals[0])


def test_preset_mode_cycles_through_mt1s_fifty_visible_goals() -> None:
    env = make_env(DOOR, seed=0, goal_mode="preset")
    goals = set()
    for _ in range(150):
        obs, _ = env.reset()
        np.testing.assert_allclose(obs[-3:], env.unwrapped.goal, rtol=1e-6)  # goal visible, as in MT1
        goals.add(tuple(env.unwrapped.goal))
    assert 40 <= len(goals) <= 50


# --- time limit and success ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["walker_walk", DOOR])
def test_time_limit_is_a_truncation(name: str, walker: gym.Env, door: gym.Env) -> None:
    env = walker if name == "walker_walk" else door
    env.reset(seed=0)
    action = np.zeros(env.action_space.shape, np.float32)
    for t in range(1, episode_length(name) + 1):
        _, _, terminated, truncated, _ = env.step(action)
        assert terminated is False
        assert truncated is (t == episode_length(name)), t


def test_max_episode_steps_override() -> None:
    env = make_env("cheetah_run", seed=0, max_episode_steps=7)
    env.reset()
    flags = [env.step(env.action_space.sample())[3] for _ in range(7)]
    assert flags == [False] * 6 + [True]


def test_success_flag_reaches_one_under_the_scripted_door_policy(door: gym.Env) -> None:
    from metaworld.policies import SawyerDoorOpenV3Policy

    policy = SawyerDoorOpenV3Policy()
    obs, _ = door.reset(seed=2)
    successes = []
    for _ in range(episode_length(DOOR)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the policy warns that its gains saturate the action
            action = np.clip(policy.get_action(obs.astype(np.float64)), -1, 1).astype(np.float32)
        obs, _, _, truncated, info = door.step(action)
        assert type(info["success"]) is float and info["success"] in (0.0, 1.0)
        successes.append(info["success"])
        if truncated:
            break
    assert successes[0] == 0.0 and max(successes) == 1.0


@pytest.mark.parametrize("goal_mode", ["fresh", "preset"])
@pytest.mark.parametrize("name", METAWORLD_ENVS)
def test_the_scripted_policy_solves_every_task_in_both_goal_modes(name: str, goal_mode: str) -> None:
    # pref_brl.scripted_policy: Meta-World's controller for the task; with the goal hidden ("fresh"), the
    # controllers that steer to it (sweep-into) read it from the environment. The controllers do not solve every
    # draw (sweep-into's fails on 1 of reset seeds 0-11 with the goal hidden): one that they solve is used here.
    import pref_brl

    env = make_env(name, seed=3, goal_mode=goal_mode, max_episode_steps=150)
    policy = pref_brl.scripted_policy(env)
    assert policy.step is None and (policy.obs_dim, policy.act_dim) == ENV_SIZES[name]
    obs, _ = env.reset(seed=0)
    success, truncated = 0.0, False
    while not (success or truncated):
        before = obs.copy()
        action, _ = policy.predict(obs)
        assert np.array_equal(obs, before)  # the controller's in-place shifts stay in its own copy
        assert action.dtype == np.float32 and np.abs(action).max() <= 1.0
        obs, _, _, truncated, info = env.step(action)
        success = info["success"]
    assert success == 1.0, f"{name} ({goal_mode}) not solved in 150 steps"


def test_the_scripted_policy_is_meta_worlds_only(walker: gym.Env) -> None:
    import pref_brl

    with pytest.raises(ValueError, match="scripted policies are Meta-World's, and this is a DMCEnv"):
        pref_brl.scripted_policy(walker)


# --- rendering (optional) --------------------------------------------------------------------------------


@pytest.mark.skipif("MUJOCO_GL" not in os.environ, reason="no headless OpenGL backend on this machine")
@pytest.mark.parametrize("name", ["walker_walk", pytest.param(DOOR, marks=pytest.mark.slow)])
def test_rgb_array_rendering(name: str) -> None:
    env = make_env(name, seed=0, render_mode="rgb_array")
    env.reset()
    frame = env.render()
    assert frame.shape == (480, 480, 3) and frame.dtype == np.uint8 and frame.std() > 0
    assert make_env(name, seed=0).render() is None
    env.close()


# --- rendering contexts at close and at exit --------------------------------------------------------------

_RENDER_THEN_CLOSE = """
import sys, threading
from pref_brl.envs.dmc import DMCEnv

env = DMCEnv("walker", "walk", seed=0, render_mode="rgb_array", render_size=(32, 32))
env.reset(seed=0)
try:
    env.render()  # the context is now current on the main thread
except Exception:
    print("no rendering here")
    sys.exit(0)
if sys.argv[1] == "thread":  # a run trained on a thread of its own closes its envs there
    errors = []
    def close():
        try:
            env.close()
        except Exception as exc:
            errors.append(repr(exc))
    worker = threading.Thread(target=close)
    worker.start()
    worker.join()
    assert not errors, errors
elif sys.argv[1] == "main":
    env.close()
# "exit": the env is left to the garbage collector at interpreter exit
print("ok")
"""


@pytest.mark.parametrize("how", ["main", "thread", "exit"])
def test_a_rendered_env_closes_on_any_thread_and_the_interpreter_exits(how: str) -> None:
    """Closed on the thread that rendered, on another one, or never: no error, and the process ends (a context
    freed at exit once waited forever on dm_control's render thread)."""
    import subprocess
    import sys

    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "osmesa")}
    try:
        done = subprocess.run([sys.executable, "-c", _RENDER_THEN_CLOSE, how], capture_output=True, text=True,
                              timeout=120, env=env)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the process did not end after closing its env ({how})")
    if done.stdout.strip() == "no rendering here":
        pytest.skip("MuJoCo cannot render here (MUJOCO_GL=osmesa and libosmesa6, or egl)")
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
