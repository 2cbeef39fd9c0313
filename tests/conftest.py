"""Shared fixtures: tiny configurations that cross every phase of the loop in seconds."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from pref_brl.config import TrainConfig
from pref_brl.logger import read_scalars


def tiny_config(tmp_path: Path, name: str = "run", **overrides) -> TrainConfig:
    """walker_walk with 16-unit networks, 100-step episodes and short phases."""
    base = dict(env="walker_walk", method="sac", seed=0, run_dir=str(tmp_path / name), steps=1000,
                max_episode_steps=100, num_seed_steps=100, num_unsup_steps=200, eval_frequency=500,
                num_eval_episodes=1, checkpoint_frequency=200, log_frequency=100, hidden_dim=16, hidden_depth=1,
                batch_size=16,
                reward_hidden=16, reward_depth=1, max_feedback=12, reward_batch=4, num_interact=200,
                reward_update=3, segment=10, reset_update=5, threads=1,
                compile=False)  # the compiled update has its own tests (tests/test_fast_update.py)
    base.update(overrides)
    return TrainConfig(**base)


def advance(trainer, stop) -> None:
    """Run a Trainer's loop step by step until `stop()` holds (checked after every step, before a due feedback
    round runs), so that a test can look at the learner in the middle of a phase."""
    learner = trainer.learner
    while not stop():
        trainer.env_step()
        if stop():
            return
        if learner.feedback_due(trainer.step):
            learner.feedback_round(trainer.step)


def scalars_without_time(run_dir: str | Path) -> list[dict]:
    """Logged records minus wall-clock-dependent values."""
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in read_scalars(Path(run_dir))]


@pytest.fixture(autouse=True)
def _logging_on_real_stderr():
    """dm_control's absl logging binds its handler to the sys.stderr of its first use: under pytest, one
    test's capture stream, closed when that test ends, after which a later test that logs (submitit does)
    dies with "I/O operation on closed file; lost sys.stderr". Keep absl's handler on the real stderr."""
    yield
    import logging
    import sys

    absl_logging = sys.modules.get("absl.logging")
    if absl_logging is not None:
        absl_logging.get_absl_handler().python_handler.setStream(sys.__stderr__)
    for handler in logging.root.handlers:
        if type(handler) is logging.StreamHandler and getattr(handler.stream, "closed", False):
            handler.setStream(sys.__stderr__)


@pytest.fixture
def tiny(tmp_path: Path):
    def make(name: str = "run", **overrides) -> TrainConfig:
        return tiny_config(tmp_path, name, **overrides)

    return make


def replace(cfg: TrainConfig, **changes) -> TrainConfig:
    return dataclasses.replace(cfg, **changes)
