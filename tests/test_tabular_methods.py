"""The four tabular methods behind one table: each decreases F, costs are counted, runs are reproducible."""

from __future__ import annotations

import numpy as np
import pytest

from pref_brl.experiments.gridworld import StudyConfig, method_settings
from pref_brl.tabular.benchmarks import gridworld_goal, preference_gridworld
from pref_brl.tabular.common import Trace
from pref_brl.tabular.methods import METHODS, PAPER_METHODS, run_method, run_reference
from pref_brl.tabular.penalty_method import PenaltyConfig
from pref_brl.tabular.problem import lower_solution
from pref_brl.tabular.proxy import penalty_point
from pref_brl.tabular.regularized_ac import RegularizedACConfig

RUNS = [(m, v) for m in sorted(PAPER_METHODS) for v in ("exact", "sampled")]


def _run(benchmark: str, method: str, variant: str, iterations: int, seed: int = 0) -> Trace:
    problem = {"gridworld_goal": gridworld_goal, "preference_gridworld": preference_gridworld}[benchmark]()
    settings = method_settings(benchmark, method, variant, seed, StudyConfig(iterations=iterations))
    return run_method(method, problem, **settings)


def test_the_table_holds_the_four_methods_of_the_papers_and_the_resync_twin() -> None:
    assert sorted(METHODS) == ["partial", "penalty", "regularized_ac", "resync", "sobirl"]
    assert sorted(PAPER_METHODS) == ["partial", "penalty", "regularized_ac", "sobirl"]
    with pytest.raises(KeyError, match="unknown method"):
        run_method("pebble", gridworld_goal())


@pytest.mark.parametrize(("method", "variant"), RUNS)
def test_every_method_decreases_F_on_the_gridworld(method: str, variant: str) -> None:
    trace = _run("gridworld_goal", method, variant, iterations=60)
    assert trace.values[-1] < trace.values[0] - 0.2  # F(φ₀) − F_ref ≈ 0.43 on this benchmark
    assert trace.phis.shape == (61, gridworld_goal().dim) and trace.values.shape == (61,)


@pytest.mark.parametrize(("method", "variant"), RUNS)
def test_every_method_decreases_F_on_the_preference_gridworld(method: str, variant: str) -> None:
    trace = _run("preference_gridworld", method, variant, iterations=100)
    assert trace.values[-1] < trace.values[0] - 1e-3


@pytest.mark.parametrize(("method", "variant"), RUNS)
def test_costs_are_counted_in_the_right_currency(method: str, variant: str) -> None:
    trace = _run("gridworld_goal", method, variant, iterations=5)
    spent, unspent = (trace.samples, trace.exact_calls) if variant == "sampled" else (trace.exact_calls, trace.samples)
    assert spent[0] == 0 and np.all(np.diff(spent) > 0) and np.all(unspent == 0)
    assert np.all(np.diff(trace.upper_calls) > 0)
    assert np.array_equal(trace.cost, spent)


@pytest.mark.parametrize("method", sorted(PAPER_METHODS))
def test_same_seed_same_numbers(method: str) -> None:
    first, again = (_run("gridworld_goal", method, "sampled", iterations=8, seed=3) for _ in range(2))
    other = _run("gridworld_goal", method, "sampled", iterations=8, seed=4)
    assert np.array_equal(first.phis, again.phis)
    if method != "partial":  # partial's step μ(φ − φ_ref) on this benchmark does not see the policy
        assert not np.array_equal(first.phis, other.phis)


def test_partial_stalls_at_a_biased_point_that_sobirl_leaves() -> None:
    problem = gridworld_goal()
    partial = _run("gridworld_goal", "partial", "exact", iterations=300)
    phi = partial.phis[-1]
    own_step = problem.upper.grad_phi(phi, lower_solution(problem, phi).policy)
    assert np.linalg.norm(own_step) < 1e-8  # a fixed point of its own update ...
    assert partial.grad_norms[-1] > 0.1  # ... that is not stationary for F
    sobirl = _run("gridworld_goal", "sobirl", "exact", iterations=300)
    assert sobirl.grad_norms[-1] < 1e-8
    assert sobirl.values[-1] < partial.values[-1] - 0.05


def test_exact_methods_approach_the_oracle() -> None:
    problem = gridworld_goal()
    reference = run_reference(problem, 300, 5.0)
    for method in ("penalty", "sobirl", "regularized_ac"):
        trace = _run("gridworld_goal", method, "exact", iterations=300)
        assert trace.values[-1] == pytest.approx(reference.values[-1], abs=5e-3)


def test_attenuating_entropy_beats_a_constant_extra_entropy() -> None:
    problem = gridworld_goal()
    settings = {"iterations": 150, "phi_lr": 5.0, "lam": 20.0}
    decaying = run_method("regularized_ac", problem, tau_decay=0.5, **settings)
    constant = run_method("regularized_ac", problem, tau_decay=0.0, **settings)
    assert decaying.values[-1] < constant.values[-1] - 0.03
    assert decaying.grad_norms[-1] < 0.5 * constant.grad_norms[-1]
    with pytest.raises(ValueError, match="time-scales"):
        RegularizedACConfig(critic_decay=0.5, actor_decay=0.1)


def test_penalty_with_exact_inner_solves_is_stationary_for_the_proxy_not_for_F() -> None:
    problem = gridworld_goal()
    trace = run_method("penalty", problem, iterations=300, phi_lr=5.0, lam=20.0, inner_solve=True)
    phi = trace.phis[-1]
    assert np.linalg.norm(penalty_point(problem, phi, 20.0).grad) < 1e-7
    assert 1e-5 < trace.grad_norms[-1] < 1e-2  # the O(1/λ) gap between the proxy and F
    with pytest.raises(ValueError, match="exact variant"):
        PenaltyConfig(variant="sampled", inner_solve=True)
