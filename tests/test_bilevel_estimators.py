"""The λ-term's estimators in the deep learner: the likelihood ratio's weights and discounting against plain
loops, exactly zero when B = A, gradients that reach the reward model only, and a run with no B episodes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pref_brl.bilevel.learner import ESTIMATORS
from pref_brl.bilevel.penalty import likelihood_ratio_term, per_decision_weights, stack_episodes
from pref_brl.config import Estimator
from pref_brl.trainer import Trainer
from tests.conftest import advance, scalars_without_time
from tests.test_bilevel import GAMMA, ensemble, episodes
from tests.test_bilevel_learner import bilevel_cfg


def test_every_configurable_estimator_has_a_strategy() -> None:
    assert set(ESTIMATORS) == set(Estimator.__args__)


@pytest.mark.parametrize("window, clip", [(0, 0.0), (3, 0.0), (0, 1.5), (4, 2.0), (50, 0.0)])
def test_per_decision_weights_are_windowed_products_of_clipped_ratios(window: int, clip: float) -> None:
    rng = np.random.default_rng(0)
    log_ratios = rng.normal(scale=0.3, size=(3, 9))
    mask = np.ones((3, 9))
    mask[1, 6:] = 0.0  # a shorter episode
    got = per_decision_weights(torch.as_tensor(log_ratios), torch.as_tensor(mask), window, clip).numpy()
    ratios = np.exp(log_ratios) * mask + (1 - mask)
    if clip > 0:
        ratios = np.minimum(ratios, clip)
    for n in range(3):
        for t in range(9):
            start = 0 if window == 0 else max(0, t - window + 1)
            assert got[n, t] == pytest.approx(np.prod(ratios[n, start: t + 1]), rel=1e-10), (n, t)


def test_likelihood_ratio_term_is_lambda_times_the_reweighted_discounted_sum() -> None:
    ens, eps = ensemble(), episodes(3, n=3)
    eps[2] = type(eps[2])(eps[2].obs[:7], eps[2].act[:7], eps[2].true_reward[:7], "A", 2)  # unequal lengths
    sa, mask = stack_episodes(eps)
    weights = torch.as_tensor(np.random.default_rng(1).uniform(0, 2, mask.shape), dtype=torch.float32) * mask
    got = likelihood_ratio_term(ens, sa, mask, weights, lam=0.7, gamma=GAMMA)
    with torch.no_grad():
        want = torch.zeros(ens.n_members)
        for n, ep in enumerate(eps):
            rewards = ens.member_rewards(torch.as_tensor(np.concatenate([ep.obs, ep.act], 1)))
            for t in range(len(ep)):
                want += GAMMA**t * (1 - weights[n, t]) * rewards[:, t]
    torch.testing.assert_close(got.detach(), 0.7 * want / len(eps))


def lr_trainer(tiny, **kw) -> Trainer:
    """A trainer right after the second round's B solve and penalty update, estimator likelihood-ratio."""
    trainer = Trainer(bilevel_cfg(tiny, estimator="likelihood-ratio", lr_episodes=4, lr_window=30, **kw),
                      progress=False)
    advance(trainer, lambda: trainer.learner.b_actor is not None)
    return trainer


def test_likelihood_ratio_is_exactly_zero_when_b_is_a(tiny) -> None:
    learner = lr_trainer(tiny, b_updates=0).learner
    closure, snr = learner._penalty_closure([])
    ens = learner.ensemble
    ens.zero_grad(set_to_none=True)
    value = closure(ens)
    assert torch.equal(value, torch.zeros_like(value)) and math.isnan(snr)  # no signal: every unit is 0
    value.sum().backward()
    assert all(p.grad is None or torch.count_nonzero(p.grad) == 0 for p in ens.parameters())


def _log_prob(actor, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
    """log π(a|s) of a tanh-squashed Gaussian, by torch.distributions (independent of the agent's code)."""
    mu, log_std = actor(obs)
    dist = torch.distributions.TransformedDistribution(
        torch.distributions.Normal(mu, log_std.exp()), [torch.distributions.TanhTransform()])
    return dist.log_prob(act).sum(-1)


def test_likelihood_ratio_weighs_b_against_a_and_its_gradient_reaches_the_reward_model_only(tiny) -> None:
    trainer = lr_trainer(tiny, b_updates=100)
    learner = trainer.learner
    sa, _ = stack_episodes(learner.store.recent("A", 4))
    obs, act = sa[..., : learner.ensemble.obs_dim], sa[..., learner.ensemble.obs_dim:]
    inside = act.abs().amax(-1) < 0.999  # away from the squashing's clipped edge
    with torch.no_grad():
        want = _log_prob(learner.b_actor, obs, act) - _log_prob(learner.anchor, obs, act)
    torch.testing.assert_close(learner._log_ratios(sa)[inside], want[inside], atol=2e-3, rtol=1e-3)
    assert want[inside].abs().max() > 0.05  # B has moved: the direction of the ratio matters
    for net in (learner.b_actor, learner.anchor, trainer.agents["A"].actor):
        net.zero_grad(set_to_none=True)
    closure, snr = learner._penalty_closure([])
    value = closure(learner.ensemble)
    assert torch.count_nonzero(value) == learner.ensemble.n_members and math.isfinite(snr) and snr > 0
    learner.ensemble.zero_grad(set_to_none=True)
    value.sum().backward()
    assert all(p.grad is not None and torch.count_nonzero(p.grad) > 0 for p in learner.ensemble.parameters())
    for net in (learner.b_actor, learner.anchor, trainer.agents["A"].actor):  # the weights are data
        assert all(p.grad is None for p in net.parameters())


def test_likelihood_ratio_run_plays_no_b_episode_and_logs_its_snr(tiny) -> None:
    cfg = bilevel_cfg(tiny, estimator="likelihood-ratio", lr_episodes=3, b_updates=30)
    trainer = Trainer(cfg, progress=False)
    trainer.train()
    assert trainer.learner.store.episodes("B") == []  # no extra env steps: every step is A's
    rounds = [r for r in scalars_without_time(cfg.run_dir) if "bilevel/penalty_grad_norm" in r]
    assert len(rounds) >= 2 and all(math.isfinite(r["bilevel/penalty_snr"]) for r in rounds)
