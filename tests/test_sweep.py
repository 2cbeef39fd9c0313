"""Label-budget sweeps: grid expansion and names, overrides, skip/resume, errors, the submitit job array."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import pytest

from pref_brl.config import TrainConfig, preset_config
from pref_brl.experiments.archive import main as archive_main
from pref_brl.experiments.sweep import StudyProgress, finish, job_env, main, pick_gpu
from pref_brl.study import Grid, StudyError, expand, parse_override, run_state
from pref_brl.trainer import Trainer
from tests.test_trainer import run_until_killed as kill_at

# Tiny runs: 50-step episodes, 16-unit nets; a pebble run crosses seed, exploration, two feedback rounds
# and evals in ~300 steps.
TINY = dict(steps=300, max_episode_steps=50, num_seed_steps=50, num_unsup_steps=50, eval_frequency=100,
            num_eval_episodes=1, checkpoint_frequency=100, log_frequency=100, hidden_dim=16, hidden_depth=1,
            batch_size=16, reward_hidden=16, reward_depth=1, reward_batch=4, num_interact=100, reward_update=3,
            segment=10, reset_update=5)
if "compile" in {f.name for f in dataclasses.fields(TrainConfig)}:
    TINY["compile"] = False  # compiling the SAC update costs seconds per fresh process; it has its own tests
TINY_FLAGS = [a for k, v in TINY.items() for a in ("--set", f"{k}={v}")]


def grid(tmp_path: Path, **changes) -> Grid:
    base = Grid(name="study", root=str(tmp_path), preset="cpu", envs=("walker_walk",), methods=("pebble",),
                budgets=(8,), teachers=("oracle",), seeds=(0,),
                overrides=tuple((k, (v,)) for k, v in TINY.items()))
    return dataclasses.replace(base, **changes)


def test_expansion_names_are_readable_stable_and_seed_major(tmp_path: Path) -> None:
    runs = expand(grid(tmp_path, methods=("sac", "pebble", "bilevel"), budgets=(50, 100),
                       teachers=("oracle", "mistake"), seeds=(0, 1), overrides=()))
    labels = [r.label for r in runs]
    # sac learns from the true reward: one run per seed, whatever the budgets and teachers
    assert labels[:5] == ["walker_walk/sac/seed0", "walker_walk/pebble/budget50/oracle/seed0",
                          "walker_walk/bilevel/budget50/oracle/seed0", "walker_walk/pebble/budget50/mistake/seed0",
                          "walker_walk/bilevel/budget50/mistake/seed0"]
    assert len(runs) == 2 * (1 + 2 * 2 * 2) and len(set(labels)) == len(labels)
    assert labels.index("walker_walk/sac/seed1") == 9  # all of seed 0 first
    run = runs[labels.index("walker_walk/bilevel/budget100/mistake/seed1")]
    expected = preset_config("cpu", "walker_walk", method="bilevel", seed=1, max_feedback=100, teacher="mistake",
                             threads=1, run_dir=str(tmp_path / "study" / run.label))
    assert run.config == expected
    assert run.run_dir == tmp_path / "study/walker_walk/bilevel/budget100/mistake/seed1"
    assert [r.label for r in expand(grid(tmp_path, methods=("sac", "pebble", "bilevel"), budgets=(50, 100),
                                         teachers=("oracle", "mistake"), seeds=(0, 1), overrides=()))] == labels


def test_overrides_fixed_and_swept(tmp_path: Path) -> None:
    overrides = (("steps", (5000,)), ("segment", (25, 50)), ("threads", (2,)), ("penalty_weight", (0.5, 1.0)))
    runs = expand(grid(tmp_path, methods=("sac", "pebble", "bilevel"), overrides=overrides))
    labels = [r.label for r in runs]
    # a swept field is part of the name; methods that do not read it are not split by it
    assert labels == ["walker_walk/sac/seed0", "walker_walk/pebble+segment=25/budget8/oracle/seed0",
                      "walker_walk/pebble+segment=50/budget8/oracle/seed0"] + [
        f"walker_walk/bilevel+segment={s}+penalty_weight={w}/budget8/oracle/seed0"
        for s in (25, 50) for w in (0.5, 1.0)]
    assert all(r.config.steps == 5000 and r.config.threads == 2 for r in runs)
    assert runs[0].config.segment == preset_config("cpu", "walker_walk").segment
    assert {(r.config.segment, r.config.penalty_weight) for r in runs[3:]} == {(25, .5), (25, 1.), (50, .5),
                                                                               (50, 1.)}


def test_method_variants_are_their_own_folders_and_set_only_their_fields(tmp_path: Path) -> None:
    runs = expand(grid(tmp_path, methods=("pebble", "bilevel", "bilevel+penalty=false",
                                          "bilevel+penalty=false+b_in_replay=false"),
                       overrides=(("steps", (5000,)), ("penalty_weight", (0.5, 1.0)))))
    by_label = {r.label: r.config for r in runs}
    assert list(by_label) == ["walker_walk/pebble/budget8/oracle/seed0"] + [
        f"walker_walk/{m}+penalty_weight={w}/budget8/oracle/seed0"
        for m in ("bilevel", "bilevel+penalty=false", "bilevel+penalty=false+b_in_replay=false") for w in (0.5, 1.0)]
    plain = by_label["walker_walk/bilevel+penalty_weight=0.5/budget8/oracle/seed0"]
    control = by_label["walker_walk/bilevel+penalty=false+penalty_weight=0.5/budget8/oracle/seed0"]
    replay = by_label["walker_walk/bilevel+penalty=false+b_in_replay=false+penalty_weight=0.5/budget8/oracle/seed0"]
    assert (plain.penalty, plain.b_in_replay) == (True, True)
    assert (control.penalty, control.b_in_replay) == (False, True)
    assert (replay.penalty, replay.b_in_replay) == (False, False)
    # apart from the variant's fields, a variant is configured exactly like its method
    assert dataclasses.replace(control, penalty=True, run_dir=plain.run_dir) == plain
    assert all(c.steps == 5000 for c in by_label.values())


@pytest.mark.parametrize("spec, message", [
    ("pebble+penalty=false", "method pebble does not read penalty"),
    ("bilevel+penalty", "is not key=value"),
    ("bilevel+penalty=maybe", "must be true or false"),
    ("bilevel+seed=3", "set by the study's own axes"),
    ("bilevel+penalty=false+penalty=true", "sets penalty twice"),
    ("bilevel+stepz=3", "unknown config field"),
    ("dagger+penalty=false", "unknown method 'dagger'"),
])
def test_bad_method_variants_are_refused(tmp_path: Path, spec: str, message: str) -> None:
    with pytest.raises(StudyError, match=message):
        expand(grid(tmp_path, methods=(spec,)))
    with pytest.raises(StudyError, match="also sweeps"):
        expand(grid(tmp_path, methods=("bilevel+penalty=false",), overrides=(("penalty", (True, False)),)))


def test_sobirl_is_not_split_by_penalty_weight_which_it_does_not_read(tmp_path: Path) -> None:
    runs = expand(grid(tmp_path, methods=("sobirl", "bilevel"), overrides=(("penalty_weight", (0.5, 1.0)),)))
    assert [r.label for r in runs] == ["walker_walk/sobirl/budget8/oracle/seed0",
                                       "walker_walk/bilevel+penalty_weight=0.5/budget8/oracle/seed0",
                                       "walker_walk/bilevel+penalty_weight=1.0/budget8/oracle/seed0"]


def test_default_budget_is_each_envs_preset(tmp_path: Path) -> None:
    runs = expand(grid(tmp_path, envs=("walker_walk", "metaworld_door-open-v3"), budgets=(), overrides=()))
    assert [(r.label, r.config.max_feedback) for r in runs] == [
        ("walker_walk/pebble/budget100/oracle/seed0", 100),
        ("metaworld_door-open-v3/pebble/budget1000/oracle/seed0", 1000)]


def test_override_parsing_types_and_errors() -> None:
    assert parse_override("steps=20000") == ("steps", (20000,))
    assert parse_override("num-interact=1e4") == ("num_interact", (10000,))
    assert parse_override("penalty_weight=0.5,1") == ("penalty_weight", (0.5, 1.0))
    assert parse_override("estimator=shared-states") == ("estimator", ("shared-states",))
    for bad, message in [("steps", "key=value"), ("stepz=3", "unknown config field"), ("steps=3.5", "integer"),
                         ("estimator=exact", "one of"), ("lr=fast", "bad value")]:
        with pytest.raises(StudyError, match=message):
            parse_override(bad)


def test_dry_run_reads_a_toml_study_and_reports_states(tmp_path: Path, capsys) -> None:
    study = tmp_path / "study.toml"
    study.write_text(f'name = "t"\nroot = "{tmp_path}"\nmethods = ["pebble"]\nbudgets = [8]\nseeds = [0, 1, 2]\n'
                     "[set]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in TINY.items()), encoding="utf-8")
    runs = expand(grid(tmp_path, name="t", seeds=(0, 1, 2)))
    for run, files in zip(runs, (["config.json", "done.json"], ["config.json"])):
        run.run_dir.mkdir(parents=True)
        (run.run_dir / "config.json").write_text(run.config.to_json(), encoding="utf-8")
        for name in files[1:]:
            (run.run_dir / name).write_text("{}", encoding="utf-8")
    assert main(["--config", str(study), "--dry-run", "--seeds", "0", "1", "2", "3"]) == 0  # the CLI wins
    out = capsys.readouterr().out.splitlines()
    assert out[:4] == ["done     walker_walk/pebble/budget8/oracle/seed0",
                       "partial  walker_walk/pebble/budget8/oracle/seed1",
                       "new      walker_walk/pebble/budget8/oracle/seed2",
                       "new      walker_walk/pebble/budget8/oracle/seed3"]
    assert out[4].startswith("4 runs in") and "(2 new, 1 partial, 0 running, 1 done)" in out[4]
    assert not (tmp_path / "t" / "walker_walk/pebble/budget8/oracle/seed2").exists()


def test_dry_run_shows_a_run_that_another_sweep_is_training(tmp_path: Path, capsys) -> None:
    # looking at a study while its runs go is what --dry-run is for; starting it a second time is refused
    import fcntl

    argv = ["--name", "t", "--root", str(tmp_path), "--methods", "pebble", "--budgets", "8", "--seeds", "0", "1",
            *TINY_FLAGS]
    busy = expand(grid(tmp_path, name="t", seeds=(0, 1)))[0].run_dir
    busy.mkdir(parents=True)
    (busy / "config.json").write_text(expand(grid(tmp_path, name="t", seeds=(0,)))[0].config.to_json(), "utf-8")
    with (busy / "lock").open("a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("4242")
        held.flush()
        assert main([*argv, "--dry-run"]) == 0
        out = capsys.readouterr().out.splitlines()
        assert out[:2] == ["running  walker_walk/pebble/budget8/oracle/seed0  (pid 4242)",
                           "new      walker_walk/pebble/budget8/oracle/seed1"]
        assert "(1 new, 0 partial, 1 running, 0 done)" in out[2]
        assert main(argv) == 2
        assert "is in use by another process (pid 4242)" in capsys.readouterr().err
    assert sorted(p.name for p in busy.iterdir()) == ["config.json", "lock"]
    assert not busy.with_name("seed1").exists()


@pytest.mark.parametrize("argv, message", [
    (["--seeds"], "empty grid: no values for --seeds"),
    (["--methods", "pebble", "dagger"], "unknown method 'dagger'"),
    (["--envs", "walker_run"], "unknown env 'walker_run'"),
    (["--budgets", "3"], "smaller than one round"),
    (["--budgets", "-10"], "must be positive"),
    (["--set", "seed=1"], "use --seeds instead"),
    (["--set", "hidden_dim"], "is not key=value"),
])
def test_bad_input_is_one_line_and_creates_nothing(tmp_path: Path, capsys, argv, message) -> None:
    assert main(["--root", str(tmp_path / "runs"), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("error: ") and err.count("\n") == 1
    assert not (tmp_path / "runs").exists()


def test_unwritable_root_and_changed_config_are_refused_up_front(tmp_path: Path, capsys) -> None:
    (tmp_path / "a_file").write_text("x", encoding="utf-8")
    assert main(["--root", str(tmp_path / "a_file" / "runs")]) == 2
    assert "a_file, which is a file; choose a folder outside it" in capsys.readouterr().err
    run = expand(grid(tmp_path))[0]
    run.run_dir.mkdir(parents=True)
    (run.run_dir / "config.json").write_text(dataclasses.replace(run.config, steps=999).to_json(), "utf-8")
    assert main(["--root", str(tmp_path), "--methods", "pebble", "--budgets", "8", *TINY_FLAGS]) == 2
    assert "different config (steps: 999 -> 300)" in capsys.readouterr().err




def test_local_sweep_skips_finished_and_resumes_partial_runs(tmp_path: Path, capsys) -> None:
    argv = ["--root", str(tmp_path), "--methods", "sac", "pebble", "--budgets", "8", "--jobs", "2", *TINY_FLAGS]
    finished, partial = expand(grid(tmp_path, methods=("sac", "pebble")))
    finished.run_dir.mkdir(parents=True)  # a finished run: the sweep must not start it again
    (finished.run_dir / "config.json").write_text(finished.config.to_json(), encoding="utf-8")
    (finished.run_dir / "done.json").write_text("{}", encoding="utf-8")
    kill_at(partial.config, 250)
    checkpoint_step = json.loads((partial.run_dir / "scalars.jsonl").read_text().splitlines()[-1])["step"]
    assert run_state(partial) == "partial" and checkpoint_step >= 200

    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "(1 skipped)" in out and "started walker_walk/sac" not in out
    assert "started walker_walk/pebble/budget8/oracle/seed0" in out and "2/2 done (1 skipped)" in out
    assert run_state(partial) == "done" and "resum" in (partial.run_dir / "train.log").read_text().lower()
    assert len(list((partial.run_dir / "tb").iterdir())) == 2  # the killed session's events, then the resumed one's
    steps = [json.loads(line)["step"] for line in (partial.run_dir / "scalars.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and steps[-1] == 300

    assert main(argv) == 0
    assert "2/2 done (2 skipped)" in capsys.readouterr().out


def test_hparams_are_recorded_for_tensorboard(tiny) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = tiny(steps=100, eval_frequency=100)
    Trainer(cfg, progress=False).train()
    events = EventAccumulator(str(Path(cfg.run_dir) / "tb"))
    events.Reload()
    tags = events.PluginTagToContent("hparams")
    assert {"_hparams_/experiment", "_hparams_/session_start_info"} <= set(tags)
    assert b"hidden_dim" in tags["_hparams_/session_start_info"]
    assert b"eval/mean_reward" in tags["_hparams_/experiment"]
    (config,) = events.Tensors("config/text_summary")
    assert f'"run_dir": {json.dumps(cfg.run_dir)}' in config.tensor_proto.string_val[0].decode()
    # the archive's copy names the run's place in the archive, not the folder it trained in
    out = Path(cfg.run_dir).parent / "archive"
    assert archive_main([cfg.run_dir, "--out", str(out)]) == 0
    copied = b"".join(p.read_bytes() for p in (out / "tb").iterdir())
    assert cfg.run_dir.encode() not in copied and f'"run_dir": "{Path(cfg.run_dir).name}"'.encode() in copied


def test_failed_job_is_reported_with_its_error_line(tmp_path: Path, capsys) -> None:
    run = expand(grid(tmp_path))[0]
    run.run_dir.mkdir(parents=True)
    (run.run_dir / "train.log").write_text("[ 100/300] ...\nerror: non-finite critic loss at step 120\n", "utf-8")
    progress = StudyProgress(total=3, skipped=1, status_every=60)
    progress.start(run.label)
    finish(run, 2, progress)
    out = capsys.readouterr().out
    assert progress.failed == 1 and "FAILED walker_walk/pebble/budget8/oracle/seed0 (exit 2)" in out
    assert "error: non-finite critic loss at step 120" in out
    assert "1/3 done (1 skipped), 0 running, 1 failed, 1 queued" in out


def test_summary_line_has_an_eta_once_a_run_has_finished(capsys) -> None:
    progress = StudyProgress(total=4, skipped=0, status_every=60, jobs=2)
    progress.start("a")
    progress.start("b")
    progress.summary()
    assert "ETA" not in capsys.readouterr().out  # nothing finished yet: no estimate
    now = time.time()
    progress.started.update(a=now - 600, b=now - 300)
    assert round(progress.end("a", finished=True)) == 600
    progress.done += 1
    progress.summary()
    # b has about 300 s left, the 2 queued runs 600 s each, 2 at once: (300 + 1200) / 2 s = 12.5 min
    assert "1/4 done (0 skipped), 1 running, 0 failed, 2 queued, ETA 12m (mean run 10.0 min)" in capsys.readouterr().out


def test_one_gpu_per_job() -> None:
    assert pick_gpu((0, 1), []) == 0 and pick_gpu((0, 1), [0]) == 1 and pick_gpu((0, 1), [0, 1, 1]) == 0
    assert pick_gpu((), [None]) is None
    run = expand(grid(Path("/tmp/unused")))[0]
    assert job_env(run, 1)["CUDA_VISIBLE_DEVICES"] == "1" and job_env(run, None)["OMP_NUM_THREADS"] == "1"


def test_submitit_job_array_with_the_local_executor(tmp_path: Path, capsys) -> None:
    argv = ["--root", str(tmp_path), "--methods", "sac", "--seeds", "0", "1", "--executor", "submitit-local",
            "--status-every", "5", *TINY_FLAGS, "--set", "steps=100"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "submitted 2 jobs (local)" in out and "2/2 done (0 skipped)" in out
    for seed in (0, 1):
        assert (tmp_path / f"study/walker_walk/sac/seed{seed}/done.json").exists()
    assert (tmp_path / "study/.submitit").is_dir()
    assert main(argv) == 0 and "2 of 2 runs already finished" in capsys.readouterr().out


def _alive(pid: int) -> bool:
    """Whether process `pid` still runs (a zombie waiting for its reaper counts as ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] not in "ZX"
    except (OSError, IndexError):
        return False


