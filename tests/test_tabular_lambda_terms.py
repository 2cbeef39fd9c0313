"""Estimators of the λ-term on the tabular twin: zero at B = A, their limits, their weighting, unbiased units."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from pref_brl.tabular.benchmarks import gridworld_goal, random_mdp
from pref_brl.tabular.lambda_terms import (
    ESTIMATORS,
    EstimatorSettings,
    TermInputs,
    exact_term,
    expected_term,
    sampled_units,
    truncated_q,
    weighted_values,
)
from pref_brl.tabular.mdp import TabularMDP, state_occupancy
from pref_brl.tabular.problem import lower_solution
from pref_brl.tabular.resync import ResyncConfig, play_round, resync_gradient
from pref_brl.tabular.resync_study import study_point

LONG = 400
"""A horizon long enough that γ^H is below 1e-18 on every benchmark (γ ≤ 0.9)."""
B_SETTINGS = {"b_steps": 300, "kl_coef": 1.0, "kl_every": 1}
"""B's inner solve in these tests: B moves a KL of about δ away from A in a few hundred steps."""


def _inputs(make, **changes) -> TermInputs:
    problem = make()
    phi = study_point(problem)
    current, _ = play_round(problem, phi, ResyncConfig(**B_SETTINGS))
    return dataclasses.replace(current.inputs(problem, phi), **changes)


def _stale_behaviour(make) -> np.ndarray:
    """An earlier A: the soft-optimal policy at the benchmark's initial reward φ₀ (A is at φ₀ + noise)."""
    problem = make()
    return lower_solution(problem, problem.phi0).policy


@pytest.fixture(scope="module", params=[gridworld_goal, random_mdp], ids=["gridworld_goal", "random_mdp"])
def make(request: pytest.FixtureRequest):
    return request.param


@pytest.fixture(scope="module")
def inputs(make) -> TermInputs:
    return _inputs(make)


SETTINGS = [EstimatorSettings("paired-rollouts", 12), EstimatorSettings("branch", 12),
            EstimatorSettings("branch-first-action", 12), EstimatorSettings("shared-states"),
            EstimatorSettings("likelihood-ratio", 12), EstimatorSettings("likelihood-ratio", 12, window=3, clip=1.5)]


def test_every_estimator_is_exactly_zero_when_b_is_a(inputs: TermInputs, make) -> None:
    same = dataclasses.replace(inputs, policy_b=inputs.policy_a.copy())
    stale = _stale_behaviour(make)
    cases = [same, dataclasses.replace(same, behaviour=stale),
             dataclasses.replace(same, behaviour=stale, correct_behaviour=False)]
    assert {s.name for s in SETTINGS} == set(ESTIMATORS)
    zero = np.zeros(inputs.reward_jacobian.shape[-1])
    for case in cases:
        for settings in SETTINGS:
            uniforms = np.random.default_rng(0).random((64, settings.steps(case.mdp), 2))
            assert np.array_equal(expected_term(case, settings), zero), settings
            assert np.array_equal(sampled_units(case, settings, uniforms), np.zeros((64, len(zero)))), settings
    assert np.linalg.norm(exact_term(inputs)) > 1e-3  # and B does differ from A in the other tests


def test_limits_are_the_exact_lambda_term(inputs: TermInputs, make) -> None:
    exact, ratios = exact_term(inputs), inputs.policy_b / inputs.policy_a
    stale = _stale_behaviour(make)
    limits = [(inputs, EstimatorSettings("paired-rollouts", LONG)),
              (inputs, EstimatorSettings("branch-first-action", LONG)),
              (inputs, EstimatorSettings("likelihood-ratio", LONG)),
              (inputs, EstimatorSettings("likelihood-ratio", LONG, window=LONG + 5)),
              (inputs, EstimatorSettings("likelihood-ratio", LONG, clip=float(np.max(ratios)))),
              (dataclasses.replace(inputs, behaviour=stale), EstimatorSettings("likelihood-ratio", LONG))]
    for case, settings in limits:
        np.testing.assert_allclose(expected_term(case, settings), exact, rtol=1e-9, atol=1e-12 * np.abs(exact).max(),
                                   err_msg=str(settings))


def test_truncation_bias_is_bounded_by_the_discounted_tail(inputs: TermInputs) -> None:
    gamma, exact = inputs.mdp.discount, exact_term(inputs)
    bound = 2 * inputs.lam * np.abs(inputs.reward_jacobian).max(axis=(0, 1))  # per component, per step
    for horizon in (1, 3, 8):
        tail = bound * gamma**horizon / (1.0 - gamma)
        for name in ("paired-rollouts", "likelihood-ratio"):
            gap = np.abs(expected_term(inputs, EstimatorSettings(name, horizon)) - exact)
            assert np.all(gap <= tail + 1e-15), (name, horizon)
    short = expected_term(inputs, EstimatorSettings("paired-rollouts", 1))
    assert np.linalg.norm(short - exact) > 1e-3 * np.linalg.norm(exact)  # truncation does cost something


def _occupancy_from(mdp: TabularMDP, start: np.ndarray, policy: np.ndarray) -> np.ndarray:
    return state_occupancy(TabularMDP(mdp.transitions, start, mdp.discount), policy)


