"""The re-sync twin of the deep bilevel method: re-sync, two-sided clip, KL control, limit, sign, run mode."""

from __future__ import annotations

import numpy as np
import pytest

from pref_brl.tabular.benchmarks import gridworld_goal, random_mdp
from pref_brl.tabular.mdp import occupancy
from pref_brl.tabular.methods import run_method
from pref_brl.tabular.problem import hyperobjective, lower_solution
from pref_brl.tabular.proxy import penalty_point
from pref_brl.tabular.resync import (
    ResyncConfig,
    clipped_surrogate,
    play_round,
    resync_gradient,
    solve_b,
    surrogate_weights,
)
from pref_brl.tabular.resync_study import agreement, study_point
from pref_brl.tabular.upper import logit_grad
from tests.finite_differences import central_difference


def test_b_equals_a_bit_for_bit_right_after_the_resync() -> None:
    problem = gridworld_goal()
    phi = study_point(problem)
    logits_a = lower_solution(problem, phi).logits
    kept = logits_a.copy()
    current, _ = play_round(problem, phi, ResyncConfig(b_steps=0))
    assert np.array_equal(current.inner.logits, logits_a) and np.array_equal(current.policy_b, current.policy_a)
    uniforms = np.random.default_rng(0).random((8, current.horizon, 2))
    assert np.array_equal(current.sampled_term(problem, phi, uniforms), np.zeros(problem.dim))  # CRN: exactly 0
    moved = solve_b(problem, phi, logits_a, ResyncConfig(b_steps=3))
    assert np.array_equal(logits_a, kept)  # B's steps never touch A
    assert not np.array_equal(moved.logits, logits_a)


def test_two_sided_clip_stops_a_ratio_beyond_the_range_on_its_binding_side() -> None:
    policy_a = np.full((2, 2), 0.5)
    weights = np.array([[1.0, -1.0], [1.0, -1.0]])  # Σ_a π_A c = 0 in both states
    # state 0: ρ = (0.6, 1.4): c > 0 below 1 − ε and c < 0 above 1 + ε, both clipped; state 1: ρ = (1.4, 0.6)
    logits = np.log(np.array([[0.3, 0.7], [0.7, 0.3]]))
    _, grad = clipped_surrogate(weights, policy_a, logits, clip=0.2)
    assert np.array_equal(grad[0], np.zeros(2))
    assert np.abs(grad[1]).min() > 0.1  # the pessimistic side is not clipped
    _, unclipped = clipped_surrogate(weights, policy_a, logits, clip=np.inf)
    assert np.abs(unclipped[0]).min() > 0.1 and np.allclose(unclipped[1], grad[1])
    # one entry clipped among three: its contribution, and only it, is gone
    policy_a3, weights3 = np.array([[0.2, 0.3, 0.5]]), np.array([[2.0, -1.0, -0.2]])
    logits3 = np.log(np.array([[0.1, 0.35, 0.55]]))  # ρ = (0.5, 1.17, 1.1): entry 0 binds
    _, grad3 = clipped_surrogate(weights3, policy_a3, logits3, clip=0.2)
    _, without = clipped_surrogate(weights3 * np.array([[0.0, 1.0, 1.0]]), policy_a3, logits3, clip=np.inf)
    assert np.allclose(grad3, without, atol=1e-15)
    fd = central_difference(lambda x: clipped_surrogate(weights3, policy_a3, x, 0.2)[0], logits3, step=1e-6)
    assert np.allclose(grad3, fd, atol=1e-8)


def test_surrogate_gradient_at_a_is_the_upper_loss_gradient() -> None:
    for problem in (gridworld_goal(), random_mdp()):
        phi = study_point(problem)
        solution = lower_solution(problem, phi)
        weights = surrogate_weights(problem, phi, solution.policy)
        _, grad = clipped_surrogate(weights, solution.policy, solution.logits, clip=0.2)
        assert np.allclose(grad, logit_grad(problem.upper, phi, solution.policy), atol=1e-13, rtol=1e-10)


