"""The bilevel penalty update's pure functions: gradient paths, exact zeros under common random numbers,
the sign of each estimator, the discounting, Ψ_f's clipped surrogate (learner-level tests are in
tests/test_bilevel_learner.py)."""

from __future__ import annotations

import numpy as np
import torch

from pref_brl.agents.sac import SACConfig
from pref_brl.bilevel.penalty import (
    discounted_returns,
    penalty_snr,
    penalty_term,
    shared_states_term,
    sobirl_term,
    stack_episodes,
    upper_score_surrogate,
)
from pref_brl.preferences import Episode
from pref_brl.reward_model import RewardEnsemble

OBS, ACT, T = 4, 2, 12
GAMMA = 0.9


def episodes(seed: int, n: int = 2, agent: str = "A") -> list[Episode]:
    rng = np.random.default_rng(seed)
    return [Episode(rng.normal(size=(T, OBS)), rng.uniform(-1, 1, (T, ACT)), rng.normal(size=T), agent, i)
            for i in range(n)]


def ensemble() -> RewardEnsemble:
    return RewardEnsemble(OBS, ACT, n_members=3, hidden=8, n_layers=2, seed=0)


def member_grads(ens: RewardEnsemble) -> list[torch.Tensor]:
    """Per-parameter gradients, each [M, ...] (the leading axis is the member)."""
    return [p.grad for p in ens.parameters()]


def test_penalty_reaches_every_parameter_of_every_member() -> None:
    ens = ensemble()
    sa_a, m_a = stack_episodes(episodes(0))
    sa_b, m_b = stack_episodes(episodes(1, agent="B"))
    penalty_term(ens, sa_a, m_a, sa_b, m_b, lam=0.1, gamma=GAMMA).sum().backward()
    for grad in member_grads(ens):
        per_member = grad.reshape(grad.shape[0], -1).abs().sum(1)
        assert torch.all(per_member > 0)


def test_identical_trajectories_give_exactly_zero_value_and_gradient() -> None:
    ens = ensemble()
    eps = episodes(3)
    sa, mask = stack_episodes(eps)
    value = penalty_term(ens, sa, mask, sa.clone(), mask.clone(), lam=1.0, gamma=GAMMA)
    assert torch.equal(value, torch.zeros(3))
    value.sum().backward()
    assert all(torch.equal(g, torch.zeros_like(g)) for g in member_grads(ens))


def test_discounted_returns_match_a_plain_loop() -> None:
    ens = ensemble()
    eps = episodes(4, n=3)
    eps[1] = Episode(eps[1].obs[:7], eps[1].act[:7], eps[1].true_reward[:7])  # unequal lengths are masked
    sa, mask = stack_episodes(eps)
    got = discounted_returns(ens, sa, mask, GAMMA)
    for i, ep in enumerate(eps):
        r = ens.member_rewards(torch.as_tensor(np.concatenate([ep.obs, ep.act], 1)))
        want = (r * GAMMA ** torch.arange(len(ep))).sum(-1)
        torch.testing.assert_close(got[:, i], want)


def test_one_reward_step_raises_reward_on_b_relative_to_a() -> None:
    ens = ensemble()
    sa_a, m_a = stack_episodes(episodes(5))
    sa_b, m_b = stack_episodes(episodes(6, agent="B"))

    def b_minus_a() -> torch.Tensor:
        with torch.no_grad():
            return (discounted_returns(ens, sa_b, m_b, GAMMA).mean(-1)
                    - discounted_returns(ens, sa_a, m_a, GAMMA).mean(-1))

    before = b_minus_a()
    opt = torch.optim.SGD(ens.parameters(), lr=1e-2)
    penalty_term(ens, sa_a, m_a, sa_b, m_b, lam=0.1, gamma=GAMMA).sum().backward()
    opt.step()
    assert torch.all(b_minus_a() > before)


