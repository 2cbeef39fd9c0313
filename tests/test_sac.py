"""SAC losses, gradient isolation and target bookkeeping (tiny networks, CPU)."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch.distributions import Normal, TanhTransform, TransformedDistribution

from pref_brl.agents.replay import Batch
from pref_brl.agents.sac import SAC, SACConfig, squashed_log_prob, squashed_sample

OBS, ACT = 5, 3


def make_agent(seed: int = 0) -> SAC:
    return SAC(OBS, ACT, SACConfig(hidden_dim=16, hidden_depth=2), seed=seed)


def make_batch(n: int = 8, seed: int = 0, not_done: float = 1.0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    return Batch(torch.randn(n, OBS, generator=g), torch.rand(n, ACT, generator=g) * 2 - 1,
                 torch.randn(n, 1, generator=g), torch.randn(n, OBS, generator=g), torch.full((n, 1), not_done))


def grads_of(module_params) -> list[bool]:
    return [p.grad is not None and bool(p.grad.abs().sum() > 0) for p in module_params]


def zero_all(agent: SAC) -> None:
    for p in [*agent.actor.parameters(), *agent.critic.parameters(), agent.log_alpha]:
        p.grad = None


def test_critic_loss_touches_only_critic() -> None:
    agent = make_agent()
    agent.critic_loss(make_batch()).backward()
    assert all(grads_of(agent.critic.parameters()))
    assert not any(grads_of(agent.actor.parameters()))
    assert agent.log_alpha.grad is None
    assert all(p.grad is None for p in agent.critic_target.parameters())


def test_actor_loss_leaves_critic_and_temperature_untouched() -> None:
    agent = make_agent()
    loss, _ = agent.actor_loss(make_batch().obs)
    loss.backward()
    assert all(grads_of(agent.actor.parameters()))
    assert not any(grads_of(agent.critic.parameters()))
    assert agent.log_alpha.grad is None


def test_alpha_loss_touches_only_log_alpha() -> None:
    agent = make_agent()
    _, logp = agent.actor_loss(make_batch().obs)
    zero_all(agent)
    agent.alpha_loss(logp).backward()
    assert agent.log_alpha.grad is not None and agent.log_alpha.grad != 0
    assert not any(grads_of(agent.actor.parameters()))
    assert not any(grads_of(agent.critic.parameters()))


def test_squashed_log_prob_matches_torch_distribution() -> None:
    g = torch.Generator().manual_seed(1)
    mu, log_std, eps = torch.randn(64, ACT, generator=g), torch.randn(64, ACT, generator=g) * 0.5, \
        torch.randn(64, ACT, generator=g)
    act, logp = squashed_sample(mu, log_std, eps)
    ref = TransformedDistribution(Normal(mu, log_std.exp()), [TanhTransform()]).log_prob(act).sum(-1, keepdim=True)
    torch.testing.assert_close(logp, ref, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(squashed_log_prob(mu, log_std, act), logp, rtol=1e-3, atol=1e-3)


def test_log_std_is_squashed_into_bounds() -> None:
    agent = make_agent()
    with torch.no_grad():
        for p in agent.actor.parameters():
            p.mul_(100.0)
    _, log_std = agent.actor(torch.randn(256, OBS) * 10)
    assert log_std.min() >= -5.0 - 1e-6 and log_std.max() <= 2.0 + 1e-6


def test_terminal_target_is_the_reward() -> None:
    agent = make_agent()
    batch = make_batch(not_done=0.0)
    with torch.no_grad():
        q = agent.q_values(batch.obs, batch.act)
    expected = ((q - batch.reward.unsqueeze(0)) ** 2).mean(dim=(1, 2)).sum()
    torch.testing.assert_close(agent.critic_loss(batch), expected)


def test_target_updates_every_second_step_with_tau() -> None:
    agent = make_agent()
    before = [p.clone() for p in agent.critic_target.parameters()]
    agent.update(make_batch())  # update 0: target moves
    moved = [p.clone() for p in agent.critic_target.parameters()]
    critic = [p.detach().clone() for p in agent.critic.parameters()]
    for b, m, c in zip(before, moved, critic):
        torch.testing.assert_close(m, b + agent.cfg.tau * (c - b))
    agent.update(make_batch(seed=1))  # update 1: target stays
    for m, p in zip(moved, agent.critic_target.parameters()):
        assert torch.equal(m, p)


def test_update_reduces_critic_loss_on_fixed_batch() -> None:
    agent = make_agent()
    batch = make_batch(n=64)
    first = float(agent.update(batch)["train/critic_loss"])
    for _ in range(200):
        last = float(agent.update(batch)["train/critic_loss"])
    assert last < first


def test_reset_critic_keeps_actor_and_temperature() -> None:
    agent = make_agent()
    for _ in range(3):
        agent.update(make_batch())
    actor = [p.clone() for p in agent.actor.parameters()]
    alpha = agent.log_alpha.detach().clone()
    critic = [p.clone() for p in agent.critic.parameters()]
    agent.reset_critic()
    assert all(torch.equal(a, b) for a, b in zip(actor, agent.actor.parameters()))
    assert torch.equal(alpha, agent.log_alpha)
    assert not any(torch.equal(a, b) for a, b in zip(critic, agent.critic.parameters()))
    for p, t in zip(agent.critic.parameters(), agent.critic_target.parameters()):
        assert torch.equal(p, t)
    assert len(agent.critic_opt.state) == 0


def test_common_noise_gives_identical_actions_for_identical_agents() -> None:
    a, b = make_agent(seed=3), make_agent(seed=3)
    obs, noise = np.random.randn(OBS).astype(np.float32), np.random.randn(ACT)
    assert np.array_equal(a.act(obs, noise), b.act(obs, noise))
    assert np.allclose(a.act(obs), np.tanh(a.actor(torch.as_tensor(obs)[None])[0][0].detach().numpy()))


def test_state_dict_round_trip_continues_identically() -> None:
    a = make_agent()
    for i in range(3):
        a.update(make_batch(seed=i))
    b = make_agent(seed=9)
    b.load_state_dict(copy.deepcopy(a.state_dict()))  # a checkpoint is a copy, not shared buffers
    ma, mb = a.update(make_batch(seed=5)), b.update(make_batch(seed=5))
    assert all(torch.equal(ma[k], mb[k]) for k in ma)
    assert all(torch.equal(p, q) for p, q in zip(a.actor.parameters(), b.actor.parameters()))


@pytest.mark.parametrize("init", [0.1, 1.0])
def test_initial_temperature(init: float) -> None:
    agent = SAC(OBS, ACT, SACConfig(hidden_dim=8, init_temperature=init))
    assert math.isclose(float(agent.alpha.detach()), init, rel_tol=1e-6)
    assert agent.target_entropy == -ACT


@pytest.mark.parametrize("period", [1, 2, 3])
def test_target_cadence_over_full_periods(period: int) -> None:
    """The target moves at exactly the updates k with k % period == 0, over two full periods and more, and
    the run config's --target-update-every reaches the agent."""
    from pref_brl.config import TrainConfig

    cfg = TrainConfig(target_update_every=period, hidden_dim=16, compile=False).sac_config()
    agent = SAC(OBS, ACT, cfg, seed=0)
    moved = []
    for k in range(2 * period + 2):
        before = [p.clone() for p in agent.critic_target.parameters()]
        agent.update(make_batch(seed=k))
        moved.append(not all(torch.equal(b, p) for b, p in zip(before, agent.critic_target.parameters())))
    assert moved == [k % period == 0 for k in range(2 * period + 2)]
