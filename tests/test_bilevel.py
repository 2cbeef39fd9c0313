"""The bilevel penalty update: gradient paths, exact zeros under common random numbers, the sign,
λ̃ = 0 ≡ pebble, paired episodes, and a full smoke run that resumes exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agents.sac import SAC, SACConfig
from pref_brl.bilevel.learner import copy_agent
from pref_brl.bilevel.penalty import discounted_returns, penalty_term, stack_episodes, upper_score_surrogate
from pref_brl.preferences import Episode
from pref_brl.reward_model import RewardEnsemble
from pref_brl.trainer import Trainer
from tests.conftest import scalars_without_time
from tests.test_trainer import final_params, run_until_killed

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


def bilevel_cfg(tiny, name: str = "bilevel", **kw):
    return tiny(name, method="bilevel", steps=1400, num_interact=400, max_feedback=16, paired_episodes=2, **kw)


def test_penalty_reaches_every_parameter_of_every_member() -> None:
    ens = ensemble()
    sa_a, m_a = stack_episodes(episodes(0))
    sa_b, m_b = stack_episodes(episodes(1, agent="B"))
    penalty_term(ens, sa_a, m_a, sa_b, m_b, lam=0.1, gamma=GAMMA).sum().backward()
    for grad in member_grads(ens):
        per_member = grad.reshape(grad.shape[0], -1).abs().sum(1)
        assert torch.all(per_member > 0)


def test_sac_losses_give_no_gradient_to_the_reward_model() -> None:
    """Adding λ·Q(s, a) (the paper's public code) or any SAC loss changes nothing for φ."""
    ens, agent = ensemble(), SAC(OBS, ACT, SACConfig(hidden_dim=8))
    obs, act = torch.randn(16, OBS), torch.rand(16, ACT) * 2 - 1
    reward = ens.mean_reward(obs, act).unsqueeze(-1)  # what the replay buffer stores (relabelled, no graph)
    from agents.replay import Batch

    batch = Batch(obs, act, reward, torch.randn(16, OBS), torch.ones(16, 1))
    lam_q = 0.5 * agent.q_values(obs, act).min(0).values.mean()
    loss = agent.critic_loss(batch) + agent.actor_loss(obs)[0] + lam_q
    loss.backward()
    assert all(p.grad is None for p in ens.parameters())
    sa = torch.cat([obs, act], -1)
    fresh_lam_q = 0.5 * agent.q_values(obs, act).min(0).values.mean()  # with its graph, unlike a constant
    with_q = torch.autograd.grad(ens.member_rewards(sa).sum() + fresh_lam_q, list(ens.parameters()))
    without_q = torch.autograd.grad(ens.member_rewards(sa).sum(), list(ens.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(with_q, without_q))


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
    from agents.sac import Actor, squashed_log_prob

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


def play_episode(trainer: Trainer) -> None:
    trainer.begin_episode()
    while trainer.obs is not None:
        trainer.collect_step()


def paired_trainer(tiny, b_equals_a: bool) -> Trainer:
    trainer = Trainer(bilevel_cfg(tiny, num_seed_steps=0), progress=False)
    a = trainer.agents["A"]
    trainer.agents["B"] = b = copy_agent(a)
    if not b_equals_a:
        with torch.no_grad():
            for p in b.actor.parameters():
                p.add_(0.3 * torch.randn_like(p))
    trainer.learner.next_round = trainer.step + 1  # inside the paired block
    play_episode(trainer)
    play_episode(trainer)
    return trainer


def test_paired_episodes_share_reset_seed_and_noise_and_cancel_exactly(tiny) -> None:
    trainer = paired_trainer(tiny, b_equals_a=True)
    (ep_a, ep_b), = trainer.learner.pairs
    assert (ep_a.agent, ep_b.agent) == ("A", "B") and ep_a.reset_seed == ep_b.reset_seed
    assert np.array_equal(ep_a.obs, ep_b.obs) and np.array_equal(ep_a.act, ep_b.act)
    extra, diag = trainer.learner.penalty_loss_fn()
    value = extra(trainer.learner.ensemble)
    assert torch.equal(value, torch.zeros_like(value)) and diag["bilevel/gap"] == 0.0
    value.sum().backward()
    assert all(torch.equal(p.grad, torch.zeros_like(p)) for p in trainer.learner.ensemble.parameters())


def test_paired_episodes_use_the_same_noise_for_different_policies(tiny) -> None:
    trainer = paired_trainer(tiny, b_equals_a=False)
    (ep_a, ep_b), = trainer.learner.pairs
    assert np.array_equal(ep_a.obs[0], ep_b.obs[0]) and not np.array_equal(ep_a.act, ep_b.act)
    obs = torch.as_tensor(ep_a.obs[:1])
    with torch.no_grad():
        mu_a, ls_a = trainer.agents["A"].actor(obs)
        mu_b, ls_b = trainer.agents["B"].actor(obs)
        eps = (torch.atanh(torch.as_tensor(ep_a.act[:1]).clamp(-0.999999, 0.999999)) - mu_a) / ls_a.exp()
        torch.testing.assert_close(torch.tanh(mu_b + ls_b.exp() * eps), torch.as_tensor(ep_b.act[:1]),
                                   atol=1e-4, rtol=1e-4)


def test_zero_penalty_weight_reproduces_pebble_bit_for_bit(tiny) -> None:
    pebble = tiny("pebble", method="pebble", steps=900)
    bilevel = tiny("bilevel", method="bilevel", penalty_weight=0.0, steps=900)
    Trainer(pebble, progress=False).train()
    trainer = Trainer(bilevel, progress=False)
    trainer.train()
    assert "B" not in trainer.agents
    assert scalars_without_time(pebble.run_dir) == scalars_without_time(bilevel.run_dir)
    assert all(torch.equal(x, y) for x, y in zip(final_params(pebble), final_params(bilevel)))


def test_bilevel_smoke_crosses_every_phase_and_resumes_exactly(tiny) -> None:
    straight, killed = bilevel_cfg(tiny, "straight"), bilevel_cfg(tiny, "killed")
    trainer = Trainer(straight, progress=False)
    trainer.train()
    assert "B" in trainer.agents and trainer.learner.total == 12 and trainer.learner.rounds == 3
    records = scalars_without_time(straight.run_dir)
    keys = set().union(*records)
    assert {"explore/state_entropy", "feedback/total", "reward/accuracy", "bilevel/gap", "bilevel/kl_ab",
            "bilevel/penalty_grad_norm", "bilevel/ce_grad_norm", "bilevel/lambda", "eval/mean_reward",
            "eval_B/mean_reward", "train_B/actor_loss"} <= keys
    assert max(r.get("feedback/total", 0) for r in records) <= straight.max_feedback
    run_until_killed(killed, kill_at=1150)  # after the third feedback round; resumes from step 1000
    Trainer(killed, progress=False).train()
    assert scalars_without_time(killed.run_dir) == records
    b_straight = torch.load(f"{straight.run_dir}/checkpoint.pt", weights_only=False)["agents"]["B"]
    b_killed = torch.load(f"{killed.run_dir}/checkpoint.pt", weights_only=False)["agents"]["B"]
    assert all(torch.equal(x, y) for x, y in zip(b_straight["actor"].values(), b_killed["actor"].values()))
    assert all(torch.equal(x, y) for x, y in zip(final_params(killed), final_params(straight)))


def test_round_before_any_b_episode_queries_a_and_b_alike(tiny) -> None:
    """num_interact not a multiple of the episode length: a round can come before B finished an episode."""
    cfg = tiny("odd", method="bilevel", steps=900, num_interact=330, paired_episodes=1)
    trainer = Trainer(cfg, progress=False)
    trainer.train()
    assert trainer.learner.rounds == 2 and trainer.learner.total == 8


@pytest.mark.parametrize("method, extra", [("sobirl", {}), ("bilevel", {"estimator": "shared-states"})])
def test_variants_run_and_move_the_reward_model(tiny, method, extra) -> None:
    cfg = tiny(method, method=method, steps=900, num_interact=300, **extra)
    Trainer(cfg, progress=False).train()
    keys = set().union(*scalars_without_time(cfg.run_dir))
    assert "reward/extra_grad_norm" in keys
