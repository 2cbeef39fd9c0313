"""PEBBLE inside the loop: every phase boundary, relabelling, critic reset, budget, exact resume."""

from __future__ import annotations

import pytest
import torch

from pref_brl.trainer import Trainer
from tests.conftest import scalars_without_time
from tests.test_trainer import final_params, run_until_killed


def pebble_cfg(tiny, name: str = "pebble", **kw):
    return tiny(name, method="pebble", steps=1100, **kw)


def test_first_round_relabels_resets_critic_and_keeps_actor(tiny) -> None:
    trainer = Trainer(pebble_cfg(tiny), progress=False)
    learner, agent = trainer.learner, trainer.agents["A"]
    calls = []
    original_round, original_reset = learner.feedback_round, agent.reset_critic
    agent.reset_critic = lambda: (calls.append(("reset", trainer.step)), original_reset())[1]

    def round_and_check(step: int):
        actor_before = [p.clone() for p in agent.actor.parameters()]
        out = original_round(step)
        calls.append(("round", step))
        replay = trainer.replay
        expected = learner.ensemble.mean_reward(replay.obs[: len(replay)], replay.act[: len(replay)])
        torch.testing.assert_close(replay.reward[: len(replay), 0], expected)  # relabel == fresh forward
        if step == trainer.cfg.feedback_starts:  # reset_update updates moved the actor, not replaced it
            assert any(not torch.equal(a, b) for a, b in zip(actor_before, agent.actor.parameters()))
            # each Adam step moves a weight by about lr at most: a re-initialised actor would move by far more
            bound = 3 * trainer.cfg.reset_update * trainer.cfg.lr
            assert max(float((a - b).abs().max()) for a, b in zip(actor_before, agent.actor.parameters())) < bound
        return out

    learner.feedback_round = round_and_check
    trainer.train()
    assert calls[:2] == [("reset", 300), ("round", 300)]
    assert [c for c in calls if c[0] == "round"] == [("round", 300), ("round", 500), ("round", 700)]
    assert [c for c in calls if c[0] == "reset"] == [("reset", 300)]


def test_pebble_logs_and_counters(tiny) -> None:
    cfg = pebble_cfg(tiny, teacher="skip", max_feedback=10, reward_batch=4)
    trainer = Trainer(cfg, progress=False)
    trainer.train()
    records = scalars_without_time(cfg.run_dir)
    totals = [r["feedback/total"] for r in records if "feedback/total" in r]
    assert totals == [4.0, 8.0, 10.0]  # the last round is cut to the remaining budget
    assert trainer.learner.labeled <= trainer.learner.total == 10
    keys = set().union(*records)
    assert {"explore/state_entropy", "reward/loss", "reward/accuracy", "reward/true_corr",
            "reward/ensemble_std", "rollout/ep_learned_rew_mean", "feedback/labeled", "eval/mean_reward"} <= keys
    explore = [r["step"] for r in records if "explore/state_entropy" in r]
    assert explore and max(explore) <= cfg.feedback_starts


@pytest.mark.parametrize(("query", "kill_at"), [("disagreement", 850), ("kcenter_entropy", 850),
                                              ("disagreement", 450)])
def test_pebble_resumes_exactly_after_a_kill(tiny, query, kill_at) -> None:
    """Killed after its three feedback rounds (at 300, 500, 700) and an eval, or between its first two rounds
    (every generator a round draws from must come back from the checkpoint); checkpoints every 200 steps."""
    straight, killed = pebble_cfg(tiny, "straight", query=query), pebble_cfg(tiny, "killed", query=query)
    Trainer(straight, progress=False).train()
    run_until_killed(killed, kill_at=kill_at)
    resumed = Trainer(killed, progress=False)
    assert resumed.step == kill_at // 200 * 200 and resumed.learner.total == (12 if kill_at > 700 else 4)
    resumed.train()
    assert scalars_without_time(killed.run_dir) == scalars_without_time(straight.run_dir)
    assert all(torch.equal(x, y) for x, y in zip(final_params(killed), final_params(straight)))
    s = torch.load(f"{straight.run_dir}/checkpoint.pt", weights_only=False)["learner"]
    k = torch.load(f"{killed.run_dir}/checkpoint.pt", weights_only=False)["learner"]
    assert torch.equal(s["prefs"]["labels"], k["prefs"]["labels"]) and s["prefs"]["n"] == 12
    assert all(torch.equal(a, b) for a, b in zip(s["ensemble"]["model"].values(), k["ensemble"]["model"].values()))


