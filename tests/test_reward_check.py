"""A run's learned reward outside the run (pref_brl.load_reward) and pref-brl-reward-check, which scores other
agents' episodes with it: the loaded reward is the run's own, and every number of the check is recomputed here
from its segments by brute force."""

from __future__ import annotations

import itertools
import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import pref_brl
from pref_brl.experiments.reward_check import main as reward_check_main
from pref_brl.reward_check import OWN, check_reward, to_markdown, watch
from pref_brl.trainer import Trainer


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny pebble run (past its feedback rounds) and a tiny sac run, walker with 100-step episodes."""
    from tests.conftest import tiny_config

    root = tmp_path_factory.mktemp("runs")
    pebble = tiny_config(root, "pebble", method="pebble", steps=800)
    trainer = Trainer(pebble, progress=False)
    trainer.train()
    sac = tiny_config(root, "sac", steps=400)
    Trainer(sac, progress=False).train()
    return pebble, sac, trainer.learner.reward_model


def test_the_loaded_reward_is_the_runs_own(runs) -> None:
    pebble, _, model = runs
    reward = pref_brl.load_reward(pebble.run_dir)
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(37, reward.obs_dim)).astype(np.float32)
    act = rng.uniform(-1, 1, size=(37, reward.act_dim)).astype(np.float32)
    expected = model.mean_reward(torch.as_tensor(obs), torch.as_tensor(act)).double().numpy()
    assert np.array_equal(reward(obs, act), expected)
    assert reward(obs[3], act[3]) == pytest.approx(expected[3], rel=1e-5)  # one row: another matmul kernel
    with pytest.raises(ValueError, match=r"expected obs \[N, 24\] and act \[N, 6\]"):
        reward(obs, act[:, :2])
    # the members' disagreement, from each member's own reward
    members = model.member_rewards(torch.cat([torch.as_tensor(obs), torch.as_tensor(act)], 1)).detach().double()
    assert members.shape == (pebble.ensemble_size, 37)
    spread = reward.ensemble_std(obs, act)
    assert reward.has_ensemble and spread.shape == (37,)
    assert spread == pytest.approx(members.std(0, correction=0).numpy(), rel=1e-4, abs=1e-7)
    assert reward.ensemble_std(obs[3], act[3]) == pytest.approx(spread[3], rel=1e-4, abs=1e-7)
    with pytest.raises(ValueError, match=r"expected obs \[N, 24\]"):
        reward.ensemble_std(obs[:, :3], act)


def test_a_sac_run_has_no_learned_reward(runs) -> None:
    _, sac, _ = runs
    with pytest.raises(ValueError, match="is a sac run"):
        pref_brl.load_reward(sac.run_dir)


def test_every_number_of_the_check_is_its_segments(runs) -> None:
    pebble, sac, _ = runs
    check = check_reward(pebble.run_dir, [sac.run_dir], episodes=3, seed=2)
    own, other = check.policies
    assert own.name == OWN and other.name == str(sac.run_dir)
    assert check.step == 800 and check.labels == pebble.max_feedback  # the finished run's checkpoint
    assert own.step == 800 and other.step == 400  # each policy's checkpoint, named in the table
    assert f"| {sac.run_dir} | 400 | 3 |" in to_markdown(check)
    assert own.segments == other.segments == 3 * 100 // pebble.segment
    for score, true, learned in zip(check.policies, check.true_segment_returns, check.learned_segment_returns):
        # 100-step episodes cut into whole segments: per-episode returns are the segments' sums
        assert math.isclose(score.true_return, sum(true) / 3, rel_tol=1e-9, abs_tol=1e-9)
        assert math.isclose(score.learned_return, sum(learned) / 3, rel_tol=1e-9, abs_tol=1e-9)
        assert math.isnan(score.success)  # walker has no success signal
    true = check.true_segment_returns[0] + check.true_segment_returns[1]
    learned = check.learned_segment_returns[0] + check.learned_segment_returns[1]
    agree = [(learned[i] > learned[j]) == (true[i] > true[j])
             for i, j in itertools.combinations(range(len(true)), 2) if true[i] != true[j]]
    assert check.pair_accuracy == pytest.approx(sum(agree) / len(agree))
    assert check.segment_corr == pytest.approx(np.corrcoef(learned, true)[0, 1])
    own_pairs = [(a, b, c, d) for a, b in zip(check.true_segment_returns[0], check.learned_segment_returns[0])
                 for c, d in zip(check.true_segment_returns[1], check.learned_segment_returns[1]) if a != c]
    assert other.cross_accuracy == pytest.approx(np.mean([(d > b) == (c > a) for a, b, c, d in own_pairs]))
    assert other.cross_better == pytest.approx(np.mean([c > a for a, _, c, _ in own_pairs]))
    assert math.isnan(own.cross_accuracy)


def segments_by_hand(env, act, reward, segment: int, seed: int, episodes: int = 2):
    """The check's rollout redone with the public API: `episodes` episodes of `act` (obs -> action) on reset
    seeds 1000·seed + i, each cut end to end into segments; (true segment returns, learned ones, the ensemble's
    per-step std of each episode). Closes `env`."""
    true_segments, learned_segments, spread = [], [], []
    for i in range(episodes):
        obs, _ = env.reset(seed=1000 * seed + i)
        observations, actions, rewards, done = [], [], [], False
        while not done:
            action = act(obs)
            observations.append(obs)
            actions.append(action)
            obs, r, terminated, truncated, _ = env.step(action)
            rewards.append(r)
            done = terminated or truncated
        learned = reward(np.stack(observations), np.stack(actions))
        spread.append(reward.ensemble_std(np.stack(observations), np.stack(actions)))
        for start in range(0, len(rewards), segment):
            true_segments.append(sum(rewards[start:start + segment]))
            learned_segments.append(learned[start:start + segment].sum())
    env.close()
    return true_segments, learned_segments, spread


def test_the_segments_are_the_loaded_reward_on_the_policys_episodes(runs) -> None:
    # the check's own rollout, redone here with the public API: the same reset seeds, deterministic actions,
    # each episode cut end to end into segments
    pebble, _, _ = runs
    check = check_reward(pebble.run_dir, episodes=2, seed=1)
    reward, policy = pref_brl.load_reward(pebble.run_dir), pref_brl.load_policy(pebble.run_dir)
    env = pref_brl.make_env("walker_walk", 1, max_episode_steps=100)
    true_segments, learned_segments, spread = segments_by_hand(env, lambda obs: policy.predict(obs)[0], reward,
                                                               pebble.segment, seed=1)
    assert check.true_segment_returns[0] == pytest.approx(true_segments, rel=1e-9)
    assert check.learned_segment_returns[0] == pytest.approx(learned_segments, rel=1e-6)
    assert check.policies[0].ensemble_std == pytest.approx(np.concatenate(spread).mean(), rel=1e-6)


def test_the_labels_true_returns_and_how_much_of_each_policy_they_cover(runs, tmp_path, monkeypatch) -> None:
    pebble, sac, _ = runs
    check = check_reward(pebble.run_dir, [sac.run_dir], episodes=2)
    # the labelled pairs' true returns, against the run's preference file (another way out of the checkpoint)
    data = pref_brl.load_preferences(pref_brl.export_preferences(pebble.run_dir, tmp_path / "prefs.npz"))
    assert len(check.label_returns) == len(data) > 0
    assert np.allclose(check.label_returns, np.stack([data.rew0.sum(1), data.rew1.sum(1)], axis=1), rtol=1e-5)
    highest = max(max(pair) for pair in check.label_returns)
    for score, true in zip(check.policies, check.true_segment_returns):
        assert score.label_coverage == pytest.approx(np.mean([t <= highest for t in true]))
    first = next(i for i, pair in enumerate(check.label_returns) if max(pair) == highest) + 1
    assert f"highest {highest:.3g} (first in pair {first})" in to_markdown(check)
    # labels that reach only part of the other policy's segments: the coverage is that part
    other = sorted(check.true_segment_returns[1])
    load = pref_brl.api.load_reward

    def labels_up_to(run_dir, device="cpu"):
        reward = load(run_dir, device)
        reward.label_returns = np.array([[other[0] - 1.0, other[2]], [other[1], other[0]]])
        return reward

    monkeypatch.setattr(pref_brl.api, "load_reward", labels_up_to)
    partial = check_reward(pebble.run_dir, [sac.run_dir], episodes=2)
    assert partial.policies[1].label_coverage == pytest.approx(np.mean(np.array(other) <= other[2]))
    assert "Labelled segments (2 pairs)" in to_markdown(partial) and "(first in pair 1)" in to_markdown(partial)
    # no labelled pair (every query skipped): no coverage, and the table says so
    monkeypatch.setattr(pref_brl.api, "load_reward", lambda run_dir, device="cpu": pref_brl.api.LearnedReward(
        load(run_dir, device)._model, 24, 6, "cpu", 800, 4, None))
    unlabelled = check_reward(pebble.run_dir, [sac.run_dir], episodes=1)
    assert unlabelled.label_returns == [] and all(math.isnan(p.label_coverage) for p in unlabelled.policies)
    assert "Labelled segments: none." in to_markdown(unlabelled)
    with pytest.raises(ValueError, match=r"label_returns must be \[N, 2\].*got shape \(4,\)"):
        pref_brl.api.LearnedReward(None, 24, 6, "cpu", label_returns=np.zeros(4))


def test_a_reward_model_without_members_has_no_ensemble_std(runs, monkeypatch) -> None:
    # a reward model of your own may offer the mean only: the check still runs, with NaN for the spread
    pebble, sac, _ = runs

    class MeanOnly:
        def __init__(self, model) -> None:
            self.mean_reward = model.mean_reward

    load = pref_brl.api.load_reward

    def mean_only(run_dir, device="cpu"):
        reward = load(run_dir, device)
        reward._model = MeanOnly(reward._model)
        return reward

    monkeypatch.setattr(pref_brl.api, "load_reward", mean_only)
    reward = pref_brl.api.load_reward(pebble.run_dir)
    assert not reward.has_ensemble
    with pytest.raises(ValueError, match="no ensemble members"):
        reward.ensemble_std(np.zeros((2, 24)), np.zeros((2, 6)))
    check = check_reward(pebble.run_dir, [sac.run_dir], episodes=1)
    assert all(math.isnan(p.ensemble_std) for p in check.policies)
    assert all(math.isfinite(p.learned_return) for p in check.policies)


def test_the_command_prints_the_table_and_writes_it(runs, tmp_path, capsys) -> None:
    pebble, sac, _ = runs
    out = tmp_path / "check.md"
    assert reward_check_main([pebble.run_dir, "--against", sac.run_dir, "--episodes", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    text = out.read_text(encoding="utf-8")
    assert text in printed and f"| {OWN} | 800 | 1 |" in text and f"| {sac.run_dir} | 400 | 1 |" in text
    assert "| ensemble std |" in text and (tmp_path / "check.md.json").exists()


def test_watch_on_a_finished_run_checks_its_last_checkpoint_once(runs, tmp_path) -> None:
    pebble, sac, _ = runs
    out = tmp_path / "checks"

    def no_sleep(_seconds: float) -> None:
        raise AssertionError("a finished run needs no waiting")

    assert watch(pebble.run_dir, [sac.run_dir], out, episodes=1, poll=0.1, sleep=no_sleep) == [800]
    assert sorted(p.name for p in out.iterdir()) == ["step0000800.json", "step0000800.md", "watch.json"]
    expected = check_reward(pebble.run_dir, [sac.run_dir], episodes=1)
    assert (out / "step0000800.json").read_text(encoding="utf-8") == expected.to_json()
    before = (out / "step0000800.json").stat().st_mtime_ns
    assert watch(pebble.run_dir, [sac.run_dir], out, episodes=1, poll=0.1, sleep=no_sleep) == [800]  # kept
    assert (out / "step0000800.json").stat().st_mtime_ns == before


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A tiny pebble run finished at 800 steps, and copies of its checkpoints at 400, 600 and 800 steps (after its
    first feedback round) and of its done.json, to land in its folder one by one."""
    import shutil

    from tests.conftest import advance, tiny_config

    root = tmp_path_factory.mktemp("checkpoints")
    cfg = tiny_config(root, "run", method="pebble", steps=800)
    trainer = Trainer(cfg, progress=False)
    run, stash = Path(cfg.run_dir), root / "stash"
    stash.mkdir()
    for step in (400, 600):
        advance(trainer, lambda: trainer.step == step)  # noqa: B023 - called at once, in this iteration
        trainer.save()
        shutil.copyfile(run / "checkpoint.pt", stash / f"{step}.pt")
    trainer.train()
    shutil.copyfile(run / "checkpoint.pt", stash / "800.pt")
    shutil.copyfile(run / "done.json", stash / "done.json")
    return run, stash