def test_adaptive_kl_keeps_b_within_twice_the_target_on_a_tiny_problem() -> None:
    problem = random_mdp(seed=0, n_states=3, n_actions=2, dim=3)
    logits_a = lower_solution(problem, problem.phi0).logits
    target = 0.002
    adaptive = solve_b(problem, problem.phi0, logits_a, ResyncConfig(penalty_weight=1.0, b_steps=600,
                                                                      kl_target=target))
    assert adaptive.kls.max() <= 2.0 * target
    assert adaptive.kls[-1] >= target / 3.0  # B does move: the bound is not met by standing still
    frozen = solve_b(problem, problem.phi0, logits_a, ResyncConfig(penalty_weight=1.0, b_steps=600, kl_target=target,
                                                                    kl_coef=1e-8, kl_every=10_000))
    assert frozen.kls.max() > 2.0 * target  # without the adaptation the bound fails


def test_twin_approaches_the_exact_penalty_gradient_with_many_steps_and_a_loose_kl() -> None:
    problem, weight = random_mdp(), 30.0
    phi = study_point(problem)
    exact = penalty_point(problem, phi, (1.0 - problem.mdp.discount) * weight).grad  # λ = (1 − γ) λ̃
    loose = {"penalty_weight": weight, "clip": np.inf, "kl_target": 10.0, "kl_coef": 1e-3, "kl_every": 1}
    long = agreement(resync_gradient(problem, phi, ResyncConfig(b_steps=1000, **loose)).expected, exact)
    short = agreement(resync_gradient(problem, phi, ResyncConfig(b_steps=10, **loose)).expected, exact)
    assert long.cos > 0.99 and long.err < 0.1, long
    assert short.err > 3.0 * long.err, (short, long)


def test_sampled_rounds_are_unbiased_for_the_expected_estimate() -> None:
    problem = random_mdp()
    phi = study_point(problem)
    config = ResyncConfig(penalty_weight=3.0, b_steps=200, variant="sampled", n_pairs=32, pair_horizon=12, seed=4)
    estimate = resync_gradient(problem, phi, config, repetitions=300)
    standard_error = estimate.rounds.std(axis=0) / np.sqrt(len(estimate.rounds))
    assert np.all(np.abs(estimate.estimate - estimate.expected) <= 4.5 * standard_error + 1e-10)
    upper = problem.upper.grad_phi(phi, lower_solution(problem, phi).policy)
    assert np.linalg.norm(estimate.expected - upper) > 10 * standard_error.max()  # a non-trivial λ-term


def test_one_reward_step_with_the_lambda_term_raises_reward_where_b_goes_relative_to_a() -> None:
    problem = gridworld_goal()
    phi = study_point(problem)
    current, _ = play_round(problem, phi, ResyncConfig(penalty_weight=10.0, kl_coef=1.0, kl_every=1, b_steps=300))
    visit_gap = occupancy(problem.mdp, current.policy_b) - occupancy(problem.mdp, current.policy_a)
    uniforms = np.random.default_rng(1).random((64, current.horizon, 2))
    for term in (current.expected_term(problem, phi), current.sampled_term(problem, phi, uniforms)):
        change = problem.reward(phi - 0.1 * term) - problem.reward(phi)
        assert float((visit_gap * change).sum()) > 1e-6


@pytest.mark.parametrize("variant", ["exact", "sampled"])
def test_run_mode_decreases_F_counts_its_costs_and_is_reproducible(variant: str) -> None:
    problem = gridworld_goal()
    settings = {"iterations": 8, "phi_lr": 5.0, "b_steps": 100, "kl_coef": 1.0, "kl_every": 1,
                "variant": variant, "seed": 2}
    trace = run_method("resync", problem, **settings)
    assert trace.label == f"resync/{variant}"
    assert trace.values[-1] < -0.3  # past partial's biased fixed point (F = −0.271) within 8 rounds
    assert np.all(np.diff(trace.exact_calls) > 0) and np.all(np.diff(trace.upper_calls) > 0)
    assert np.all(np.diff(trace.samples) > 0) if variant == "sampled" else np.all(trace.samples == 0)
    assert np.array_equal(trace.phis, run_method("resync", problem, **settings).phis)
    two_steps = run_method("resync", problem, **{**settings, "iterations": 2, "penalty_steps": 2})
    assert not np.allclose(two_steps.phis[1], trace.phis[1])
    assert two_steps.values[-1] == pytest.approx(hyperobjective(problem, two_steps.phis[-1]))
    with pytest.raises(ValueError, match="kl_target"):
        ResyncConfig(kl_target=0.0)

