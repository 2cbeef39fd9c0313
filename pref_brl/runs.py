"""Run folders: creation, refusal to overwrite, config comparison on resume, and provenance files."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Protocol

from pref_brl.config import IGNORED_FIELDS, ConfigError, TrainConfig

CONFIG_FILE = "config.json"
DONE_FILE = "done.json"
VERSIONS_FILE = "versions.json"
HISTORY_FILE = "config.history.json"
SCALARS_FILE = "scalars.jsonl"
SB3_MODEL_FILE = "sb3_model.zip"
"""the Stable-Baselines3 model a run with an sb3-* agent saves when it ends"""
TRACKED_PACKAGES = ("torch", "numpy", "gymnasium", "mujoco", "dm-control", "metaworld", "tyro", "pref-brl")


class RunFolderError(ConfigError):
    """A run folder cannot be used as asked; the message says why and what to do (a ConfigError: the library's
    callers catch one ValueError subclass for every input it refuses)."""


def default_run_dir(cfg: TrainConfig) -> Path:
    return Path("runs") / cfg.env / cfg.method / f"seed{cfg.seed}"


def run_dir_of(cfg: TrainConfig) -> Path:
    """The run's folder: --run-dir, or the default one."""
    return Path(cfg.run_dir) if cfg.run_dir else default_run_dir(cfg)


def changed_fields(old: dict, new: dict) -> list[str]:
    """The fields :func:`config_differences` reports, by name."""
    return [key for key, _, _ in _differing(old, new)]


