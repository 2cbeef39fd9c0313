"""How a preference run's learned reward scores behaviour it may never have seen: its own agent's episodes
beside those of other runs' agents (SAC on the true reward, say), on the same reset seeds.

A run whose reward ranks its own recent segments well (`reward/uniform_accuracy`) can still fail to reward the
behaviour that solves the task, if its agent has not been there: then no query asked about it. Rolling out a
policy that solves the task and scoring its segments with the learned reward tells the two cases apart. Read
the table like this:

- the learned return orders the policies as the true return does, and the cross-pair accuracy is high: the
  reward would lead the agent to the better behaviour, and what is missing is the agent getting there (more
  steps, exploration);
- the better policy's segments are scored no higher than the run's own (cross-pair accuracy near or below 0.5):
  the reward does not extend to that behaviour, and more labels from there (or a different query pool) are
  what is missing;
- the ensemble's members disagree more on the better policy's steps than on the own agent's (the ensemble std):
  the labels say least about that behaviour, and an exploration bonus on reward uncertainty would send the agent
  there; no more disagreement there than at home means a reward confidently wrong about it, which such a bonus
  would not correct.

Segments are the runs' segment length, cut end to end from each episode; the true reward is the environment's.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

OWN = "own agent"
"""the name of the checked run's own policy in the table"""
EXPERT = "Meta-World scripted policy"
"""the name of Meta-World's scripted policy for the task in the table (`expert=True`)"""


class RewardCheckError(ValueError):
    """The check cannot run as asked; the message says why and what to do."""


class RewardNotYetError(RewardCheckError):
    """The run has no learned reward yet (no checkpoint, or none after its first feedback round)."""


class CheckpointChangedError(RewardCheckError):
    """The run wrote a new checkpoint between reading its reward and its agent, every time it was read."""


@dataclass(frozen=True)
class PolicyScore:
    """One policy's episodes under the true and the learned reward."""

    name: str
    episodes: int
    success: float
    """share of episodes with a success (Meta-World; NaN elsewhere)"""
    true_return: float
    """mean true return per episode"""
    learned_return: float
    """mean learned return per episode"""
    segments: int
    cross_accuracy: float
    """(other policies) the share of (own segment, this policy's segment) pairs with different true returns
    whose order the learned returns predict; NaN for the run's own policy"""
    cross_better: float
    """(other policies) the share of those pairs in which this policy's segment has the higher true return"""
    ensemble_std: float = float("nan")
    """the reward ensemble's disagreement on this policy's steps: the mean over its steps of the members'
    (population) standard deviation of the per-step reward (NaN for a reward model without members). Higher
    than on the own agent's steps: the labels say less about this behaviour, and a bonus on reward uncertainty
    (exploration) would lead the agent towards it"""
    step: int | None = None
    """the env step of the checkpoint the policy was loaded from (None: not known, a Stable-Baselines3 model
    file): a run still training is scored as it was then"""
    label_coverage: float = float("nan")
    """the share of this policy's segments whose true return is at most that of the highest labelled segment (the
    run's labels, as of the checked checkpoint): how much of this behaviour's range of true returns the labels
    reached. Well below 1 for a policy that solves the task: the reward has never been told about the better part
    of it, and can rank it right only by extrapolating. NaN without labelled pairs"""