def land(run: Path, checkpoint: Path) -> None:
    """A checkpoint lands as the trainer writes one: beside the old one, then renamed over it."""
    import os
    import shutil

    shutil.copyfile(checkpoint, run / "checkpoint.pt.landing")
    os.replace(run / "checkpoint.pt.landing", run / "checkpoint.pt")


def test_watch_checks_every_checkpoint_that_lands_during_a_check(checkpoints, tmp_path, monkeypatch) -> None:
    # a check slower than the run's checkpoints: each is kept when it lands and checked in turn, none skipped
    import shutil

    import pref_brl.reward_check as rc

    finished, stash = checkpoints
    run = tmp_path / "run"
    shutil.copytree(finished, run, ignore=shutil.ignore_patterns("done.json", "checkpoint*"))
    land(run, stash / "400.pt")
    calls, check = [], rc.check_reward

    def slow(*args, **kwargs):
        calls.append(Path(args[0]))
        if len(calls) == 1:  # two more checkpoints land, and the run finishes, while the first check runs
            for step in (600, 800):
                land(run, stash / f"{step}.pt")
                time.sleep(0.5)  # the keeper looks every 0.1 s (--poll)
            shutil.copyfile(stash / "done.json", run / "done.json")
        return check(*args, **kwargs)

    monkeypatch.setattr(rc, "check_reward", slow)
    out = tmp_path / "checks"
    assert rc.watch(run, [], out, episodes=1, poll=0.1) == [400, 600, 800]
    assert len(calls) == 3 and all(c.parent == out / rc.PENDING for c in calls)  # each from its kept copy
    for step in (400, 600, 800):  # written as the run's check
        written = json.loads((out / f"step{step:07d}.json").read_text(encoding="utf-8"))
        assert written["step"] == step and written["run_dir"] == str(run)
        assert f"`{run}`" in (out / f"step{step:07d}.md").read_text(encoding="utf-8")
    assert sorted(p.name for p in out.iterdir()) == [  # the kept copies are gone once checked
        "step0000400.json", "step0000400.md", "step0000600.json", "step0000600.md", "step0000800.json",
        "step0000800.md", "watch.json"]