def _done_record(run_dir: Path) -> dict:
    """A finished run's done.json; empty when there is none or it cannot be read as an object (a done.json
    written by hand, or cut short by a crash after the run's last checkpoint)."""
    try:
        record = json.loads((run_dir / DONE_FILE).read_text("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def finished_step(run_dir: Path) -> int | None:
    """The step a finished run ended at, from its done.json; None when there is none or it does not say."""
    step = _done_record(run_dir).get("step")
    return step if isinstance(step, int) and not isinstance(step, bool) else None


def ended_mid_episode(run_dir: Path) -> bool:
    """Whether a finished run's last step fell inside an episode (its done.json says so)."""
    return _done_record(run_dir).get("mid_episode") is True


def is_finished(run_dir: Path, steps: int) -> bool:
    """Whether the run in `run_dir` has run `steps` env steps: its done.json says so, or does not say how far
    it got (then the run counts as finished, as it always did)."""
    if not (run_dir / DONE_FILE).exists():
        return False
    done = finished_step(run_dir)
    return done is None or done >= steps


def check_continuation(run_dir: Path, steps: int, changed: bool) -> None:
    """Refuse what cannot apply to a finished run: a changed config that leaves nothing to run (it would only
    rewrite the config of a finished run), and continuing one to a larger `steps` without a checkpoint to
    continue from (an archived copy). Whether the trainer can grow the run's replay buffer is the caller's
    check (a changed `steps` of a Stable-Baselines3 run is refused before this)."""
    from pref_brl.checkpoint import LATEST, PREVIOUS

    if not (run_dir / DONE_FILE).exists():
        return
    done = finished_step(run_dir)
    if done is None:
        if changed:
            raise RunFolderError(f"{run_dir / DONE_FILE} does not say at which step the run finished, so a changed "
                                 "config cannot continue it; use another --run-dir")
        return
    if done >= steps:
        if changed:
            raise RunFolderError(f"{run_dir} holds a finished run (step {done}); a changed config applies only to "
                                 f"steps still to run: give a --steps above {done} to continue it, or use another "
                                 "--run-dir")
        return
    if not ((run_dir / LATEST).exists() or (run_dir / PREVIOUS).exists()):
        raise RunFolderError(f"{run_dir} holds a run finished at step {done} but no checkpoint to continue it from "
                             "(an archived copy keeps no checkpoint); continue the original run folder, or train "
                             "a new run with the larger --steps")


def config_differences(old: dict, new: dict) -> list[str]:
    """Human-readable list of fields whose values differ between two config dicts.

    A field missing from `old` (a run started before the field existed) counts as its default value, and
    fields that the run's method does not read are not compared, so a newer version resumes an older run
    folder as long as nothing the run uses has changed. `run_dir` is where the run is, not what it is: a
    moved or copied run folder resumes.
    """
    return [f"{k}: {a!r} -> {b!r}" for k, a, b in _differing(old, new)]


def _differing(old: dict, new: dict) -> list[tuple[str, object, object]]:
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    ignored = IGNORED_FIELDS.get(new.get("method", old.get("method")), frozenset()) | {"run_dir"}
    old = {k: old.get(k, defaults.get(k)) for k in set(old) | set(new)}
    keys = sorted(k for k in set(old) | set(new) if k not in ignored)
    return [(k, old.get(k), new.get(k)) for k in keys if old.get(k) != new.get(k)]


NOT_RUN_STATE = frozenset({"train.log", "lock"})
"""Files a folder may hold before its run is written: a sweep's log of the run, the run's lock."""


def prepare_run_dir(cfg: TrainConfig, allow_config_change: bool = False,
                    can_extend: bool = True) -> tuple[Path, bool]:
    """Check that the run folder is new, empty, or holds this config's run (then the run resumes), and create it.

    A finished run continues to a larger `steps` (:func:`check_continuation`); `can_extend` False refuses any
    change of `steps`, for trainers that cannot grow a run's replay buffer.

    Returns (run_dir, resuming). Writes nothing into the folder: the caller takes its lock (`RunLock`), then
    `write_run_files` writes the config, and records a resume (`record_resume`) once the checkpoint has loaded.
    """
    run_dir = run_dir_of(cfg)
    config_path = run_dir / CONFIG_FILE
    if config_path.exists():
        old, new = read_config(config_path), json.loads(cfg.to_json())
        diffs, fields = config_differences(old, new), changed_fields(old, new)
        if diffs and not allow_config_change:
            done = finished_step(run_dir)
            more = ", or pass --allow-config-change to resume anyway"
            if fields == ["steps"] and done is not None and cfg.steps > done:
                more = ", or pass --allow-config-change to continue it to the new --steps"
            raise RunFolderError(f"{run_dir} holds a run with a different config ({'; '.join(diffs)}); "
                                 f"use another --run-dir{more}")
        if "steps" in fields and not can_extend:
            raise RunFolderError(f"{run_dir} holds a run of --steps {old.get('steps')}; changing --steps works for "
                                 "--agent sac only (a Stable-Baselines3 agent keeps the replay buffer size it was "
                                 "made with): train a new run with the new --steps")
        check_continuation(run_dir, cfg.steps, changed=bool(diffs))
        return run_dir, True
    if run_dir.exists() and any(p.name not in NOT_RUN_STATE for p in run_dir.iterdir()):
        raise RunFolderError(f"{run_dir} exists and is not a pref-brl run folder (no {CONFIG_FILE}); "
                             "choose an empty or new --run-dir")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunFolderError(f"cannot create the run folder {run_dir} ({exc.strerror}); choose a writable "
                             "--run-dir") from None
    return run_dir, False


def write_run_files(cfg: TrainConfig, run_dir: Path, resuming: bool) -> None:
    """Under the folder's lock: a new run's config.json and versions.json; a resumed run's changed config (the
    old one kept in config.history.json), if --allow-config-change let it differ."""
    config_path = run_dir / CONFIG_FILE
    if resuming:
        old = read_config(config_path)
        diffs = config_differences(old, json.loads(cfg.to_json()))
        if diffs:
            record_config_change(run_dir, old, diffs)
            _write_text(config_path, cfg.to_json())
        return
    _write_text(config_path, cfg.to_json())
    _write_json(run_dir / VERSIONS_FILE, [stamped(provenance())])


def read_config(path: Path) -> dict:
    """A run folder's config.json as a dict; a RunFolderError when it is unreadable, not JSON or not an object."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else f"not valid JSON: {exc}"
        raise RunFolderError(f"{path} cannot be read ({reason}); it is not a usable pref-brl run folder: "
                             "choose another --run-dir, or restore or delete the folder") from None
    if not isinstance(value, dict):
        raise RunFolderError(f"{path} holds a JSON {type(value).__name__}, not a config object; it is not a "
                             "usable pref-brl run folder: choose another --run-dir, or restore or delete the folder")
    return value


def stamped(info: dict[str, str]) -> dict[str, str]:
    """`info` with the current local time first."""
    return {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **info}


def _read_list(path: Path) -> list | None:
    """A JSON list file's entries ([] if absent; an old single-object file as one entry); None if unreadable."""
    if not path.exists():
        return []
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return value if isinstance(value, list) else [value] if isinstance(value, dict) else None


def record_resume(run_dir: Path) -> None:
    """Append this start's provenance to versions.json; one warning line if the versions differ from the first."""
    path = run_dir / VERSIONS_FILE
    entries = _read_list(path)
    if entries is None:
        print(f"warning: {path} is unreadable; this resume's package versions are not recorded", file=sys.stderr)
        return
    current = stamped(provenance())
    if entries and isinstance(entries[0], dict):
        changed = version_changes(entries[0], current)
        if changed:
            print(f"warning: package versions differ from the run's first start ({'; '.join(changed)}); "
                  f"see {path}", file=sys.stderr)
    _write_json(path, [*entries, current])


def version_changes(first: dict, now: dict) -> list[str]:
    """`name: old -> new` for Python and each tracked package whose version changed."""
    keys = ("python", *TRACKED_PACKAGES)
    return [f"{k} {first.get(k)} -> {now.get(k)}" for k in keys if k in first and first.get(k) != now.get(k)]


def record_config_change(run_dir: Path, old: dict, diffs: list[str]) -> None:
    """Keep the config that --allow-config-change replaces: appended to config.history.json."""
    path = run_dir / HISTORY_FILE
    entries = _read_list(path)
    if entries is None:
        raise RunFolderError(f"{path} is unreadable; restore or move it before changing this run's config")
    _write_json(path, [*entries, {**stamped({}), "changes": diffs, "config": old}])


def _write_json(path: Path, value: object) -> None:
    """Replace `path` atomically with `value` as JSON (a failed write leaves the old file)."""
    _write_text(path, json.dumps(value, indent=2))


def _write_text(path: Path, text: str) -> None:
    """Replace `path` atomically with `text` (a failed write leaves the old file)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise RunFolderError(f"cannot write {path} ({exc.strerror}); free disk space or fix permissions") from None


class RunLock:
    """An exclusive advisory lock on a run folder (one writer per folder); released by the OS on death."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / "lock"
        try:
            self.file = self.path.open("a+", encoding="utf-8")
        except OSError as exc:
            raise RunFolderError(f"cannot lock the run folder {run_dir} ({exc.strerror}); choose a writable "
                                 "--run-dir") from None
        try:
            _flock_exclusive(self.file)
        except BlockingIOError:
            self.file.seek(0)
            owner = self.file.read().strip() or "unknown"
            self.file.close()
            raise RunFolderError(f"{run_dir} is in use by another process (pid {owner}); wait for it to end "
                                 "or choose another --run-dir") from None
        self.file.seek(0)
        self.file.truncate()
        self.file.write(str(os.getpid()))
        self.file.flush()

    def release(self) -> None:
        if not self.file.closed:
            self.file.close()


def _flock_exclusive(file, tries: int = 5, wait: float = 0.05) -> None:
    """flock(LOCK_EX) without blocking, tried a few times: `folder_holder` (a sweep's --dry-run, a validation)
    takes a shared lock for an instant to see whether a run is held; a run starting in that instant waits it
    out instead of calling its own folder busy. BlockingIOError if it is still held."""
    import fcntl

    for attempt in range(tries):
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if attempt + 1 == tries:
                raise
            time.sleep(wait)


def folder_holder(run_dir: Path) -> str | None:
    """The pid (as written in its lock file) of the process that holds `run_dir`'s lock; None if free."""
    import fcntl

    path = run_dir / "lock"
    if not path.exists():
        return None
    with path.open("r", encoding="utf-8") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return fh.read().strip() or "unknown"
    return None


def provenance() -> dict[str, str]:
    """Package versions, Python, platform and the git revision of the code that runs."""
    info = {"python": platform.python_version(), "platform": platform.platform()}
    for name in TRACKED_PACKAGES:
        try:
            info[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            info[name] = "not installed"
    info["git_revision"] = git_revision()
    return info


def git_revision() -> str:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=here, capture_output=True, text=True,
                               timeout=5)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if out.returncode != 0:
        return "unknown"
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def config_from_dict(values: dict) -> TrainConfig:
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in values.items() if k in names})


class Stoppable(Protocol):
    """A training run that a signal can ask to stop: it checks `interrupted` at every episode boundary."""

    interrupted: str


@contextmanager
def stop_on_signals(run: Stoppable) -> Iterator[None]:
    """While training, SIGTERM/SIGINT ask for a checkpoint and a clean stop at the next episode boundary (both
    trainers use it); a second signal gets the previous handlers, so it stops at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}

    def handler(signum: int, _frame) -> None:
        run.interrupted = signal.Signals(signum).name
        print(f"{run.interrupted}: saving a checkpoint at the end of this episode "
              "(send it again to stop at once)", flush=True)
        for s, h in previous.items():
            signal.signal(s, h)

    for s in previous:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