@dataclass(frozen=True)
class RewardCheck:
    run_dir: str
    env: str
    segment: int
    seed: int
    step: int
    """the env step of the run's checkpoint (its reward and its own agent)"""
    labels: int
    """the labels its reward had been trained on by then"""
    policies: list[PolicyScore]
    segment_corr: float
    """Pearson r of learned and true segment returns over every policy's segments"""
    pair_accuracy: float
    """the share of all segment pairs (any two policies, the same one included) with different true returns whose
    order the learned returns predict"""
    true_segment_returns: list[list[float]] = field(repr=False)
    """per policy, its segments' true returns (episode by episode, in order)"""
    learned_segment_returns: list[list[float]] = field(repr=False)
    label_returns: list[list[float]] = field(default_factory=list, repr=False)
    """per labelled pair, in the order labelled: the true returns of its two segments"""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def check_reward(run_dir: str | Path, against: Sequence[str | Path] = (), episodes: int = 5, seed: int = 0,
                 progress: Callable[[str], None] | None = None, expert: bool = False) -> RewardCheck:
    """Roll out the run's own agent, each `against` run's agent A and, with `expert`, Meta-World's scripted policy
    for the task (:func:`pref_brl.scripted_policy`), deterministically, `episodes` episodes each on the same reset
    seeds, and score every segment with the run's learned reward. Only reads the run folders."""
    from pref_brl.api import RewardNotYet, load_policy, load_reward, scripted_policy
    from pref_brl.checkpoint import CheckpointError
    from pref_brl.envs import is_metaworld, make_env

    run_dir = Path(run_dir)
    cfg, others = check_inputs(run_dir, against, episodes, seed, expert)
    try:
        for _ in range(3):  # the reward and the own agent from one checkpoint, even if a new one lands between
            reward = load_reward(run_dir)
            own = load_policy(run_dir)
            if own.step is None or own.step == reward.step:  # None: a Stable-Baselines3 model file, no step
                break
        else:
            raise CheckpointChangedError(f"{run_dir} wrote a new checkpoint between reading its reward and its "
                                         "agent, three times in a row; check again")
        policies = [(OWN, own)] + [(str(path), load_policy(path)) for path, _ in others]
    except RewardNotYet as exc:
        raise RewardNotYetError(str(exc)) from None
    except (ValueError, CheckpointError) as exc:
        raise RewardCheckError(str(exc)) from None
    env = make_env(cfg.env, seed, goal_mode=cfg.goal_mode, max_episode_steps=cfg.max_episode_steps or None)
    if expert:  # it reads the goal from the environment it acts in
        policies.append((EXPERT, scripted_policy(env)))
    true_segments, learned_segments, scores = [], [], []
    try:
        for name, policy in policies:
            true_ret, learned_ret, successes, seg_true, seg_learned, spread = [], [], [], [], [], []
            for i in range(episodes):
                obs_seq, act_seq, rew_seq, success = _rollout(env, policy, seed * 1000 + i)
                learned = reward(obs_seq, act_seq)
                if reward.has_ensemble:
                    spread.append(reward.ensemble_std(obs_seq, act_seq))
                true_ret.append(float(rew_seq.sum()))
                learned_ret.append(float(learned.sum()))
                successes.append(success)
                cut = len(rew_seq) // cfg.segment * cfg.segment
                seg_true += rew_seq[:cut].reshape(-1, cfg.segment).sum(1).tolist()
                seg_learned += learned[:cut].reshape(-1, cfg.segment).sum(1).tolist()
            if progress:
                progress(f"{name}: {episodes} episodes, true return {np.mean(true_ret):.4g}, learned return "
                         f"{np.mean(learned_ret):.4g}")
            true_segments.append(seg_true)
            learned_segments.append(seg_learned)
            scores.append((name, successes, true_ret, learned_ret,
                           float(np.concatenate(spread).mean()) if spread else float("nan"), policy.step))
    finally:
        env.close()
    if not any(true_segments):
        raise RewardCheckError(f"the episodes are shorter than the run's segment ({cfg.segment} steps): nothing to "
                               "score")
    metaworld = is_metaworld(cfg.env)
    rows = []
    for k, (name, successes, true_ret, learned_ret, std, step) in enumerate(scores):
        accuracy, better = (float("nan"), float("nan")) if k == 0 else _cross(
            true_segments[0], learned_segments[0], true_segments[k], learned_segments[k])
        coverage = (float(np.mean(np.asarray(true_segments[k]) <= reward.label_returns.max()))
                    if reward.label_returns.size else float("nan"))
        rows.append(PolicyScore(name, episodes, float(np.mean(successes)) if metaworld else float("nan"),
                                float(np.mean(true_ret)), float(np.mean(learned_ret)), len(true_segments[k]),
                                accuracy, better, std, step, coverage))
    all_true, all_learned = np.concatenate(true_segments), np.concatenate(learned_segments)
    return RewardCheck(str(run_dir), cfg.env, cfg.segment, seed, reward.step, reward.labels, rows,
                       _pearson(all_learned, all_true), _pair_accuracy(all_true, all_learned),
                       [list(x) for x in true_segments], [list(x) for x in learned_segments],
                       reward.label_returns.tolist())


