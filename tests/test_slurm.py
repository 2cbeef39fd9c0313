"""Studies on Slurm: the submitted callable (TrainJob: stop at the end of the episode on submitit's time-limit
signal, checkpoint, requeue), the squeue-based job watcher, and, under `-m slurm`, a live single-node Slurm.

The live tier (`OMP_NUM_THREADS=1 .venv/bin/python -m pytest -m slurm -rs`) installs and starts Slurm through
tests/slurm_setup.sh when it is not up (root and apt-get needed; otherwise its tests are skipped with the
reason), then runs tiny studies through `pref-brl-sweep --executor slurm` and compares them with the local
executor, bit for bit.
"""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pref_brl.checkpoint import load_checkpoint
from pref_brl.logger import read_scalars
from pref_brl.study import RequeueLimitError, TrainJob
from pref_brl.trainer import Trainer
from tests.conftest import scalars_without_time, tiny_config

REPO = Path(__file__).resolve().parents[1]
SETUP = REPO / "tests" / "slurm_setup.sh"
TINY_KEYS = ("steps", "max_episode_steps", "num_seed_steps", "num_unsup_steps", "eval_frequency",
             "num_eval_episodes", "checkpoint_frequency", "log_frequency", "hidden_dim", "hidden_depth",
             "batch_size", "reward_hidden", "reward_depth", "reward_batch", "num_interact", "reward_update",
             "segment", "reset_update", "compile")


def assert_same_run(run_dir: Path, reference: Path) -> None:
    """Same logged scalars (wall-clock values aside) and the same final actor of agent A."""
    assert scalars_without_time(run_dir) == scalars_without_time(reference)
    actor, expected = (load_checkpoint(d)["agents"]["A"]["actor"] for d in (run_dir, reference))
    assert actor.keys() == expected.keys()
    assert all(torch.equal(actor[k], expected[k]) for k in actor)


# ------------------------------------------------------------------------------------------ default tier
def _signal_at(monkeypatch, step: int) -> None:
    """Send this process submitit's time-limit signal (USR2) while training passes `step`."""
    collect = Trainer.collect_step

    def collect_and_signal(self: Trainer) -> None:
        if self.step == step:
            os.kill(os.getpid(), signal.SIGUSR2)
        collect(self)

    monkeypatch.setattr(Trainer, "collect_step", collect_and_signal)


def test_train_job_defers_the_time_limit_signal_to_the_episode_end(tiny, monkeypatch) -> None:
    reference = tiny("reference", steps=400)
    Trainer(reference, progress=False).train()
    config = dataclasses.asdict(tiny("job", steps=400))
    calls: list[object] = []

    def submitit_handler(signum: int, frame: object) -> None:  # what submitit's handler does, minus requeue
        calls.append(job.checkpoint(config))
        raise SystemExit(-1)

    previous = signal.signal(signal.SIGUSR2, submitit_handler)
    try:
        _signal_at(monkeypatch, 150)
        job = TrainJob(max_requeues=2)
        with pytest.raises(SystemExit):
            job(config)
        monkeypatch.undo()
        assert len(calls) == 1 and job.step == 200  # the episode that was running (100 steps) ended first
        assert load_checkpoint(Path(config["run_dir"]))["step"] == 200
        delayed = calls[0]
        assert delayed.function.requeues == 1 and delayed.args == (config,)
        result = delayed.result()  # the requeued job
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert result == {"run_dir": config["run_dir"], "step": 400, "done": True, "requeues": 1}
    assert_same_run(Path(config["run_dir"]), Path(reference.run_dir))


def test_requeue_limit_and_no_submitit(tiny, monkeypatch) -> None:
    config = dataclasses.asdict(tiny("job", method="sac", steps=400))
    with pytest.raises(RequeueLimitError, match=r"after 2 requeue\(s\) \(--max-requeues 2\).*re-run the same"):
        TrainJob(max_requeues=2, requeues=2).checkpoint(config)
    previous = signal.signal(signal.SIGUSR2, signal.SIG_DFL)  # not under submitit: just stop after a checkpoint
    try:
        _signal_at(monkeypatch, 50)
        result = TrainJob()(config)
        assert signal.getsignal(signal.SIGUSR2) == signal.SIG_DFL  # put back
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert result["step"] == 100 and not result["done"] and load_checkpoint(Path(config["run_dir"]))["step"] == 100