def test_score_surrogate_gradient_is_the_centred_score_function() -> None:
    theta = torch.randn(3, requires_grad=True)
    feats = torch.randn(5, 4, 3)  # log π = feats · θ at 4 steps of 5 pairs
    losses = torch.tensor([0.1, 0.9, 0.4, 0.3, 1.2])
    upper_score_surrogate(feats @ theta, losses, steps_per_pair=4).backward()
    centred = losses - losses.mean()
    want = (centred[:, None] * feats.sum(1)).mean(0)
    torch.testing.assert_close(theta.grad, want)


def test_ratio_surrogate_has_the_score_gradient_at_the_anchor_and_is_bounded() -> None:
    """At π = π_old the capped-ratio surrogate has Ψ_f's gradient; optimised on fixed stored actions the raw
    Σ log π runs away (that is what diverged agent B), the capped ratio does not."""
    from pref_brl.agents.sac import Actor, squashed_log_prob

    torch.manual_seed(0)
    obs, act = torch.randn(8, 20, OBS), torch.rand(8, 20, ACT) * 1.8 - 0.9
    losses = torch.linspace(0.0, 1.0, 8)

    def make_actor() -> Actor:
        return Actor(OBS, ACT, SACConfig(hidden_dim=16), torch.Generator().manual_seed(0))

    actor = make_actor()
    logp = squashed_log_prob(*actor(obs), act).squeeze(-1)
    raw = torch.autograd.grad(upper_score_surrogate(logp, losses, 20), list(actor.parameters()), retain_graph=True)
    capped = torch.autograd.grad(upper_score_surrogate(logp, losses, 20, old_log_probs=logp.detach()),
                                 list(actor.parameters()))
    assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-7) for a, b in zip(raw, capped))

    def optimise(anchored: bool) -> float:
        actor = make_actor()
        with torch.no_grad():
            old = squashed_log_prob(*actor(obs), act).squeeze(-1)
        opt = torch.optim.Adam(actor.parameters(), lr=1e-2)
        for _ in range(500):
            logp = squashed_log_prob(*actor(obs), act).squeeze(-1)
            loss = upper_score_surrogate(logp, losses, 20, old_log_probs=old if anchored else None)
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            return float(actor(obs)[0].abs().max())  # largest pre-tanh mean

    assert optimise(anchored=False) > 1e3
    assert optimise(anchored=True) < 50


def test_two_sided_clip_stops_moving_a_ratio_beyond_one_plus_or_minus_eps() -> None:
    """Each step's gradient vanishes once its ratio has moved past 1 ± ε the way its c_i pushes it (and past
    the dual clip against c_i > 0); inside the range it is c_i ρ ∂log π."""
    eps, losses = 0.2, torch.tensor([1.0, 0.0])  # centred: c = [+0.5, -0.5]
    log_ratio = torch.log(torch.tensor([[0.7, 0.9, 1.1, 1.3, 4.0], [0.7, 0.9, 1.1, 1.3, 4.0]]))
    logp = log_ratio.clone().requires_grad_(True)
    upper_score_surrogate(logp, losses, 5, old_log_probs=torch.zeros(2, 5), clip=eps).backward()
    rho, g = log_ratio.exp(), logp.grad
    # c > 0 pushes ρ down: free above 1 − ε (up to the dual clip 3), stopped below 1 − ε and above 3
    torch.testing.assert_close(g[0], torch.tensor([0.0, 0.5 * 0.9, 0.5 * 1.1, 0.5 * 1.3, 0.0]) / 2)
    # c < 0 pushes ρ up: free below 1 + ε, stopped above 1 + ε
    torch.testing.assert_close(g[1], -torch.tensor([0.5 * 0.7, 0.5 * 0.9, 0.5 * 1.1, 0.0, 0.0]) / 2)
    assert torch.all(rho > 0)