def check_inputs(run_dir: Path, against: Sequence[str | Path], episodes: int, seed: int, expert: bool = False):
    """What can be refused before any checkpoint is read: the counts, each folder's config, one environment, a run
    that has a learned reward at all, and `expert` on an environment without a scripted policy. Returns (the run's
    config, [(path, config) of each `against` run])."""
    from pref_brl.envs import is_metaworld

    if episodes < 1:
        raise RewardCheckError(f"--episodes must be >= 1, got {episodes}")
    top = (2**32 - 1 - episodes) // 1000  # reset seeds 1000·seed + i must be valid seeds
    if not 0 <= seed <= top:
        raise RewardCheckError(f"--seed must be in [0, {top}] (its reset seeds are 1000·seed + 0, 1, ...), got {seed}")
    cfg = _config(run_dir)
    if cfg.method == "sac":
        raise RewardCheckError(f"{run_dir} is a sac run: it learns from the true reward and has no learned reward")
    others = [(Path(p), _config(Path(p))) for p in against]
    for path, other in others:
        if other.env != cfg.env:
            raise RewardCheckError(f"{path} is a {other.env} run and {run_dir} a {cfg.env} run: compare runs of "
                                   "one environment")
    if expert and not is_metaworld(cfg.env):
        raise RewardCheckError(f"--expert scores Meta-World's scripted policy, and {run_dir} is a {cfg.env} run: "
                               "score a trained agent instead (--against a sac run on the true reward)")
    return cfg, others


MAX_KEPT = 10
"""kept checkpoints that may wait to be checked at once (each holds a whole checkpoint on disk)"""
KEPT_RECORD = "kept.json"
"""in a kept checkpoint's folder: the run it was kept from and the file's stamp"""
PENDING = ".pending"
"""the folder in a --watch folder that keeps each checkpoint of the run from when it appears until it is checked"""
KEEP_POLL = 2.0
"""seconds between a --watch's looks for a new checkpoint to keep (or --poll, if shorter)"""
WATCH_SETTINGS = "watch.json"
"""the file in a --watch folder that records whose checks it holds (run, against, episodes, seed)"""
IDLE_LOOKS = 3
"""looks in a row at a run that no process trains and that has not finished before --watch gives up on it"""
POLL_RANGE = (0.1, 86_400.0)
"""--poll's bounds, seconds"""


def watch(run_dir: str | Path, against: Sequence[str | Path], out_dir: str | Path, episodes: int = 5, seed: int = 0,
          poll: float = 60.0, progress: Callable[[str], None] | None = None,
          sleep: Callable[[float], None] = time.sleep, expert: bool = False) -> list[int]:
    """A check of each new checkpoint of a preference run, while it trains, until it has finished: the series
    of how its reward scores the other agents as its labels come in. Each check is written to
    `out_dir`/step<N>.md and .json (N the checkpoint's step); steps already there are not redone, so a watch
    stopped and started again goes on where it was (with the same settings: `out_dir`/watch.json records them,
    from the start; one watch at a time writes to a folder).

    Every checkpoint is kept from the moment it appears (within KEEP_POLL seconds, or `poll` if shorter) until it
    is checked, in `out_dir`/.pending (a hard link to the file the run renames away when it writes the next, or a
    copy where no link can be made): a check slower than the run's checkpoint interval delays the series but skips
    no checkpoint, and the reward and the own agent come from one checkpoint. At most MAX_KEPT wait at once (each
    holds a whole checkpoint on disk); a checkpoint landing beyond that is not kept, and said so. Checkpoints kept
    by a watch that was stopped are checked when it starts again. Checkpoints before the run's first feedback
    round are passed over, and so is an unreadable one (said so). A run that no process trains and that has not
    finished, for IDLE_LOOKS looks in a row, ends the watch with an error (start or resume the run, then watch
    again). A watch that ends with an error before its first check leaves nothing behind. Returns the steps
    checked. Only reads the run folders."""
    from pref_brl.runs import finished_step, folder_holder

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    settings = _check_watch_inputs(run_dir, against, out_dir, episodes, seed, poll, expert)
    done = {int(p.stem[4:]) for p in out_dir.glob("step*.json") if p.stem[4:].isdigit()} if out_dir.is_dir() else set()
    keeper = _Keeper(run_dir, out_dir / PENDING, min(poll, KEEP_POLL))  # reads what a stopped watch kept
    with _WatchFolder(out_dir, settings) as folder:
        idle, told = 0, 0
        try:
            keeper.start()  # its thread first looks after `interval`; the loop's take() keeps the first one now
            while True:
                end = finished_step(run_dir)  # read first: a checkpoint kept after it is the run's last
                keeper.take()
                if end is not None and keeper.seen is None and not keeper.kept():
                    raise RewardCheckError(f"{run_dir} has finished and has no checkpoint (an archived run keeps "
                                           "none): nothing to check")
                while kept := keeper.take() or keeper.kept():  # take: one waiting for room is kept now
                    for snapshot in kept:
                        step = _check_kept(snapshot, run_dir, against, episodes, seed, expert, done, out_dir,
                                           progress)
                        if step is not None:
                            done.add(step)
                            folder.checked = True
                        _remove(snapshot)
                    if progress and keeper.skipped > told:
                        progress(f"{keeper.skipped - told} checkpoint(s) of {run_dir} not kept: {MAX_KEPT} were "
                                 "waiting to be checked already (the checks are slower than the run)")
                    told = keeper.skipped
                if end is not None:  # finished, and its last checkpoint is checked (or has no reward)
                    return sorted(done)
                idle = idle + 1 if folder_holder(run_dir) is None else 0
                if idle >= IDLE_LOOKS:
                    raise RewardCheckError(f"{run_dir} has not finished and no process is training it ({IDLE_LOOKS} "
                                           f"looks, {poll:g} s apart): start or resume it, then watch again (the "
                                           "checks so far are kept)")
                sleep(poll)
        except RewardCheckError:
            keeper.close()
            if not folder.checked:  # an error before the first check: what this watch kept goes too
                for snapshot in keeper.kept_here:
                    _remove(snapshot)
            raise
        finally:
            keeper.close()


