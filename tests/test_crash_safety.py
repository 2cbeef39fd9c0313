"""Crash safety: SIGKILL at random moments, SIGTERM, corrupt checkpoints, one writer per folder, NaN stops."""

from __future__ import annotations

import dataclasses
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pref_brl.runs import RunFolderError
from pref_brl.trainer import Trainer
from tests.conftest import scalars_without_time
from tests.test_trainer import final_params, run_until_killed

ROOT = Path(__file__).resolve().parents[1]
METHOD_OPTIONS = {"sac": {}, "pebble": {}, "bilevel": {"num_interact": 300, "paired_episodes": 2,
                                                         "heldout_pairs": 1, "pair_horizon": 40, "b_updates": 20},
                  "mrn": {"meta_every": 50}}


def cli_args(cfg) -> list[str]:
    """The pref-brl-train command line that reproduces `cfg` (every field spelled out)."""
    args = []
    for field in dataclasses.fields(cfg):
        value, flag = getattr(cfg, field.name), field.name.replace("_", "-")
        if isinstance(value, bool):
            args.append(f"--{flag}" if value else f"--no-{flag}")
        else:
            args += [f"--{flag}", str(value)]
    return args


def start(cfg) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "pref_brl.experiments.train", *cli_args(cfg), "--quiet"], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def checkpoint_id(run_dir: Path) -> tuple[int, int] | None:
    """Which checkpoint file the run folder holds now (each save renames a new file into place), None if none."""
    try:
        stat = (run_dir / "checkpoint.pt").stat()
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_mtime_ns


def wait_for_checkpoint(run_dir: Path, proc: subprocess.Popen, timeout: float = 120, newer_than=None) -> None:
    """Until the run has saved a checkpoint other than `newer_than` (the one it started from), i.e. it trains."""
    deadline = time.time() + timeout
    while checkpoint_id(run_dir) in (None, newer_than):
        assert proc.poll() is None, proc.stdout.read()
        assert time.time() < deadline, "no new checkpoint appeared"
        time.sleep(0.05)


def crash_cfg(tiny, method: str, name: str):
    return tiny(f"{method}-{name}", method=method, steps=900, checkpoint_frequency=100,
                **METHOD_OPTIONS[method])


@pytest.mark.parametrize("method", list(METHOD_OPTIONS))
def test_random_sigkills_then_resume_equal_an_uninterrupted_run(tiny, method) -> None:
    straight, killed = crash_cfg(tiny, method, "straight"), crash_cfg(tiny, method, "killed")
    began = time.perf_counter()
    Trainer(straight, progress=False).train()
    episode = (time.perf_counter() - began) * straight.max_episode_steps / straight.steps  # seconds, on this machine
    rng, kills = random.Random(f"kill-{method}"), 0
    run_dir = Path(killed.run_dir)
    for _ in range(3):  # each kill lands while training, after the resumed run has saved a checkpoint of its own
        resumed_from = checkpoint_id(run_dir)
        proc = start(killed)
        wait_for_checkpoint(run_dir, proc, newer_than=resumed_from)
        time.sleep(rng.uniform(0.0, 1.0) * episode)  # somewhere in the episode after that checkpoint
        if proc.poll() is not None:  # it finished first (a far faster start than the straight run's pace)
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
    assert kills >= 2, "the run finished before it could be killed twice"
    proc = start(killed)
    assert proc.wait(timeout=300) == 0, proc.stdout.read()
    assert scalars_without_time(killed.run_dir) == scalars_without_time(straight.run_dir)
    assert all(torch.equal(x, y) for x, y in zip(final_params(killed), final_params(straight)))
    if method != "sac":
        s = torch.load(f"{straight.run_dir}/checkpoint.pt", weights_only=False)["learner"]
        k = torch.load(f"{killed.run_dir}/checkpoint.pt", weights_only=False)["learner"]
        assert s["counters"] == k["counters"] and torch.equal(s["prefs"]["labels"], k["prefs"]["labels"])


def test_sigterm_saves_a_checkpoint_and_resume_is_exact(tiny) -> None:
    straight, stopped = crash_cfg(tiny, "pebble", "straight"), crash_cfg(tiny, "pebble", "term")
    Trainer(straight, progress=False).train()
    proc = start(stopped)
    wait_for_checkpoint(Path(stopped.run_dir), proc)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143 and "stopped by SIGTERM" in out
    step = torch.load(f"{stopped.run_dir}/checkpoint.pt", weights_only=False)["step"]
    assert 0 < step < stopped.steps and not Path(stopped.run_dir, "done.json").exists()
    Trainer(stopped, progress=False).train()
    assert scalars_without_time(stopped.run_dir) == scalars_without_time(straight.run_dir)