def test_squeue_watcher_reads_array_states(monkeypatch) -> None:
    pytest.importorskip("submitit")
    from pref_brl.experiments import sweep

    output = "41_0|RUNNING\n41_1|PENDING\n41_[3-4]|PENDING\n41_5|CANCELLED by 0\n"
    calls: list[list[str]] = []

    def fake_run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
        calls.append(command)
        return subprocess.CompletedProcess(command, 0, stdout=output, stderr="")

    monkeypatch.setattr(sweep.subprocess, "run", fake_run)
    watcher = sweep.squeue_watcher()
    states = {j: watcher.get_state(j, mode="force") for j in ("41_0", "41_1", "41_3", "41_5", "41_2")}
    assert states == {"41_0": "RUNNING", "41_1": "PENDING", "41_3": "PENDING", "41_5": "CANCELLED",
                      "41_2": "ENDED"}  # 41_2 is no longer listed: it ended
    assert [watcher.is_done(j, mode="cache") for j in states] == [False, False, False, True, True]
    assert calls[0][0] == "squeue"

    def no_squeue(command: list[str], **kwargs) -> subprocess.CompletedProcess:
        raise OSError("no squeue")

    monkeypatch.setattr(sweep.subprocess, "run", no_squeue)
    assert watcher.get_state("41_0", mode="force") == "RUNNING"  # a failed call keeps the last states