def _check_watch_inputs(run_dir: Path, against: Sequence[str | Path], out_dir: Path, episodes: int, seed: int,
                        poll: float, expert: bool) -> dict:
    """What --watch refuses before it writes anything; the settings its folder records."""
    from pref_brl.api import load_policy
    from pref_brl.inputs import folder_problem

    cfg, _ = check_inputs(run_dir, against, episodes, seed, expert)
    if cfg.agent != "sac":
        raise RewardCheckError(f"{run_dir} is an --agent {cfg.agent} run, whose policy is saved only when it ends: "
                               "check it then, without --watch")
    problem = folder_problem(out_dir, "--watch")
    if problem:
        raise RewardCheckError(problem)
    low, high = POLL_RANGE
    if not low <= poll <= high:
        raise RewardCheckError(f"--poll must be in [{low:g}, {high:g}] seconds, got {poll}")
    if (out_dir / PENDING).exists() and not (out_dir / PENDING).is_dir():
        raise RewardCheckError(f"{out_dir / PENDING} is not a folder, and --watch keeps checkpoints there: remove it "
                               "or choose another --watch folder")
    settings = _watch_settings(run_dir, against, episodes, seed, expert)
    _check_watch_settings(out_dir, settings)
    for path in against:  # every check loads them: what cannot be read is refused before anything is written
        try:
            load_policy(path)
        except Exception as exc:  # noqa: BLE001 - ValueError, CheckpointError: named with the folder
            raise RewardCheckError(f"--against {path}: {exc}") from None
    return settings


def _check_kept(snapshot: Path, run_dir: Path, against: Sequence[str | Path], episodes: int, seed: int, expert: bool,
                done: set[int], out_dir: Path, progress: Callable[[str], None] | None) -> int | None:
    """Check one kept checkpoint and write it, named as the run's (unless its step is done already); its step,
    or None when it is from before the run's first feedback round or cannot be read."""
    from pref_brl.checkpoint import CheckpointError

    try:
        step = _kept_step(snapshot)
        if step in done:  # checked before the watch was stopped and started again
            return None
        check = check_reward(snapshot, against, episodes, seed, expert=expert)
    except RewardNotYetError as exc:
        if progress:
            progress(f"waiting: {str(exc).replace(str(snapshot), str(run_dir))}")
        return None
    except CheckpointError as exc:
        if progress:
            progress(f"passed over a checkpoint of {run_dir} that cannot be read ({exc})")
        return None
    except RewardCheckError as exc:
        raise RewardCheckError(str(exc).replace(str(snapshot), str(run_dir))) from None
    check = dataclasses.replace(check, run_dir=str(run_dir))
    name = f"step{check.step:07d}"
    write_check(check, out_dir / f"{name}.md", out_dir / f"{name}.json")
    if progress:
        progress(f"step {check.step} ({check.labels} labels): wrote {out_dir / name}.md and .json")
    return check.step