def test_shared_states_step_raises_reward_of_b_actions_relative_to_a() -> None:
    ens = ensemble()
    obs, act_a, act_b = torch.randn(64, OBS), torch.rand(64, ACT) * 2 - 1, torch.rand(64, ACT) * 2 - 1

    def b_minus_a() -> torch.Tensor:
        with torch.no_grad():
            return (ens.member_rewards(torch.cat([obs, act_b], -1)) - ens.member_rewards(
                torch.cat([obs, act_a], -1))).mean(-1)

    before = b_minus_a()
    shared_states_term(ens, obs, act_a, act_b, lam=0.01, gamma=GAMMA).sum().backward()
    torch.optim.SGD(ens.parameters(), lr=1e-2).step()
    assert torch.all(b_minus_a() > before)


def test_penalty_term_value_is_lambda_times_the_discounted_return_gap() -> None:
    """The λ-term is exactly λ [mean R^γ(A) − mean R^γ(B)] with R^γ from a plain loop: a dropped or doubled
    factor (λ's 1 − γ, γ^t) changes it."""
    ens = ensemble()
    eps_a, eps_b = episodes(7), episodes(8, agent="B")
    sa_a, m_a = stack_episodes(eps_a)
    sa_b, m_b = stack_episodes(eps_b)

    def plain(eps) -> torch.Tensor:
        rows = [(ens.member_rewards(torch.as_tensor(np.concatenate([e.obs, e.act], 1)))
                 * GAMMA ** torch.arange(len(e))).sum(-1) for e in eps]
        return torch.stack(rows, -1).mean(-1)

    lam = (1 - GAMMA) * 2.5
    torch.testing.assert_close(penalty_term(ens, sa_a, m_a, sa_b, m_b, lam, GAMMA), lam * (plain(eps_a) - plain(eps_b)))


def test_sobirl_step_lowers_reward_at_badly_predicted_actions_relative_to_the_policys() -> None:
    """SoBiRL's term ℓ_i α⁻¹ Σ (r(s, a) − E r(s, a′)): a descent step lowers the labelled actions' reward
    relative to the policy's alternatives, more for pairs with a larger loss."""
    ens = ensemble()
    sa = torch.randn(2, 6, OBS + ACT)
    sa_alt = torch.cat([sa[..., :OBS].expand(3, -1, -1, -1), torch.rand(3, 2, 6, ACT) * 2 - 1], -1)
    losses = torch.tensor([[2.0, 0.0]]).expand(3, -1)

    def advantage() -> torch.Tensor:
        with torch.no_grad():
            r = ens.member_rewards(sa.reshape(-1, OBS + ACT)).reshape(3, 2, 6)
            r_alt = ens.member_rewards(sa_alt.reshape(-1, OBS + ACT)).reshape(3, 3, 2, 6).mean(1)
            return (r - r_alt).sum(-1)[:, 0]

    before = advantage()
    sobirl_term(ens, sa, sa_alt, losses, alpha=0.1).sum().backward()
    torch.optim.SGD(ens.parameters(), lr=1e-3).step()
    assert torch.all(advantage() < before)


def test_penalty_snr_is_large_for_a_consistent_gap_and_small_for_noise() -> None:
    ens = ensemble()
    rng = np.random.default_rng(0)
    base = rng.normal(size=(8, T, OBS + ACT)).astype(np.float32)
    shifted = base + np.float32(0.5)  # every pair differs the same way
    noisy = base + rng.normal(scale=0.5, size=base.shape).astype(np.float32)  # pairs differ at random
    mask = torch.ones(8, T)
    consistent = penalty_snr(ens, torch.as_tensor(base), mask, torch.as_tensor(shifted), mask, GAMMA)
    random = penalty_snr(ens, torch.as_tensor(base), mask, torch.as_tensor(noisy), mask, GAMMA)
    assert consistent > 3 and random < 2, (consistent, random)  # pure noise: about 1
    one = torch.as_tensor(base[:1])
    assert np.isnan(penalty_snr(ens, one, mask[:1], one, mask[:1], GAMMA))