def test_a_stopped_watch_checks_what_it_had_kept_when_started_again(checkpoints, tmp_path, monkeypatch) -> None:
    import os
    import shutil

    import pref_brl.reward_check as rc

    finished, stash = checkpoints
    out = tmp_path / "checks"
    kept = out / rc.PENDING / "00000000000000000001"  # kept by a watch stopped before it checked it
    kept.mkdir(parents=True)
    shutil.copyfile(stash / "600.pt", kept / "checkpoint.pt")
    shutil.copyfile(finished / "config.json", kept / "config.json")
    (kept / rc.KEPT_RECORD).write_text(json.dumps({"run": str(finished.resolve()), "stamp": [1, 2, 3]}))
    (out / rc.PENDING / ".part-00000000000000000002").mkdir()  # one it was making when stopped

    def no_link(*_args):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_link)  # another file system: the run's checkpoint is copied
    assert rc.watch(finished, [], out, episodes=1, poll=0.1) == [600, 800]
    assert not (out / rc.PENDING).exists()
    assert json.loads((out / "step0000600.json").read_text(encoding="utf-8"))["run_dir"] == str(finished)
    assert (out / rc.WATCH_SETTINGS).is_file()  # written before the first check (with the first one kept)
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert rc.watch(finished, [], out, episodes=1, poll=0.1) == [600, 800]  # nothing new: nothing checked again
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


