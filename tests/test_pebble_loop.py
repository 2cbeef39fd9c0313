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


@pytest.mark.parametrize("query", ["disagreement", "kcenter_entropy"])
def test_pebble_resumes_exactly_after_a_kill(tiny, query) -> None:
    straight, killed = pebble_cfg(tiny, "straight", query=query), pebble_cfg(tiny, "killed", query=query)
    Trainer(straight, progress=False).train()
    run_until_killed(killed, kill_at=850)  # after two feedback rounds and an eval; last checkpoint at 800
    resumed = Trainer(killed, progress=False)
    assert resumed.step == 800 and resumed.learner.total == 12
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
