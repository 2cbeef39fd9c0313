"""Reward-uncertainty exploration (--uncertainty-bonus, after Liang, Shu, Lee, Abbeel, RUNE): from the first
feedback round on, agent A's updates learn from the ensemble-mean reward plus β_t = β₀·(1 − ρ)^t times the
members' disagreement. Checked against the members' own rewards; the stored rewards stay the mean; a continued
run is the longer run."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch

from pref_brl.logger import read_scalars
from pref_brl.trainer import Trainer
from tests.conftest import advance, scalars_without_time
from tests.test_trainer import final_params

BETA0, RHO = 0.7, 1e-3


def test_a_batch_carries_beta_t_times_the_members_std(tiny) -> None:
    cfg = tiny(method="pebble", steps=700, uncertainty_bonus=BETA0, uncertainty_decay=RHO)
    trainer = Trainer(cfg, progress=False)
    learner = trainer.learner
    advance(trainer, lambda: learner.rounds >= 2 and trainer.step % 7 == 3)
    step, generator, replay = trainer.step, learner.loop.sample_generator, learner.loop.replay
    before = generator.get_state()
    batch = learner.sample_batch(step)
    generator.set_state(before)
    plain = replay.sample(cfg.batch_size, generator)
    assert torch.equal(batch.obs, plain.obs)  # the same transitions
    with torch.no_grad():
        members = learner.ensemble.member_rewards(torch.cat([plain.obs, plain.act], 1)).double()
    beta = BETA0 * (1 - RHO) ** step
    expected = plain.reward.double().squeeze(1) + beta * members.std(0, correction=0)
    assert batch.reward.double().squeeze(1).numpy() == pytest.approx(expected.numpy(), rel=1e-5, abs=1e-6)
    assert (batch.reward > plain.reward).all()  # the members disagree somewhere on every step
    # the buffer keeps the ensemble mean: the bonus is added at sampling, never stored
    n = len(replay)
    mean = learner.ensemble.mean_reward(replay.obs[:n], replay.act[:n])
    assert replay.reward[:n, 0].numpy() == pytest.approx(mean.numpy(), rel=1e-5, abs=1e-6)


def test_the_bonus_reaches_the_agent_and_is_logged(tiny) -> None:
    plain = tiny("plain", method="pebble", steps=600)
    bonus = tiny("bonus", method="pebble", steps=600, uncertainty_bonus=BETA0, uncertainty_decay=RHO)
    for cfg in (plain, bonus):
        Trainer(cfg, progress=False).train()
    assert not all(torch.equal(a, b) for a, b in zip(final_params(plain), final_params(bonus)))
    logged = [r for r in read_scalars(Path(bonus.run_dir)) if "explore/uncertainty_beta" in r]
    assert [r["step"] for r in logged] == list(range(bonus.feedback_starts + 100, 601, 100))
    for record in logged:  # the last update before the log ran at the step before
        assert math.isclose(record["explore/uncertainty_beta"], BETA0 * (1 - RHO) ** (record["step"] - 1),
                            rel_tol=1e-12)
        assert record["explore/uncertainty_bonus"] > 0
    assert not any("explore/uncertainty_beta" in r for r in read_scalars(Path(plain.run_dir)))


def test_a_continued_run_with_the_bonus_is_the_longer_run(tiny) -> None:
    # β_t is a function of the env step and σ̂ of the saved reward model: nothing else to checkpoint
    longer = tiny("longer", method="pebble", steps=900, eval_frequency=300, uncertainty_bonus=BETA0,
                  uncertainty_decay=RHO)
    continued = dataclasses.replace(longer, run_dir=str(Path(longer.run_dir).parent / "continued"), steps=600)
    Trainer(longer, progress=False).train()
    Trainer(continued, progress=False).train()
    Trainer(dataclasses.replace(continued, steps=900), progress=False, allow_config_change=True).train()
    assert scalars_without_time(continued.run_dir) == scalars_without_time(longer.run_dir)
    assert all(torch.equal(x, y) for x, y in zip(final_params(continued), final_params(longer)))