def test_watch_skips_what_it_cannot_keep_or_read_and_says_so(checkpoints, tmp_path, monkeypatch) -> None:
    import shutil

    import pref_brl.reward_check as rc

    finished, stash = checkpoints
    run = tmp_path / "run"
    shutil.copytree(finished, run, ignore=shutil.ignore_patterns("done.json", "checkpoint*"))
    land(run, stash / "400.pt")
    check = rc.check_reward
    calls = []

    def slow(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:  # with room for one kept checkpoint, 600 is replaced by 800 before there is room
            for step in (600, 800):
                land(run, stash / f"{step}.pt")
                time.sleep(0.5)
            shutil.copyfile(stash / "done.json", run / "done.json")
        return check(*args, **kwargs)

    monkeypatch.setattr(rc, "check_reward", slow)
    monkeypatch.setattr(rc, "MAX_KEPT", 1)
    lines: list[str] = []
    assert rc.watch(run, [], tmp_path / "checks", episodes=1, poll=0.1, progress=lines.append) == [400, 800]
    assert sum("1 checkpoint(s) of" in line and "not kept: 1 were waiting" in line for line in lines) == 1
    # a kept checkpoint that cannot be read (damaged on disk) is passed over, and the watch goes on
    out = tmp_path / "damaged"
    kept = out / rc.PENDING / "00000000000000000001"
    kept.mkdir(parents=True)
    (kept / "checkpoint.pt").write_bytes(b"not a checkpoint")
    shutil.copyfile(finished / "config.json", kept / "config.json")
    (kept / rc.KEPT_RECORD).write_text(json.dumps({"run": str(finished.resolve()), "stamp": [1, 2, 3]}))
    lines.clear()
    assert rc.watch(finished, [], out, episodes=1, poll=0.1, progress=lines.append) == [800]
    assert any(line.startswith(f"passed over a checkpoint of {finished} that cannot be read") for line in lines)
    assert not (out / rc.PENDING).exists()


def test_watch_refuses_another_runs_kept_checkpoint_a_second_watch_and_an_unreadable_against(
        checkpoints, runs, tmp_path, capsys) -> None:
    import fcntl
    import os
    import shutil

    import pref_brl.reward_check as rc

    finished, stash = checkpoints
    out = tmp_path / "checks"
    kept = out / rc.PENDING / "00000000000000000001"  # left by a watch of another run
    kept.mkdir(parents=True)
    (kept / rc.KEPT_RECORD).write_text(json.dumps({"run": "/elsewhere/run", "stamp": [1, 2, 3]}))
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    assert reward_check_main([str(finished), "--watch", str(out), "--episodes", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "kept for another run" in err
    held = tmp_path / "held"
    held.mkdir()
    fd = os.open(held, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another watch writes there
    try:
        assert reward_check_main([str(finished), "--watch", str(held), "--episodes", "1"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and "another watch is writing to" in err
    finally:
        os.close(fd)
    _, sac, _ = runs
    broken = tmp_path / "sac"
    shutil.copytree(sac.run_dir, broken)
    (broken / "checkpoint.pt").write_bytes(b"x")
    (broken / "checkpoint.prev.pt").unlink(missing_ok=True)
    fresh = tmp_path / "fresh"
    assert reward_check_main([str(finished), "--against", str(broken), "--watch", str(fresh), "--episodes", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and f"--against {broken}" in err
    assert not fresh.exists()
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")
                  if not str(p.relative_to(tmp_path)).startswith(("held", "sac"))) == before


def test_watch_waits_for_the_first_feedback_round(tiny, tmp_path) -> None:
    from tests.conftest import advance

    cfg = tiny("early", method="pebble", steps=800)
    trainer = Trainer(cfg, progress=False)
    advance(trainer, lambda: trainer.step == 200)
    trainer.save()  # a checkpoint before the first round (step 300)
    trainer.close()
    lines = []

    class Stop(Exception):
        pass

    def stop(_seconds: float) -> None:
        raise Stop

    with pytest.raises(Stop):
        watch(cfg.run_dir, [], tmp_path / "checks", episodes=1, poll=0.1, progress=lines.append, sleep=stop)
    assert len(lines) == 1 and lines[0].startswith("waiting: ") and "no feedback round yet" in lines[0]
    assert not (tmp_path / "checks").exists()  # nothing written before there is something to write


def test_watch_follows_a_training_run_to_its_end(tiny, tmp_path) -> None:
    import threading

    cfg = tiny("live", method="pebble", steps=1200, checkpoint_frequency=200)
    trainer = Trainer(cfg, progress=False)
    result: list = []
    watcher = threading.Thread(target=lambda: result.append(
        watch(cfg.run_dir, [], tmp_path / "checks", episodes=1, poll=0.1)), daemon=True)
    watcher.start()
    trainer.train()
    watcher.join(timeout=120)
    assert not watcher.is_alive(), "the watch did not end with the run"
    steps = result[0]
    assert steps[-1] == 1200 and all(s >= cfg.feedback_starts and s % 100 == 0 for s in steps)
    assert steps == sorted(set(steps))
    for step in steps:
        assert json.loads((tmp_path / "checks" / f"step{step:07d}.json").read_text(encoding="utf-8"))["step"] == step
    final = (tmp_path / "checks" / "step0001200.json").read_text(encoding="utf-8")
    assert final == check_reward(cfg.run_dir, episodes=1).to_json()


def test_watch_gives_up_on_a_run_that_nothing_trains(runs, tmp_path) -> None:
    import shutil

    from pref_brl.reward_check import IDLE_LOOKS, RewardCheckError

    pebble, _, _ = runs
    stopped = tmp_path / "stopped"
    shutil.copytree(pebble.run_dir, stopped)
    (stopped / "done.json").unlink()  # killed before its end: not finished, and no process holds it
    sleeps = []
    with pytest.raises(RewardCheckError, match="has not finished and no process is training it"):
        watch(stopped, [], tmp_path / "checks", episodes=1, poll=0.1, sleep=sleeps.append)
    assert len(sleeps) == IDLE_LOOKS - 1
    assert (tmp_path / "checks" / "step0000800.json").exists()  # the checkpoint it has was checked


def test_watch_keeps_one_folder_to_one_set_of_settings(runs, tmp_path) -> None:
    from pref_brl.reward_check import RewardCheckError

    pebble, sac, _ = runs
    out = tmp_path / "checks"
    watch(pebble.run_dir, [sac.run_dir], out, episodes=1)
    files = {p.name: p.read_bytes() for p in out.iterdir()}
    assert set(files) == {"step0000800.json", "step0000800.md", "watch.json"}
    with pytest.raises(RewardCheckError, match=r"other settings \(episodes 1 -> 2\)"):
        watch(pebble.run_dir, [sac.run_dir], out, episodes=2)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == files


def test_watch_refuses_what_it_cannot_watch(runs, tmp_path, capsys) -> None:
    import shutil

    pebble, _, _ = runs
    archived = tmp_path / "archived"  # an archived run: finished, no checkpoint
    shutil.copytree(pebble.run_dir, archived, ignore=shutil.ignore_patterns("checkpoint*"))
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "nowhere")  # a broken symbolic link where the folder goes
    before = sorted(p.name for p in tmp_path.iterdir())
    assert reward_check_main([str(archived), "--watch", str(tmp_path / "c")]) == 2
    assert "has finished and has no checkpoint" in capsys.readouterr().err
    assert reward_check_main([pebble.run_dir, "--watch", str(link)]) == 2
    assert "is a broken symbolic link" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_the_reward_and_the_own_agent_come_from_one_checkpoint(runs, monkeypatch) -> None:
    """A checkpoint landing between reading the reward and the agent (a watched run) is read again."""
    from pref_brl import api
    from pref_brl.reward_check import RewardCheckError

    pebble, _, _ = runs
    real, calls = api.load_policy, []

    def racing(run_dir, *args, stale=1, **kw):
        policy = real(run_dir, *args, **kw)
        calls.append(policy.step)
        if len(calls) <= stale:
            policy.step -= 100  # as if read from the checkpoint before the reward's
        return policy

    monkeypatch.setattr(api, "load_policy", racing)
    check = check_reward(pebble.run_dir, episodes=1)
    assert len(calls) == 2 and check.policies[0].step == check.step == 800
    calls.clear()
    monkeypatch.setattr(api, "load_policy", lambda run_dir, *a, **kw: racing(run_dir, *a, stale=9, **kw))
    with pytest.raises(RewardCheckError, match="three times in a row"):
        check_reward(pebble.run_dir, episodes=1)
    assert len(calls) == 3
    calls.clear()  # a Stable-Baselines3 agent's model file has no step: nothing to compare, read once

    def sb3_like(run_dir, *args, **kw):
        policy = real(run_dir, *args, **kw)
        calls.append(policy.step)
        policy.step = None
        return policy

    monkeypatch.setattr(api, "load_policy", sb3_like)
    assert check_reward(pebble.run_dir, episodes=1).policies[0].step is None and len(calls) == 1


@pytest.fixture(scope="module")
def door_run(tmp_path_factory):
    """A tiny pebble run on door-open (100-step episodes), past its feedback rounds."""
    from tests.conftest import tiny_config

    cfg = tiny_config(tmp_path_factory.mktemp("door"), "pebble", method="pebble", env="metaworld_door-open-v3",
                      steps=600)
    Trainer(cfg, progress=False).train()
    return cfg


def test_the_expert_is_meta_worlds_controller_scored_by_the_runs_reward(door_run) -> None:
    # the scripted policy's episodes redone here from Meta-World's own controller: the same reset seeds, its
    # actions clipped, each episode cut end to end into segments and scored by the loaded reward
    import warnings

    from metaworld.policies import SawyerDoorOpenV3Policy

    from pref_brl.reward_check import EXPERT

    check = check_reward(door_run.run_dir, episodes=2, seed=1, expert=True)
    own, expert = check.policies
    assert expert.name == EXPERT and expert.step is None and own.step == check.step == 600
    assert f"| {EXPERT} | - | 2 | 1 |" in to_markdown(check)  # opens the door in both episodes
    reward, controller = pref_brl.load_reward(door_run.run_dir), SawyerDoorOpenV3Policy()

    def act(obs: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the controller warns that its gains saturate the action
            return np.clip(controller.get_action(obs.astype(np.float64)), -1, 1).astype(np.float32)

    env = pref_brl.make_env("metaworld_door-open-v3", 1, max_episode_steps=100)
    true_segments, learned_segments, _ = segments_by_hand(env, act, reward, door_run.segment, seed=1)
    assert check.true_segment_returns[1] == pytest.approx(true_segments, rel=1e-9)
    assert check.learned_segment_returns[1] == pytest.approx(learned_segments, rel=1e-6)
    assert expert.true_return > own.true_return  # an untrained agent does not open the door


def test_expert_is_refused_where_meta_world_has_no_scripted_policy(runs, tmp_path, capsys) -> None:
    pebble, _, _ = runs  # a walker run
    before = sorted(p.name for p in tmp_path.iterdir())
    for extra in (["--out", str(tmp_path / "check.md")], ["--watch", str(tmp_path / "checks")]):
        assert reward_check_main([pebble.run_dir, "--expert", *extra]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: --expert scores Meta-World's scripted policy") and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_watch_records_expert_and_keeps_its_folder_to_it(door_run, tmp_path) -> None:
    from pref_brl.reward_check import EXPERT, RewardCheckError

    out = tmp_path / "checks"
    assert watch(door_run.run_dir, [], out, episodes=1, expert=True) == [600]
    assert json.loads((out / "watch.json").read_text())["expert"] is True
    assert json.loads((out / "step0000600.json").read_text())["policies"][1]["name"] == EXPERT
    with pytest.raises(RewardCheckError, match=r"other settings \(expert True -> False\)"):
        watch(door_run.run_dir, [], out, episodes=1)
    plain = tmp_path / "plain"  # a folder without --expert has no such key, as folders made before it
    watch(door_run.run_dir, [], plain, episodes=1)
    assert "expert" not in json.loads((plain / "watch.json").read_text())
    with pytest.raises(RewardCheckError, match=r"other settings \(expert False -> True\)"):
        watch(door_run.run_dir, [], plain, episodes=1, expert=True)
    for text in ("[1, 2]", '"x"', "[" * 100_000 + "]" * 100_000):  # settings that are not an object
        (plain / "watch.json").write_text(text, encoding="utf-8")
        with pytest.raises(RewardCheckError, match="watch.json is not readable: choose another --watch folder"):
            watch(door_run.run_dir, [], plain, episodes=1)
