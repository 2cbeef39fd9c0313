"""Posing your own tabular problem: the docs example runs and is right, ill-posed problems stop with one
clear error instead of spinning, and an infinitely rational teacher is well defined."""

from __future__ import annotations

import re
import signal
from pathlib import Path

import numpy as np
import pytest

from pref_brl.tabular.benchmarks import preference_gridworld
from pref_brl.tabular.mdp import TabularMDP
from pref_brl.tabular.problem import BilevelProblem
from pref_brl.tabular.proxy import penalty_point
from pref_brl.tabular.rewards import LinearReward
from pref_brl.tabular.upper import PolicyMatchLoss

DOCS = Path(__file__).resolve().parents[1] / "docs" / "tabular.md"


def docs_example() -> str:
    section = DOCS.read_text(encoding="utf-8").split("## Pose your own problem", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_docs_example_runs_and_the_penalty_gradient_is_close_to_the_exact_one() -> None:
    scope: dict = {}
    exec(compile(docs_example(), str(DOCS), "exec"), scope)  # noqa: S102 - the project's own docs
    exact, penalty = scope["exact"], scope["penalty"]
    assert np.linalg.norm(penalty - exact) < 0.05 * np.linalg.norm(exact)


@pytest.fixture
def deadline():
    """Fail instead of hanging if a solver spins."""
    signal.signal(signal.SIGALRM, lambda *_: pytest.fail("the solver did not stop"))
    signal.alarm(60)
    yield
    signal.alarm(0)


def test_a_state_with_zero_occupancy_is_one_clear_error_not_a_hang(deadline) -> None:
    transitions = np.zeros((3, 2, 3))
    transitions[0, :, 1] = transitions[1, :, 0] = transitions[2, :, 2] = 1.0  # state 2 is never reached
    mdp = TabularMDP(transitions, np.array([1.0, 0.0, 0.0]), 0.9)
    upper = PolicyMatchLoss(mdp, np.tile([0.8, 0.2], (3, 1)), phi_cost=0.1)
    problem = BilevelProblem("unreachable", mdp, LinearReward(np.eye(6).reshape(3, 2, 6)), upper, 0.5, np.zeros(6))
    with pytest.raises(ValueError, match="zero occupancy"):
        penalty_point(problem, problem.phi0, 10.0)


def test_an_infinitely_rational_teacher_is_the_limit_of_large_betas() -> None:
    phi = np.random.default_rng(0).normal(size=preference_gridworld().dim) * 0.1
    policy = np.full((25, 5), 0.2)
    values = [preference_gridworld(teacher_beta=b).upper.value(phi, policy) for b in (1e3, float("inf"))]
    assert np.isfinite(values).all() and values[1] == pytest.approx(values[0], rel=1e-6)