def _kept_step(snapshot: Path) -> int:
    """The env step of a kept checkpoint (the loaded state is let go at once: a check loads it again)."""
    from pref_brl.checkpoint import CheckpointError, load_checkpoint

    state = load_checkpoint(snapshot)
    if state is None:
        raise CheckpointError(f"{snapshot} holds no checkpoint")
    return int(state.get("step", -1))


def _remove(path: Path) -> None:
    """Remove a kept checkpoint's folder (as far as it can; what is left is tidied or checked later)."""
    shutil.rmtree(path, ignore_errors=True)


class _WatchFolder:
    """The --watch folder while a watch writes to it: made if missing, locked (one watch at a time: an exclusive
    flock on the folder itself, released by the OS if the watch dies), watch.json written from the start. On the
    way out: half-made kept folders and an empty .pending removed; if no check was written (`checked` stays
    False) and nothing is kept, the watch.json it wrote and the folder it made go too."""

    def __init__(self, out_dir: Path, settings: dict):
        self.out_dir, self.settings, self.checked = out_dir, settings, False
        self.made_folder = not out_dir.exists()
        self.wrote_settings = not (out_dir / WATCH_SETTINGS).is_file()
        self.fd: int | None = None

    def __enter__(self) -> _WatchFolder:
        import fcntl

        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(self.out_dir, os.O_RDONLY)
        except OSError as exc:
            raise RewardCheckError(f"cannot write the --watch folder {self.out_dir} ({exc.strerror}); choose a "
                                   "writable one") from None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            self.fd = None
            raise RewardCheckError(f"another watch is writing to {self.out_dir}; wait for it to end or choose "
                                   "another --watch folder") from None
        if self.wrote_settings:
            try:
                _write_atomically(self.out_dir / WATCH_SETTINGS, json.dumps(self.settings, indent=2))
            except OSError as exc:
                self.__exit__(None, None, None)
                raise RewardCheckError(f"cannot write {self.out_dir / WATCH_SETTINGS} ({exc.strerror}); choose a "
                                       "writable --watch folder") from None
        return self

    def __exit__(self, *_exc) -> None:
        pending = self.out_dir / PENDING
        try:
            if pending.is_dir():
                for part in pending.glob(".part-*"):
                    shutil.rmtree(part, ignore_errors=True)
                if not any(pending.iterdir()):
                    pending.rmdir()
            if not self.checked and not pending.exists() and self.wrote_settings:
                (self.out_dir / WATCH_SETTINGS).unlink(missing_ok=True)
            if self.made_folder and not any(self.out_dir.iterdir()):
                self.out_dir.rmdir()
        except OSError:
            pass  # tidying is best effort: what is left does no harm and a later watch tidies it
        finally:
            if self.fd is not None:
                os.close(self.fd)
                self.fd = None