def test_corrupt_newest_checkpoint_falls_back_to_the_previous_one(tiny) -> None:
    straight, broken = tiny("straight", steps=600), tiny("broken", steps=600)
    Trainer(straight, progress=False).train()
    run_until_killed(broken, kill_at=450)  # checkpoints at the episode boundaries 200 and 400
    newest = Path(broken.run_dir) / "checkpoint.pt"
    newest.write_bytes(newest.read_bytes()[:100])  # truncated file
    with pytest.warns(UserWarning, match="unreadable"):
        resumed = Trainer(broken, progress=False)
    assert resumed.step == 200
    resumed.train()
    assert scalars_without_time(broken.run_dir) == scalars_without_time(straight.run_dir)


class _RunsCode:
    """A pickle payload that would create a file when unpickled (what a crafted checkpoint could do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code ran"))


def test_crafted_pickle_checkpoint_is_refused_without_running_it(tiny, tmp_path) -> None:
    cfg = tiny("crafted", steps=600)
    run_until_killed(cfg, kill_at=450)  # checkpoints at 200 and 400
    marker = tmp_path / "pwned"
    state = torch.load(f"{cfg.run_dir}/checkpoint.pt", weights_only=True)
    state["payload"] = _RunsCode(marker)
    torch.save(state, f"{cfg.run_dir}/checkpoint.pt")  # a valid torch file whose pickle would run code
    with pytest.warns(UserWarning, match="not plain data"):
        resumed = Trainer(cfg, progress=False)
    assert not marker.exists() and resumed.step == 200  # refused, fell back to the previous checkpoint
    resumed.close()


def test_second_writer_is_refused(tiny) -> None:
    cfg = tiny()
    first = Trainer(cfg, progress=False)
    with pytest.raises(RunFolderError, match="in use by another process"):
        Trainer(cfg, progress=False)
    first.close()
    Trainer(cfg, progress=False).close()  # free again once the first writer is gone


def test_nan_in_a_loss_stops_with_its_name_and_keeps_the_last_good_checkpoint(tiny) -> None:
    cfg = tiny(steps=1000)
    trainer = Trainer(cfg, progress=False)
    original = trainer.collect_step

    def poisoned() -> None:
        original()
        if trainer.step >= 450:
            trainer.replay.reward[: len(trainer.replay)] = float("nan")

    trainer.collect_step = poisoned
    with pytest.raises(FloatingPointError, match=r"at step 45\d \(non-finite: train/critic_loss"):
        trainer.train()
    state = torch.load(f"{cfg.run_dir}/checkpoint.pt", weights_only=False)
    assert state["step"] == 400
    assert all(torch.isfinite(p).all() for p in state["agents"]["A"]["actor"].values())


def test_a_moved_run_folder_resumes_where_it_is(tiny, tmp_path) -> None:
    import dataclasses
    import shutil

    straight, original = tiny("straight", steps=600), tiny("original", steps=600)
    Trainer(straight, progress=False).train()
    run_until_killed(original, kill_at=450)
    moved = tmp_path / "elsewhere" / "run"
    shutil.move(original.run_dir, moved)
    resumed = Trainer(dataclasses.replace(original, run_dir=str(moved)), progress=False)
    assert resumed.step == 400
    resumed.train()
    assert scalars_without_time(moved) == scalars_without_time(straight.run_dir)


def tensorboard_scalars(run_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """(step, value) of every TensorBoard scalar as TensorBoard shows it (purged events left out)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(Path(run_dir) / "tb"), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]
            if not tag.startswith("time/")}


def test_kill_before_the_first_checkpoint_then_rerun_logs_each_record_once(tiny) -> None:
    straight, killed = tiny("straight", steps=400), tiny("killed", steps=400)
    Trainer(straight, progress=False).train()
    run_until_killed(killed, kill_at=150)  # the first checkpoint is due at step 200
    assert not (Path(killed.run_dir) / "checkpoint.pt").exists() and scalars_without_time(killed.run_dir)
    Trainer(killed, progress=False).train()
    records = scalars_without_time(killed.run_dir)
    keys = [(r["step"], k) for r in records for k in r if k != "step"]
    assert len(keys) == len(set(keys))  # no duplicate (step, key) record
    assert records == scalars_without_time(straight.run_dir)
    tb = tensorboard_scalars(killed.run_dir)
    assert all(len({s for s, _ in points}) == len(points) for points in tb.values())
    assert tb == tensorboard_scalars(straight.run_dir)
