"""Continuing a finished run to more steps (pref-brl-train --allow-config-change, pref-brl-sweep --extend): the
continued run is the run that was started with the larger --steps, step for step."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from pref_brl.checkpoint import CheckpointError
from pref_brl.experiments.sweep import main as sweep_main
from pref_brl.runs import finished_step
from pref_brl.study import expand, run_state
from pref_brl.trainer import Trainer
from tests.conftest import scalars_without_time
from tests.test_crash_safety import METHOD_OPTIONS
from tests.test_sweep import TINY_FLAGS, grid
from tests.test_trainer import final_params


def learner_state(cfg) -> dict:
    return torch.load(f"{cfg.run_dir}/checkpoint.pt", weights_only=False)["learner"]


@pytest.mark.parametrize("method", list(METHOD_OPTIONS))
def test_a_finished_run_continued_to_more_steps_is_the_longer_run(tiny, method) -> None:
    # 600 of 900 steps: pebble's labels are still coming (rounds every 200 steps) when the short run ends, and
    # its replay buffer (capacity = steps) is full, so the continued run must grow it and append after the newest
    longer = tiny("longer", method=method, steps=900, eval_frequency=300, **METHOD_OPTIONS[method])
    continued = dataclasses.replace(longer, run_dir=str(Path(longer.run_dir).parent / "continued"), steps=600)
    Trainer(longer, progress=False).train()
    Trainer(continued, progress=False).train()
    assert finished_step(Path(continued.run_dir)) == 600
    continued = dataclasses.replace(continued, steps=900)
    Trainer(continued, progress=False, allow_config_change=True).train()
    assert finished_step(Path(continued.run_dir)) == 900
    assert scalars_without_time(continued.run_dir) == scalars_without_time(longer.run_dir)
    assert all(torch.equal(x, y) for x, y in zip(final_params(continued), final_params(longer)))
    if method != "sac":
        a, b = learner_state(continued), learner_state(longer)
        assert a["counters"] == b["counters"] and torch.equal(a["prefs"]["labels"], b["prefs"]["labels"])
    history = json.loads(Path(continued.run_dir, "config.history.json").read_text(encoding="utf-8"))
    assert [h["changes"] for h in history] == [["steps: 600 -> 900"]]


def test_the_end_of_a_shorter_sac_run_adds_its_evaluation_and_nothing_else(tiny) -> None:
    # 600 is no evaluation step of the longer run (every 500): the short run evaluated there as it ended (a
    # preference run's evaluation also draws its diagnostic pairs, so its later reward/uniform_* differ too)
    longer = tiny("longer", steps=900, eval_frequency=500)
    continued = dataclasses.replace(longer, run_dir=str(Path(longer.run_dir).parent / "continued"), steps=600)
    Trainer(longer, progress=False).train()
    Trainer(continued, progress=False).train()
    Trainer(dataclasses.replace(continued, steps=900), progress=False, allow_config_change=True).train()
    records = scalars_without_time(continued.run_dir)
    extra = [r for r in records if r["step"] == 600 and "eval/mean_reward" in r]
    assert len(extra) == 1
    assert [r for r in records if r is not extra[0]] == scalars_without_time(longer.run_dir)


def test_a_run_that_ended_inside_an_episode_says_so_and_its_continuation_warns(tiny, capsys) -> None:
    cfg = tiny(steps=650)  # 100-step episodes
    Trainer(cfg, progress=False).train()
    assert json.loads(Path(cfg.run_dir, "done.json").read_text(encoding="utf-8"))["mid_episode"] is True
    Trainer(dataclasses.replace(cfg, steps=950), progress=False, allow_config_change=True).train()
    assert "ended inside an episode at step 650; its continuation starts a new episode" in capsys.readouterr().err
    assert finished_step(Path(cfg.run_dir)) == 950  # new episodes from 650: 950 ends the third
    assert "mid_episode" not in json.loads(Path(cfg.run_dir, "done.json").read_text(encoding="utf-8"))


def test_a_continuation_refused_by_its_checkpoint_changes_nothing(tiny) -> None:
    cfg = tiny(steps=300)
    Trainer(cfg, progress=False).train()
    Path(cfg.run_dir, "checkpoint.pt").write_bytes(b"damaged")
    Path(cfg.run_dir, "checkpoint.prev.pt").unlink()
    before = {p.name: p.read_bytes() for p in Path(cfg.run_dir).iterdir() if p.is_file() and p.name != "lock"}
    with pytest.raises(CheckpointError):
        Trainer(dataclasses.replace(cfg, steps=600), progress=False, allow_config_change=True)
    after = {p.name: p.read_bytes() for p in Path(cfg.run_dir).iterdir() if p.is_file() and p.name != "lock"}
    assert after == before  # config.json still says 300 steps, no config.history.json


def test_a_continuation_stopped_early_is_unfinished_and_resumes_to_the_new_end(tiny) -> None:
    longer = tiny("longer", method="pebble", steps=900, eval_frequency=300)
    stopped = dataclasses.replace(longer, run_dir=str(Path(longer.run_dir).parent / "stopped"), steps=600)
    Trainer(longer, progress=False).train()
    Trainer(stopped, progress=False).train()
    stopped = dataclasses.replace(stopped, steps=900)
    trainer = Trainer(stopped, progress=False, allow_config_change=True)
    trainer.interrupted = "SIGTERM"  # as a signal before the first new step: checkpoint, stop
    trainer.train()
    assert finished_step(Path(stopped.run_dir)) is None  # a killed continuation must not read as finished
    Trainer(stopped, progress=False).train()  # the config is already the new one
    assert scalars_without_time(stopped.run_dir) == scalars_without_time(longer.run_dir)


def test_a_finished_run_asked_for_no_more_steps_is_left_alone(tiny, capsys) -> None:
    cfg = tiny(steps=300)
    Trainer(cfg, progress=False).train()
    before = {p.name: p.read_bytes() for p in Path(cfg.run_dir).iterdir() if p.is_file() and p.name != "lock"}
    assert Trainer(cfg, progress=False).train() == {}
    assert "already finished; nothing to do" in capsys.readouterr().out
    after = {p.name: p.read_bytes() for p in Path(cfg.run_dir).iterdir() if p.is_file() and p.name != "lock"}
    assert after == before


def test_sweep_extend_continues_a_finished_study_to_more_steps(tmp_path: Path, capsys) -> None:
    argv = ["--root", str(tmp_path), "--methods", "pebble", "--budgets", "8", "--jobs", "1", *TINY_FLAGS]
    assert sweep_main([*argv, "--name", "study"]) == 0  # TINY: 300 steps
    assert sweep_main([*argv, "--name", "study", "--set", "steps=400", "--extend", "--dry-run"]) == 0
    assert "partial  walker_walk/pebble/budget8/oracle/seed0" in capsys.readouterr().out
    assert sweep_main([*argv, "--name", "study", "--set", "steps=400", "--extend"]) == 0
    out = capsys.readouterr().out
    assert "extending walker_walk/pebble/budget8/oracle/seed0 to 400 steps" in out and "1/1 done (0 skipped)" in out
    assert sweep_main([*argv, "--name", "longer", "--set", "steps=400"]) == 0
    extended, longer = (expand(grid(tmp_path, name=name, overrides=grid(tmp_path).overrides + (("steps", (400,)),)))[0]
                        for name in ("study", "longer"))
    assert run_state(extended) == "done" and finished_step(extended.run_dir) == 400
    assert scalars_without_time(extended.run_dir) == scalars_without_time(longer.run_dir)
    assert sweep_main([*argv, "--name", "study", "--set", "steps=400"]) == 0  # done now: nothing to extend
    assert "1/1 done (1 skipped)" in capsys.readouterr().out
