"""Damaged or foreign run folders: one `error:` line and exit 2 (nothing changed), or a resume that copes."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest
import torch

from pref_brl import checkpoint
from pref_brl.experiments.plot import main as plot_main
from pref_brl.experiments.train import main as train_main
from pref_brl.trainer import Trainer
from tests.conftest import scalars_without_time
from tests.test_bad_input import snapshot
from tests.test_crash_safety import cli_args
from tests.test_plot import make_run
from tests.test_trainer import run_until_killed


def train_cli(cfg, capsys) -> tuple[int, list[str]]:
    """pref-brl-train on `cfg`: (exit code, the non-empty stderr lines)."""
    code = train_main([*cli_args(cfg), "--quiet"])
    return code, [line for line in capsys.readouterr().err.splitlines() if line.strip()]


@pytest.mark.parametrize("content, fragment", [("{not json", "not valid JSON"), ("[1, 2]", "JSON list, not a config")])
def test_corrupt_or_foreign_config_json_is_one_error_line(tiny, capsys, content, fragment) -> None:
    cfg = tiny()
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir()
    (run_dir / "config.json").write_text(content, encoding="utf-8")
    before = snapshot(run_dir)
    code, lines = train_cli(cfg, capsys)
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], lines
    assert snapshot(run_dir) == before


def test_unreadable_checkpoint_without_a_previous_one_is_one_error_line(tiny, capsys) -> None:
    cfg = tiny()
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir()
    (run_dir / "config.json").write_text(cfg.to_json(), encoding="utf-8")
    (run_dir / "checkpoint.pt").write_bytes(b"PK\x03\x04 a torn zip")
    before = snapshot(run_dir)
    code, lines = train_cli(cfg, capsys)
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: no readable checkpoint"), lines
    assert "checkpoint.pt is unreadable" in lines[0]
    assert lines[0].endswith(": delete the folder or pick another --run-dir")
    after = snapshot(run_dir)
    after.pop("lock")  # the run's lock file (it holds the pid of the last process that opened the run)
    assert after == before


def test_torn_last_scalars_line_is_dropped_on_resume(tiny) -> None:
    straight, torn = tiny("straight", steps=600), tiny("torn", steps=600)
    Trainer(straight, progress=False).train()
    run_until_killed(torn, kill_at=450)  # checkpoint at 400
    with (Path(torn.run_dir) / "scalars.jsonl").open("a", encoding="utf-8") as fh:
        fh.write('{"step": 450, "train/critic_lo')  # the killed process died mid-write
    Trainer(torn, progress=False).train()
    assert scalars_without_time(torn.run_dir) == scalars_without_time(straight.run_dir)


def test_full_disk_while_checkpointing_keeps_the_previous_checkpoints(tiny, capsys, monkeypatch) -> None:
    cfg = tiny(steps=800)  # checkpoints at the episode boundaries 200, 400; the one at 600 hits a full disk
    real_save, calls = torch.save, []

    def save_until_full(state, fh) -> None:
        calls.append(state["step"])
        if len(calls) < 3:
            return real_save(state, fh)
        fh.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", save_until_full)
    code, lines = train_cli(cfg, capsys)
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: cannot write a checkpoint"), lines
    assert "No space left on device" in lines[0] and "previous checkpoints are kept" in lines[0]
    run_dir = Path(cfg.run_dir)
    assert not (run_dir / "checkpoint.pt.tmp").exists()
    assert torch.load(run_dir / "checkpoint.pt", weights_only=True)["step"] == 400
    assert torch.load(run_dir / "checkpoint.prev.pt", weights_only=True)["step"] == 200


@pytest.mark.parametrize("damage", ["config-json", "config-keys", "scalars"])
def test_plot_skips_a_broken_run_and_names_it(tmp_path: Path, capsys, damage) -> None:
    root = tmp_path / "study"
    for seed in range(3):
        make_run(root, "pebble", seed, [(100, 1.0 + seed), (200, 2.0 + seed)])
    broken = make_run(root, "pebble", 3, [(100, 9.0), (200, 9.0)])
    if damage == "config-json":
        (broken / "config.json").write_text('{"env": "walker_walk", "meth', encoding="utf-8")
    elif damage == "config-keys":
        (broken / "config.json").write_text(json.dumps({"seed": 3}), encoding="utf-8")
    else:
        (broken / "scalars.jsonl").write_bytes(b"\xff\xfe not text\n{}\n")
    assert plot_main([str(root), "--out", str(tmp_path / "plots"), "--reps", "50"]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if str(broken) in line]
    assert len(warnings) == 1 and warnings[0].startswith("warning: skipping the broken run"), warnings
    table = (tmp_path / "plots" / "final.md").read_text(encoding="utf-8")
    assert "| 3 (3) |" in table  # the three readable seeds


def test_each_resume_records_its_versions_and_warns_once_when_they_changed(tiny, capsys, monkeypatch) -> None:
    from pref_brl import runs

    cfg = tiny(steps=600)
    run_until_killed(cfg, kill_at=450)
    path = Path(cfg.run_dir) / "versions.json"
    first = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(first, list) and len(first) == 1 and {"time", "git_revision", "torch"} <= set(first[0])
    capsys.readouterr()
    Trainer(cfg, progress=False).close()  # same versions: recorded, no warning
    assert "warning" not in capsys.readouterr().err
    real = runs.provenance
    monkeypatch.setattr(runs, "provenance", lambda: {**real(), "torch": "0.0.1"})
    Trainer(cfg, progress=False).close()
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("warning: package versions differ"), lines
    assert f"torch {first[0]['torch']} -> 0.0.1" in lines[0]
    entries = json.loads(path.read_text(encoding="utf-8"))
    assert len(entries) == 3 and entries[0] == first[0] and entries[2]["torch"] == "0.0.1"
    assert all("time" in e and "git_revision" in e for e in entries)


def test_allow_config_change_keeps_the_old_config_in_a_history(tiny) -> None:
    import dataclasses

    cfg = tiny(steps=600)
    run_until_killed(cfg, kill_at=450)
    old = json.loads((Path(cfg.run_dir) / "config.json").read_text(encoding="utf-8"))
    changed = dataclasses.replace(cfg, steps=800)
    Trainer(changed, progress=False, allow_config_change=True).close()
    history = json.loads((Path(cfg.run_dir) / "config.history.json").read_text(encoding="utf-8"))
    assert len(history) == 1 and history[0]["config"] == old and history[0]["changes"] == ["steps: 600 -> 800"]
    assert "time" in history[0]
    assert json.loads((Path(cfg.run_dir) / "config.json").read_text(encoding="utf-8"))["steps"] == 800