# ------------------------------------------------------------------------------------------ live Slurm
@pytest.fixture(scope="module")
def slurm() -> None:
    """A running Slurm (tests/slurm_setup.sh installs and starts a single-node one if it can)."""
    pytest.importorskip("submitit")
    try:
        done = subprocess.run(["bash", str(SETUP)], capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        pytest.fail("tests/slurm_setup.sh did not finish within 15 minutes")
    if done.returncode == 77:
        pytest.skip((done.stderr.strip().splitlines() or ["Slurm cannot be set up here"])[-1])
    if done.returncode != 0:
        pytest.fail(f"tests/slurm_setup.sh failed:\n{done.stdout}{done.stderr}")


def tiny_flags(**changes) -> list[str]:
    cfg = tiny_config(Path("unused"), **changes)
    return [a for k in TINY_KEYS for a in ("--set", f"{k}={str(getattr(cfg, k)).lower()}")]


def sweep_command(root: Path, name: str, *extra: str, seeds=("0", "1"), **changes) -> list[str]:
    return [sys.executable, "-m", "pref_brl.experiments.sweep", "--root", str(root), "--name", name,
            "--methods", "pebble", "--budgets", "12", "--seeds", *seeds, "--status-every", "30",
            *tiny_flags(**changes), *extra]


ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def run_sweep(command: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=timeout)


def start_sweep(command: list[str], log: Path) -> subprocess.Popen:
    with log.open("w", encoding="utf-8") as out:
        return subprocess.Popen(command, cwd=REPO, env=ENV, stdout=out, stderr=subprocess.STDOUT)


def finish(proc: subprocess.Popen, log: Path, timeout: float = 600) -> str:
    proc.wait(timeout=timeout)
    text = log.read_text(encoding="utf-8")
    assert proc.returncode == 0, text
    return text


def run_dirs(root: Path, name: str) -> list[Path]:
    return [root / name / f"walker_walk/pebble/budget12/oracle/seed{s}" for s in (0, 1)]


def assert_clean(output: str) -> None:
    """No submitit warnings (e.g. one per failed sacct call on a cluster without job accounting)."""
    assert not re.search(r"WARNING|Bypassing|sacct|Traceback", output), output


def cancel_all(text: str) -> None:
    """scancel the arrays a sweep's output names (cleanup after a failed test)."""
    for array in re.findall(r"submitted \d+ jobs \(slurm\): (\d+)", text):
        subprocess.run(["scancel", array], capture_output=True, check=False)


@pytest.fixture(scope="module")
def studies(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("studies")


@pytest.fixture(scope="module")
def local_reference(slurm, studies: Path):
    """The 2-run study through the local executor, started once (in the background) for the tests below."""
    log = studies / "local.log"
    proc = start_sweep(sweep_command(studies, "local", "--executor", "local", "--jobs", "2"), log)
    yield lambda: finish(proc, log) and run_dirs(studies, "local")
    if proc.poll() is None:
        proc.terminate()
        proc.wait()


@pytest.mark.slurm
def test_array_completes_with_the_local_executors_results(slurm, studies: Path, local_reference) -> None:
    done = run_sweep(sweep_command(studies, "array", "--executor", "slurm", "--wait"))
    cancel_all(done.stdout)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "submitted 2 jobs (slurm)" in done.stdout and "2/2 done (0 skipped)" in done.stdout
    assert_clean(done.stdout + done.stderr)
    for run_dir, reference in zip(run_dirs(studies, "array"), local_reference()):
        assert (run_dir / "done.json").exists()
        assert_same_run(run_dir, reference)
    again = run_sweep(sweep_command(studies, "array", "--executor", "slurm", "--wait"))
    assert again.returncode == 0 and "2 of 2 runs already finished" in again.stdout


@pytest.mark.slurm
def test_cancelled_array_resumes_when_the_command_is_run_again(slurm, studies: Path, local_reference) -> None:
    command = sweep_command(studies, "cancelled", "--executor", "slurm", "--wait")
    log = studies / "cancelled.log"
    proc = start_sweep(command, log)
    dirs = run_dirs(studies, "cancelled")
    together = slurm_cpus() >= 2
    try:
        deadline = time.time() + 300
        while not all((d / "checkpoint.pt").exists() for d in dirs):  # the runs started and checkpointed
            assert proc.poll() is None and time.time() < deadline, log.read_text(encoding="utf-8")
            if not together and any((d / "checkpoint.pt").exists() for d in dirs):
                break  # one task at a time here: cancel the first run midway and the second before it starts
            time.sleep(0.2)
        array = re.search(r"submitted 2 jobs \(slurm\): (\d+)", log.read_text(encoding="utf-8")).group(1)
        subprocess.run(["scancel", array], check=True)
        proc.wait(timeout=300)  # the sweep notices the cancelled jobs without sacct
    finally:
        if proc.poll() is None:
            proc.kill()
        cancel_all(log.read_text(encoding="utf-8"))
    first = log.read_text(encoding="utf-8")
    assert proc.returncode == 1 and first.count("FAILED walker_walk/pebble") == 2, first
    assert "re-run the same command" in first and "0/2 done" in first
    assert all(not (d / "done.json").exists() for d in dirs)
    stopped = {d: load_checkpoint(d)["step"] for d in dirs if (d / "checkpoint.pt").exists()}
    assert stopped and all(step > 0 for step in stopped.values()), stopped

    again = run_sweep(command)
    cancel_all(again.stdout)
    assert again.returncode == 0 and "2/2 done (0 skipped)" in again.stdout, again.stdout + again.stderr
    assert_clean(again.stdout + again.stderr)
    array = re.search(r"submitted 2 jobs \(slurm\): (\d+)", again.stdout).group(1)
    logs = "".join(p.read_text(encoding="utf-8") for p in (studies / "cancelled/.submitit").glob(f"{array}_*/*.out"))
    for run_dir, step in stopped.items():  # each run resumed where it was stopped: none started from scratch
        assert f"resuming {run_dir} from its checkpoint at step {step}\n" in logs, logs
    for run_dir, reference in zip(dirs, local_reference()):
        assert_same_run(run_dir, reference)


def slurm_cpus() -> int:
    """The CPUs of the largest Slurm node: how many 1-CPU tasks can run at once on the single-node set-up."""
    out = subprocess.run(["sinfo", "--noheader", "--format=%c"], capture_output=True, text=True, check=False)
    return max((int(c) for c in out.stdout.split() if c.isdigit()), default=1)


def steps_for(seconds: float, tmp_path: Path) -> int:
    """Training steps that take at least about `seconds` on this machine now, timed on a short tiny run at the
    speed of its learning phase (the slowest; the run measured later also shares the CPUs with its reference)."""
    cfg = tiny_config(tmp_path, "calibration", method="pebble", steps=700)
    Trainer(cfg, progress=False).train()
    fps = [r["time/fps"] for r in read_scalars(Path(cfg.run_dir)) if r["step"] > 400 and "time/fps" in r]
    per_step = sum(1 / f for f in fps) / len(fps)
    return int(min(30000, max(2000, seconds / per_step)) // 100 * 100)


@pytest.mark.slurm
def test_run_outlives_its_job_time_limit_through_requeues(slurm, studies: Path, tmp_path: Path) -> None:
    # A 1-minute limit with a 10 s lead: Slurm (which checks limits every 30 s) signals each job 20-50 s after
    # it starts, so a run that needs 50 s of training outlives its first job whatever the machine's speed. The
    # calibration asks for 120 s: timed while other work shares the cores, a run can go twice as fast minutes
    # later when that work ends (it once finished in 27 s, inside its first job).
    steps = steps_for(120, tmp_path)
    extra = dict(seeds=("0",), steps=steps)
    log = studies / "uninterrupted.log"
    reference = start_sweep(sweep_command(studies, "uninterrupted", "--executor", "local", **extra), log)
    done = run_sweep(sweep_command(studies, "requeued", "--executor", "slurm", "--wait", "--timeout-min", "1",
                                   "--signal-lead", "10", "--max-requeues", "10", **extra), timeout=900)
    cancel_all(done.stdout)
    assert done.returncode == 0, done.stdout + done.stderr
    assert_clean(done.stdout + done.stderr)
    count = re.search(r"^done +walker_walk/pebble/budget12/oracle/seed0  requeued (\d+)×$", done.stdout, re.M)
    assert count and int(count.group(1)) >= 1, done.stdout
    assert f"finished walker_walk/pebble/budget12/oracle/seed0 (requeued {count.group(1)}×)" in done.stdout
    finish(reference, log)
    assert_same_run(run_dirs(studies, "requeued")[0], run_dirs(studies, "uninterrupted")[0])