def test_heldout_accuracy_scores_the_new_labels_before_the_model_trains_on_them(tiny) -> None:
    from pref_brl.reward_model import hard_label_accuracy
    from tests.conftest import scalars_without_time as records

    cfg = pebble_cfg(tiny, "heldout")
    trainer = Trainer(cfg, progress=False)
    learner, expected = trainer.learner, []
    original = learner.train_reward

    def train_and_record(*args, **kw):
        new = slice(len(learner.prefs) - cfg.reward_batch, len(learner.prefs))  # the oracle keeps every query
        with torch.no_grad():
            logits = learner.ensemble.pair_logits(learner.prefs.sa0[new], learner.prefs.sa1[new])
        if learner.rounds > 0:
            expected.append(hard_label_accuracy(logits, learner.prefs.labels[new]))
        return original(*args, **kw)

    learner.train_reward = train_and_record
    trainer.train()
    logged = [r["reward/heldout_accuracy"] for r in records(cfg.run_dir) if "reward/heldout_accuracy" in r]
    assert len(expected) >= 2 and logged == pytest.approx(expected)


def test_uniform_pair_diagnostics_tell_a_true_reward_from_a_reversed_one(tiny) -> None:
    """reward/uniform_accuracy and reward/segment_corr score uniformly drawn pairs against the true returns: a
    reward model that is the true reward gets 1 and 1, its negation 0 and -1, whatever the queries were."""
    cfg = tiny("uniform", method="pebble", steps=700)
    trainer = Trainer(cfg, progress=False)
    trainer.train()
    learner = trainer.learner
    logged = [r for r in scalars_without_time(cfg.run_dir) if "reward/uniform_accuracy" in r]
    assert logged and all(0.0 <= r["reward/uniform_accuracy"] <= 1.0 and -1 <= r["reward/segment_corr"] <= 1
                          for r in logged)
    episodes = {id(e): e for e in learner.store.episodes()}

    def true_reward(obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """Each stored (obs, act)'s true reward, looked up (a reward model that knows the task exactly)."""
        table = {(o.tobytes(), a.tobytes()): r for e in episodes.values()
                 for o, a, r in zip(e.obs, e.act, e.true_reward)}
        return torch.tensor([table[(o.numpy().tobytes(), a.numpy().tobytes())] for o, a in zip(obs, act)])

    for sign, accuracy, corr in ((1.0, 1.0, 1.0), (-1.0, 0.0, -1.0)):
        learner.reward_model.mean_reward = lambda o, a, s=sign: s * true_reward(o, a)
        out = learner.uniform_pair_metrics()
        assert out["reward/uniform_accuracy"] == accuracy
        assert out["reward/segment_corr"] == pytest.approx(corr, abs=1e-5)


def test_query_diagnostics_place_each_rounds_queries_in_their_pool(tiny, monkeypatch) -> None:
    """feedback/query_return and feedback/query_gap are the true segment returns and gaps of the pairs the
    strategy returned; feedback/pool_* those of pairs drawn uniformly from the same pool by their own generator.
    Twin segments (a pair of identical halves) read a gap of exactly 0 beside the pool's positive one."""
    import numpy as np

    import pref_brl.feedback as feedback
    from pref_brl.preferences import SegmentPairs

    cfg = pebble_cfg(tiny, "queries")
    trainer = Trainer(cfg, progress=False)
    learner, seen = trainer.learner, []
    select = feedback.select_queries
    monkeypatch.setattr(feedback, "select_queries", lambda *a, **kw: seen.append(select(*a, **kw)) or seen[-1])
    trainer.train()
    logged = [r for r in scalars_without_time(cfg.run_dir) if "feedback/query_gap" in r]
    assert len(logged) == len(seen) == 3

    def returns(p: SegmentPairs) -> tuple[torch.Tensor, torch.Tensor]:
        return p.rew0.double().sum(1), p.rew1.double().sum(1)

    for record, pairs in zip(logged, seen):
        r0, r1 = returns(pairs)
        assert record["feedback/query_gap"] == pytest.approx(float((r0 - r1).abs().mean()))
        assert record["feedback/query_return"] == pytest.approx(float(torch.cat([r0, r1]).mean()))
        assert record["feedback/pool_gap"] > 0
    half = learner.store.sample_pairs(8, cfg.segment, np.random.default_rng(0))
    twins = SegmentPairs(half.obs0, half.act0, half.rew0, half.obs0, half.act0, half.rew0)
    state = learner.pool_rng.bit_generator.state
    out = learner.query_metrics(twins)
    pool_rng = np.random.default_rng()
    pool_rng.bit_generator.state = state
    p0, p1 = returns(learner.store.sample_pairs(feedback.UNIFORM_PAIRS, cfg.segment, pool_rng, None))
    assert out == pytest.approx({"feedback/query_gap": 0.0, "feedback/query_return": float(returns(half)[0].mean()),
                                 "feedback/pool_gap": float((p0 - p1).abs().mean()),
                                 "feedback/pool_return": float(torch.cat([p0, p1]).mean())})
    assert out["feedback/pool_gap"] > 0
