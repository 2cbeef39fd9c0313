"""The loop: determinism, exact resume after a kill, run-folder safety, CLI errors."""

from __future__ import annotations

import json

import pytest
import torch

from pref_brl.experiments.train import main as train_main
from pref_brl.runs import RunFolderError
from pref_brl.trainer import Trainer
from tests.conftest import replace, scalars_without_time


class Killed(Exception):
    pass


def run_until_killed(cfg, kill_at: int) -> None:
    """Train until `kill_at`, then die without saving (the logger's unflushed lines are lost)."""
    trainer = Trainer(cfg, progress=False)
    original = trainer.update_agents

    def update_or_die() -> None:
        if trainer.step == kill_at:
            raise Killed
        original()

    trainer.update_agents = update_or_die
    with pytest.raises(Killed):
        trainer.train()  # releases the folder lock; lines logged after the last checkpoint are dropped on resume


def final_params(cfg) -> list[torch.Tensor]:
    state = torch.load(f"{cfg.run_dir}/checkpoint.pt", weights_only=False)
    agent = state["agents"]["A"]
    return [*agent["actor"].values(), *agent["critic"].values(), agent["log_alpha"]]


def test_sac_run_logs_the_spec_scalars(tiny) -> None:
    cfg = tiny()
    result = Trainer(cfg, progress=False).train()
    assert "eval/mean_reward" in result
    keys = set().union(*scalars_without_time(cfg.run_dir))
    assert {"eval/mean_reward", "rollout/ep_rew_mean", "train/actor_loss", "train/critic_loss",
            "train/ent_coef"} <= keys
    assert json.loads(open(f"{cfg.run_dir}/versions.json").read())[0]["torch"].startswith("2.")


def test_same_seed_same_scalars(tiny) -> None:
    a, b = tiny("a"), tiny("b")
    Trainer(a, progress=False).train()
    Trainer(b, progress=False).train()
    assert scalars_without_time(a.run_dir) == scalars_without_time(b.run_dir)
    assert all(torch.equal(x, y) for x, y in zip(final_params(a), final_params(b)))


def test_different_seed_different_scalars(tiny) -> None:
    a, b = tiny("a"), tiny("b", seed=1)
    Trainer(a, progress=False).train()
    Trainer(b, progress=False).train()
    assert scalars_without_time(a.run_dir) != scalars_without_time(b.run_dir)


def test_resume_after_kill_equals_straight_run(tiny) -> None:
    straight, killed = tiny("straight"), tiny("killed")
    Trainer(straight, progress=False).train()
    run_until_killed(killed, kill_at=750)  # last checkpoint: the episode boundary at step 600
    Trainer(killed, progress=False).train()
    assert scalars_without_time(killed.run_dir) == scalars_without_time(straight.run_dir)
    assert all(torch.equal(x, y) for x, y in zip(final_params(killed), final_params(straight)))


def test_finished_run_is_not_rerun(tiny, capsys) -> None:
    cfg = tiny(steps=300)
    Trainer(cfg, progress=False).train()
    before = open(f"{cfg.run_dir}/scalars.jsonl").read()
    assert Trainer(cfg, progress=False).train() == {}
    assert "already finished" in capsys.readouterr().out
    assert open(f"{cfg.run_dir}/scalars.jsonl").read() == before


def test_changed_config_refuses_to_resume(tiny) -> None:
    cfg = tiny(steps=300)
    Trainer(cfg, progress=False).train()
    with pytest.raises(RunFolderError, match="lr: 0.0005 -> 0.001"):
        Trainer(replace(cfg, lr=1e-3), progress=False)


def test_foreign_folder_is_never_overwritten(tmp_path, tiny) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    with pytest.raises(RunFolderError, match="not a pref-brl run folder"):
        Trainer(tiny(), progress=False)
    assert (tmp_path / "run" / "notes.txt").read_text() == "mine"


def test_cli_help_documents_options(capsys) -> None:
    with pytest.raises(SystemExit):
        train_main(["--help"])
    out = capsys.readouterr().out
    for option in ("--env", "--method", "--max-feedback", "--teacher", "--penalty-weight", "--preset"):
        assert option in out