def test_branch_weighs_local_differences_by_the_occupancy_started_from_a_s_occupancy(inputs: TermInputs) -> None:
    mdp, lam = inputs.mdp, inputs.lam
    q_b = truncated_q(mdp, inputs.policy_b, inputs.reward_jacobian, LONG)  # Q^B by value iteration
    local = np.einsum("sa,sad->sd", inputs.policy_a - inputs.policy_b, q_b)  # δ(s) of the performance difference
    d_a = state_occupancy(mdp, inputs.policy_a)
    branch = expected_term(inputs, EstimatorSettings("branch", LONG))
    np.testing.assert_allclose(branch, lam * _occupancy_from(mdp, d_a, inputs.policy_a) @ local / (1 - mdp.discount),
                               rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(exact_term(inputs), lam * d_a @ local / (1 - mdp.discount), rtol=1e-8, atol=1e-12)
    # from A's stationary distribution the two weightings coincide, and branch is the λ-term
    values, vectors = np.linalg.eig(mdp.state_transitions(inputs.policy_a).T)
    stationary = np.real(vectors[:, np.argmin(np.abs(values - 1.0))])
    stationary = np.clip(stationary / stationary.sum(), 0.0, None)
    at_rest = dataclasses.replace(inputs, mdp=TabularMDP(mdp.transitions, stationary / stationary.sum(), mdp.discount))
    np.testing.assert_allclose(expected_term(at_rest, EstimatorSettings("branch", LONG)), exact_term(at_rest),
                               rtol=1e-7, atol=1e-10 * np.abs(exact_term(at_rest)).max())


def test_shared_states_is_the_one_decision_likelihood_ratio_and_blind_to_state_only_rewards(inputs: TermInputs) -> None:
    shared = expected_term(inputs, EstimatorSettings("shared-states"))
    one_decision = expected_term(inputs, EstimatorSettings("likelihood-ratio", LONG, window=1))
    np.testing.assert_allclose(shared, one_decision, rtol=1e-8, atol=1e-12 * np.abs(exact_term(inputs)).max())
    state_only = np.ptp(inputs.reward_jacobian, axis=1).max() == 0.0
    if state_only:  # gridworld_goal: a weight per cell; Σ_a (π_A − π_B)(a|s) g(s) = 0 in every state
        assert np.abs(shared).max() <= 1e-15 * np.abs(exact_term(inputs)).max() + 1e-15
    else:
        assert np.linalg.norm(shared) > 0.1 * np.linalg.norm(exact_term(inputs))


@pytest.mark.parametrize("settings", SETTINGS + [EstimatorSettings("likelihood-ratio", 12, clip=1.0)], ids=str)
def test_sampled_units_are_unbiased_for_the_exact_expectation(inputs: TermInputs, settings: EstimatorSettings) -> None:
    units = sampled_units(inputs, settings, np.random.default_rng(3).random((4000, settings.steps(inputs.mdp), 2)))
    expected = expected_term(inputs, settings)
    squared_error = float(np.sum((units.mean(axis=0) - expected) ** 2))
    assert squared_error <= 9.0 * float(units.var(axis=0).sum()) / len(units) + 1e-24, settings
    assert np.linalg.norm(expected) > 1e-3 * np.linalg.norm(exact_term(inputs)) or settings.name == "shared-states"


@pytest.mark.parametrize("correct", [True, False])
def test_stale_behaviour_units_are_unbiased_and_only_the_corrected_form_is_exact(make, correct: bool) -> None:
    stale = _inputs(make, behaviour=_stale_behaviour(make), correct_behaviour=correct)
    settings = EstimatorSettings("likelihood-ratio", 10)
    units = sampled_units(stale, settings, np.random.default_rng(5).random((4000, 10, 2)))
    expected = expected_term(stale, settings)
    assert float(np.sum((units.mean(axis=0) - expected) ** 2)) <= 9.0 * float(units.var(axis=0).sum()) / len(units)
    limit = expected_term(stale, EstimatorSettings("likelihood-ratio", LONG))
    off = np.linalg.norm(limit - exact_term(stale)) / np.linalg.norm(exact_term(stale))
    assert (off < 1e-9) if correct else (off > 1e-3), off


def test_weighted_values_with_unit_ratios_are_the_policy_s_truncated_values(inputs: TermInputs) -> None:
    from pref_brl.tabular.lambda_terms import truncated_values

    mdp, policy = inputs.mdp, inputs.policy_a
    plain = truncated_values(mdp, mdp.initial, policy, inputs.reward_jacobian, 20)
    for window in (0, 1, 7):
        weighted = weighted_values(mdp, policy, np.ones_like(policy), inputs.reward_jacobian, 20, window)
        np.testing.assert_allclose(weighted, plain, rtol=1e-12, atol=1e-15)


def test_resync_twin_runs_each_estimator_and_refuses_bad_settings() -> None:
    problem = random_mdp()
    phi = study_point(problem)
    for name in ESTIMATORS:
        config = ResyncConfig(variant="sampled", n_pairs=40, estimator=name, estimator_horizon=10, seed=1,
                              **B_SETTINGS)
        estimate = resync_gradient(problem, phi, config, repetitions=100)
        squared_error = float(np.sum((estimate.estimate - estimate.expected) ** 2))
        assert squared_error <= 9.0 * float(estimate.rounds.var(axis=0).sum()) / 100, name
        upper = problem.upper.grad_phi(phi, lower_solution(problem, phi).policy)
        assert np.linalg.norm(estimate.expected - upper) > 0.05 * np.linalg.norm(upper), name  # a λ-term is there
    for bad in ({"estimator": "bootstrap"}, {"lr_clip": 0.5}, {"estimator_horizon": -1}):
        with pytest.raises(ValueError):
            ResyncConfig(**bad)
    assert math.isinf(ResyncConfig().lr_clip) and ResyncConfig().estimator == "paired-rollouts"
