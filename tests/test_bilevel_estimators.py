"""The λ-term's estimators in the deep learner: the likelihood ratio's weights and discounting against plain
loops, exactly zero when B = A, gradients that reach the reward model only, a run with no B episodes; the
branches' start states, common noise, step budget, exact zero at B = A and exact resume."""

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
from tests.test_bilevel_learner import at_penalty, bilevel_cfg
from tests.test_trainer import final_params, run_until_killed


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
    closure, snr, units, own = learner._penalty_closure([])
    assert own == {"bilevel/lr_weight_mean": 1.0, "bilevel/lr_weight_max": 1.0}  # every weight is exactly 1
    ens = learner.ensemble
    ens.zero_grad(set_to_none=True)
    value = closure(ens)
    assert torch.equal(value, torch.zeros_like(value)) and math.isnan(snr) and units == 4  # every unit is 0
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
    torch.testing.assert_close(learner.log_ratios(sa)[inside], want[inside], atol=2e-3, rtol=1e-3)
    assert want[inside].abs().max() > 0.05  # B has moved: the direction of the ratio matters
    for net in (learner.b_actor, learner.anchor, trainer.agents["A"].actor):
        net.zero_grad(set_to_none=True)
    closure, snr, units, _ = learner._penalty_closure([])
    value = closure(learner.ensemble)
    assert torch.count_nonzero(value) == learner.ensemble.n_members and math.isfinite(snr) and snr > 0
    assert units == 4
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


# --- branch ----------------------------------------------------------------------------------------------


def test_branch_halves_start_from_a_snapshot_of_a_s_last_episode_with_common_noise(tiny) -> None:
    from pref_brl.envs import make_env

    trainer = at_penalty(tiny, estimator="branch")
    learner = trainer.learner
    assert len(learner.pairs) == 3
    earlier = [ep for ep in learner.store.episodes("A") if len(ep) == learner.loop.ep_len]
    env = make_env("walker_walk", seed=5, max_episode_steps=learner.loop.ep_len)
    for (ep_a, ep_b), start in zip(learner.pairs, learner.branch_pool, strict=True):
        assert (ep_a.agent, ep_b.agent) == ("A", "B") and ep_a.reset_seed == ep_b.reset_seed
        assert len(ep_a) == len(ep_b) == 40
        assert np.array_equal(ep_a.obs[0], start.obs) and np.array_equal(ep_b.obs[0], start.obs)
        assert any(np.array_equal(ep.obs[start.step], start.obs) for ep in earlier)  # a state A visited
        env.set_sim_state(start.state)  # the loop restored the snapshot exactly: replay A's first steps
        for t in range(3):
            obs = env.step(ep_a.act[t])[0]
            np.testing.assert_array_equal(obs, ep_a.obs[t + 1])


def test_branch_with_b_equal_to_a_gives_identical_halves_and_exactly_zero(tiny) -> None:
    trainer = at_penalty(tiny, estimator="branch", b_updates=0)
    learner = trainer.learner
    for ep_a, ep_b in learner.pairs:
        assert np.array_equal(ep_a.obs, ep_b.obs) and np.array_equal(ep_a.act, ep_b.act)
    closure = learner._penalty_closure(learner.pairs[:2]).closure
    value = closure(learner.ensemble)
    assert torch.equal(value, torch.zeros_like(value))


def test_branch_steps_count_towards_the_step_budget(tiny) -> None:
    trainer = Trainer(bilevel_cfg(tiny, estimator="branch"), progress=False)
    learner = trainer.learner
    advance(trainer, lambda: learner.pairs_open)
    opened = trainer.step
    advance(trainer, lambda: learner.penalty_ready)
    played = sum(len(a) + len(b) for a, b in learner.pairs)
    assert played == 2 * 3 * 40  # E pairs of two H-step halves, every step through the loop's counter
    assert played <= trainer.step - opened <= played + learner.loop.ep_len  # after the running episode


def test_branch_run_resumes_exactly_from_a_checkpoint_in_the_branch_phase(tiny) -> None:
    straight, killed = (bilevel_cfg(tiny, name, estimator="branch") for name in ("straight", "killed"))
    Trainer(straight, progress=False).train()
    records = scalars_without_time(straight.run_dir)
    assert any("bilevel/penalty_grad_norm" in r for r in records)
    run_until_killed(killed, kill_at=850)  # the checkpoint at 800 falls inside the second round's branches
    Trainer(killed, progress=False).train()
    assert scalars_without_time(killed.run_dir) == records
    assert all(torch.equal(x, y) for x, y in zip(final_params(killed), final_params(straight)))


@pytest.mark.parametrize("name", ["walker_walk", "metaworld_door-open-v3"])
def test_a_branch_start_survives_a_weights_only_checkpoint_bit_for_bit(tmp_path, name: str) -> None:
    from pref_brl.bilevel.branches import BranchStart, start_from_checkpoint, start_to_checkpoint
    from pref_brl.envs import make_env

    env = make_env(name, seed=0, max_episode_steps=60)
    obs, _ = env.reset(seed=4)
    actions = np.random.default_rng(0).uniform(-1, 1, (30, *env.action_space.shape)).astype(np.float32)
    for action in actions[:10]:
        obs = env.step(action)[0]
    start = BranchStart(env.get_sim_state(), obs, 10)
    torch.save(start_to_checkpoint(start), tmp_path / "start.pt")
    loaded = start_from_checkpoint(torch.load(tmp_path / "start.pt", weights_only=True))
    assert np.array_equal(loaded.obs, start.obs) and loaded.step == 10
    runs = []
    for snapshot in (start, loaded):
        env.set_sim_state(snapshot.state)
        runs.append([env.step(action) for action in actions[10:]])
    for (obs_1, r_1, *flags_1), (obs_2, r_2, *flags_2) in zip(*runs, strict=True):
        np.testing.assert_array_equal(obs_1, obs_2)
        assert r_1 == r_2 and flags_1 == flags_2


def test_a_checkpoint_of_the_earlier_pair_format_loads_into_the_pair_collection(tiny) -> None:
    """Checkpoints written before the pair collections kept three flags, the pairs and the branch fields
    beside them; a learner loads them into the same phase and collection state."""
    trainer = Trainer(bilevel_cfg(tiny, estimator="branch"), progress=False)
    learner = trainer.learner
    advance(trainer, lambda: learner.pairs_open and learner.collection.pending is not None and learner.pairs)
    new = learner.state_dict()
    collection = new["collection"]
    earlier = {k: v for k, v in new.items() if k not in ("phase", "anchor_playing", "collection")}
    earlier.update(flags=(True, False, learner.anchor_playing), pairs=collection["pairs"],
                   pending=collection["pending"],
                   branch={"pool": collection["pool"], "starts": collection["starts"],
                           "pending": collection["pending_start"], "rng": collection["rng"]})
    fresh = Trainer(bilevel_cfg(tiny, "fresh", estimator="branch"), progress=False).learner
    fresh.load_state_dict(earlier)
    assert fresh.phase == "pairing" and fresh.anchor_playing == learner.anchor_playing
    loaded = fresh.collection
    assert [(id(a), id(b)) for a, b in loaded.pairs] != [] and len(loaded.pairs) == len(learner.pairs)
    assert np.array_equal(loaded.pending.obs, learner.collection.pending.obs)
    assert [s.step for s in loaded.starts] == [s.step for s in learner.collection.starts]
    assert np.array_equal(loaded.pending_start.obs, learner.collection.pending_start.obs)
    assert loaded.rng.bit_generator.state == learner.collection.rng.bit_generator.state