def _logged(run_dir: Path) -> bool:
    path = run_dir / "scalars.jsonl"
    return path.exists() and path.stat().st_size > 0


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="parent-death signal: Linux only")
def test_sigkilled_sweep_leaves_no_orphans_and_a_rerun_completes(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    root_dir = Path(__file__).resolve().parents[1]
    argv = ["--root", str(tmp_path), "--methods", "sac", "--seeds", "0", "1", "--jobs", "2", *TINY_FLAGS,
            "--set", "steps=500", "--set", "threads=1"]
    command = [sys.executable, "-m", "pref_brl.experiments.sweep", *argv]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(root_dir)}
    sweep = subprocess.Popen(command, cwd=root_dir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    runs = expand(grid(tmp_path, methods=("sac",), seeds=(0, 1), overrides=grid(tmp_path).overrides + (
        ("steps", (500,)), ("threads", (1,)))))
    # Each run is frozen (SIGSTOP) as soon as it has logged, so that neither can finish its 500 steps while the
    # other is still starting: the sweep is killed with both runs mid-training on any machine, however fast.
    pids: dict[int, int] = {}
    try:
        deadline = time.time() + 60
        while len(pids) < len(runs):
            assert time.time() < deadline and sweep.poll() is None, "the runs did not start"
            for i, run in enumerate(runs):
                if i not in pids and _logged(run.run_dir):
                    pids[i] = int((run.run_dir / "lock").read_text())
                    os.kill(pids[i], signal.SIGSTOP)
            time.sleep(0.01)
        assert not any((r.run_dir / "done.json").exists() for r in runs), "a run finished before it was frozen"
    finally:  # whatever failed above, the sweep dies and no run is left frozen
        sweep.send_signal(signal.SIGKILL)
        sweep.wait()
        for pid in pids.values():  # the parent-death SIGTERM waits, pending, until each run goes on
            os.kill(pid, signal.SIGCONT)
    deadline = time.time() + 30
    while any(_alive(pid) for pid in pids.values()):
        assert time.time() < deadline, "runs of the killed sweep go on training as orphans"
        time.sleep(0.05)
    for run in runs:
        assert "stopped by SIGTERM" in (run.run_dir / "train.log").read_text()
        assert run_state(run) == "partial"
    rerun = subprocess.run(command, cwd=root_dir, env=env, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0 and "FAILED" not in rerun.stdout, rerun.stdout + rerun.stderr
    assert "2/2 done (0 skipped), 0 running, 0 failed" in rerun.stdout
    assert all(run_state(r) == "done" for r in runs)