class _Keeper:
    """Keeps each new checkpoint of a run, from the moment it appears, as a folder of its own in `pending`: the
    checkpoint file (hard-linked or copied), a copy of the run's config.json and `kept.json` (the run and the
    file's stamp), named in the order they were kept. A background thread looks every `interval` seconds;
    :meth:`take` looks at once. At most MAX_KEPT are kept at a time."""

    def __init__(self, run_dir: Path, pending: Path, interval: float):
        self.run_dir, self.pending, self.interval = run_dir, pending, interval
        self.seen: tuple[int, int, int] | None = None
        """the stamp of the newest checkpoint kept (by this watch or a stopped one)"""
        self.kept_here: list[Path] = []
        self.skipped = 0
        """checkpoints not kept: MAX_KEPT were waiting while each was the run's newest"""
        self.declined: tuple[int, int, int] | None = None
        self.error: OSError | None = None
        self._lock, self._stop = threading.Lock(), threading.Event()
        self._thread = threading.Thread(target=self._loop, name="checkpoint keeper", daemon=True)
        for snapshot in self.kept():  # kept by a watch that was stopped: this run's, else refused
            record = _read_kept(snapshot)
            if record is None or Path(record["run"]) != run_dir.resolve():
                raise RewardCheckError(f"{snapshot} holds a checkpoint kept for another run or unreadable: remove it "
                                       "or choose another --watch folder")
            self.seen = tuple(record["stamp"])

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.take()
            except RewardCheckError:  # self.error is set: the watch's next take() reports it
                return

    def take(self) -> None:
        """Keep the run's checkpoint if it is new."""
        if self.error is None:
            try:
                self._take()
                return
            except OSError as exc:
                self.error = exc
        raise RewardCheckError(f"cannot keep the checkpoints of {self.run_dir} in {self.pending} "
                               f"({self.error.strerror or self.error}): free disk space or choose another "
                               "--watch folder") from None

    def _take(self) -> None:
        with self._lock:
            stamp = _stamp(self.run_dir)
            if stamp is None or stamp == self.seen:
                return
            if self.declined is not None and self.declined != stamp:  # replaced before there was room for it
                self.skipped += 1
                self.declined = None
            if len(self.kept()) >= MAX_KEPT:
                self.declined = stamp  # kept once there is room, unless a newer one lands first
                return
            self.pending.mkdir(parents=True, exist_ok=True)
            name = f"{time.time_ns():020d}"
            part = self.pending / f".part-{name}"
            part.mkdir()
            try:
                kept = _link_or_copy(self.run_dir / "checkpoint.pt", part / "checkpoint.pt")
                shutil.copyfile(self.run_dir / "config.json", part / "config.json")
            except FileNotFoundError:  # between the run's two renames: look again later
                shutil.rmtree(part, ignore_errors=True)
                return
            except OSError:
                shutil.rmtree(part, ignore_errors=True)
                raise
            if kept == self.seen:
                shutil.rmtree(part, ignore_errors=True)
                return
            (part / KEPT_RECORD).write_text(json.dumps({"run": str(self.run_dir.resolve()), "stamp": kept}),
                                            encoding="utf-8")
            os.replace(part, self.pending / name)
            self.kept_here.append(self.pending / name)
            self.seen = kept

    def kept(self) -> list[Path]:
        """The kept checkpoints not yet checked, oldest first."""
        if not self.pending.is_dir():
            return []
        return sorted(p for p in self.pending.iterdir() if p.is_dir() and not p.name.startswith("."))


def _read_kept(snapshot: Path) -> dict | None:
    try:
        record = json.loads((snapshot / KEPT_RECORD).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return None
    ok = isinstance(record, dict) and isinstance(record.get("run"), str) and isinstance(record.get("stamp"), list)
    return record if ok and len(record["stamp"]) == 3 else None


def _link_or_copy(source: Path, target: Path) -> tuple[int, int, int]:
    """A hard link to `source` at `target` (a copy where links cannot be made: another file system), and the
    stamp of the file kept."""
    try:
        os.link(source, target)
        info = target.stat()
    except FileNotFoundError:
        raise
    except OSError:
        with source.open("rb") as src, target.open("wb") as dst:
            info = os.fstat(src.fileno())
            shutil.copyfileobj(src, dst, 1 << 20)
    return info.st_ino, info.st_mtime_ns, info.st_size


def _write_atomically(path: Path, text: str) -> None:
    """Write beside the file (a hidden name), then rename into place: a reader never sees it half-written."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


def _watch_settings(run_dir: Path, against: Sequence[str | Path], episodes: int, seed: int, expert: bool) -> dict:
    settings = {"run": str(run_dir), "against": [str(p) for p in against], "episodes": episodes, "seed": seed}
    if expert:  # absent when off, so that folders written before --expert existed go on as they were
        settings["expert"] = True
    return settings


def _check_watch_settings(out_dir: Path, settings: dict) -> None:
    """A --watch folder holds the checks of one run with one set of settings (a folder written before --expert
    existed has no `expert`: off)."""
    path = out_dir / WATCH_SETTINGS
    if not path.is_file():
        return
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        old = None
    if not isinstance(old, dict):
        raise RewardCheckError(f"{path} is not readable: choose another --watch folder")
    old, new = {"expert": False, **old}, {"expert": False, **settings}
    if old != new:
        keys = list(new) + [k for k in old if k not in new]
        changed = ", ".join(f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k))
        raise RewardCheckError(f"--watch {out_dir} holds checks made with other settings ({changed}): choose another "
                               "folder, or the same settings to go on")


def write_check(check: RewardCheck, table: Path, numbers: Path) -> None:
    """The table (markdown) and the numbers (JSON), each written whole or not at all."""
    _write_atomically(table, to_markdown(check))
    _write_atomically(numbers, check.to_json())


def _stamp(run_dir: Path) -> tuple[int, int, int] | None:
    """(inode, modification time, size) of the run's newest checkpoint file (a checkpoint is written beside it and
    renamed into place: a new file each time); None before it has one."""
    try:
        info = (run_dir / "checkpoint.pt").stat()
    except OSError:
        return None
    return info.st_ino, info.st_mtime_ns, info.st_size


def _config(run_dir: Path):
    from pref_brl.api import run_config

    if not run_dir.is_dir():
        raise RewardCheckError(f"{run_dir} is not a folder: name a run folder")
    try:
        return run_config(run_dir)
    except ValueError as exc:
        raise RewardCheckError(str(exc)) from None


def _rollout(env, policy, reset_seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    obs, _ = env.reset(seed=reset_seed)
    observations, actions, rewards, success, done = [], [], [], 0.0, False
    while not done:
        action, _ = policy.predict(obs, deterministic=True)
        observations.append(np.asarray(obs, dtype=np.float32))
        actions.append(np.asarray(action, dtype=np.float32))
        obs, r, terminated, truncated, info = env.step(action)
        rewards.append(float(r))
        success = max(success, float(info.get("success", 0.0)))
        done = terminated or truncated
    return np.stack(observations), np.stack(actions), np.asarray(rewards), success


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def _pair_accuracy(true: np.ndarray, learned: np.ndarray) -> float:
    i, j = np.triu_indices(len(true), k=1)
    differ = true[i] != true[j]
    if not differ.any():
        return float("nan")
    agree = (learned[i] > learned[j]) == (true[i] > true[j])
    return float(agree[differ].mean())


def _cross(own_true, own_learned, other_true, other_learned) -> tuple[float, float]:
    """(the share of (own, other) segment pairs with different true returns that the learned returns order as the
    true ones, the share of those pairs in which the other segment is truly better)."""
    a, b = np.asarray(own_true)[:, None], np.asarray(own_learned)[:, None]
    c, d = np.asarray(other_true)[None, :], np.asarray(other_learned)[None, :]
    differ = a != c
    if not differ.any():
        return float("nan"), float("nan")
    agree = (d > b) == (c > a)
    return float(agree[differ].mean()), float((c > a)[differ].mean())


def to_markdown(check: RewardCheck) -> str:
    """The table and the two pooled numbers."""
    lines = [f"Learned reward of `{check.run_dir}` at step {check.step} ({check.labels} labels; {check.env}, "
             f"{check.segment}-step segments, reset seeds {check.seed * 1000}…"
             f"{check.seed * 1000 + check.policies[0].episodes - 1}, deterministic actions)",
             "",
             "| policy | at step | episodes | success | true return | learned return | ensemble std | segments | "
             "cross-pair accuracy | its segment truly better | label coverage |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for p in check.policies:
        step = "-" if p.step is None else p.step
        lines.append(f"| {p.name} | {step} | {p.episodes} | {_num(p.success)} | {_num(p.true_return)} | "
                     f"{_num(p.learned_return)} | {_num(p.ensemble_std)} | {p.segments} | {_num(p.cross_accuracy)} | "
                     f"{_num(p.cross_better)} | {_num(p.label_coverage)} |")
    lines += ["", f"Segment returns, learned against true, over every policy's segments: Pearson r "
                  f"{_num(check.segment_corr)}; pair accuracy {_num(check.pair_accuracy)}.", _labels_line(check),
              "Cross-pair accuracy: pairs of one segment of the own agent and one of that policy whose true returns "
              "differ, ordered by the learned reward as by the true one. Ensemble std: the reward members' "
              "disagreement per step, mean over the policy's steps. Label coverage: the share of the policy's "
              "segments whose true return is at most the highest labelled segment's."]
    return "\n".join(lines) + "\n"


def _labels_line(check: RewardCheck) -> str:
    """The labelled segments' true returns: how high the labels reached, and when."""
    returns = np.asarray(check.label_returns, dtype=float).reshape(-1, 2)
    if not len(returns):
        return "Labelled segments: none."
    best = returns.max(axis=1)
    first = int(np.argmax(best)) + 1  # argmax: the first pair holding the highest
    return (f"Labelled segments ({len(returns)} pairs): true return median {_num(float(np.median(returns)))}, highest "
            f"{_num(float(best.max()))} (first in pair {first}).")


def _num(x: float) -> str:
    return "-" if x != x else f"{x:.3g}"
