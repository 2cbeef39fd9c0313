"""`pref-brl-archive`: keep a study's finished runs, without their checkpoints, in a folder you can commit.

Copies each finished run (one with done.json) under the given study or run folders into `--out`, laid out as
in the study folder: config.json, versions.json, scalars.jsonl, done.json, config.history.json (if any) and
the TensorBoard events in tb/. Checkpoints, logs and labelling databases stay behind, so a 100k-step walker
run keeps about 1 MB. `pref-brl-plot <out>` re-plots the archived runs and `tensorboard --logdir <out>` shows
their curves. No path of the training machine is kept: in config.json and config.history.json, and in the
config text and hyperparameters the TensorBoard events logged, the run folder becomes the run's path inside the
archive and a preference file (--preferences) its file name; every other event is copied byte for byte. A run
whose files cannot be cleaned (damaged JSON or events, a link in tb/) is refused, and a run's archived copy is
replaced only by a complete new one. Re-running it refreshes runs that are archived already and adds newly
finished ones; unfinished runs are listed and left out.

Examples:
  pref-brl-archive runs/walker-v2 --out docs/results/walker-v2
  pref-brl-archive runs/walker-v2/walker_walk/pebble --out docs/results/walker-v2/walker_walk/pebble
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import tyro

from pref_brl.cli import parse
from pref_brl.logger import PATH_KEYS, archived_config, archived_value, copy_events
from pref_brl.results import ResultsError, find_runs
from pref_brl.runs import CONFIG_FILE, DONE_FILE, HISTORY_FILE, SCALARS_FILE, VERSIONS_FILE

KEPT_FILES = (CONFIG_FILE, VERSIONS_FILE, SCALARS_FILE, DONE_FILE, HISTORY_FILE)
"""The small files of a run folder that an archive keeps (with the TensorBoard folder tb/); the other run files
(checkpoints, logs, labelling databases) stay behind."""
EVENTS_FOLDER = "tb"


@dataclass(frozen=True)
class ArchiveArgs:
    """Which finished runs to archive, and where."""

    folders: tyro.conf.Positional[tuple[str, ...]]
    """study folders or run folders (searched recursively for run folders)"""
    out: str
    """archive folder; each run lands at its path relative to the folder it was found under"""


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ResultsError(f"{path} is not readable JSON; restore it, or leave the run out of the archive") from None


def _machine_paths(configs: list[dict], run: Path, label: str) -> dict[str, str]:
    """Each path of the training machine the run's configs hold, and what the archive keeps of it."""
    found = {str(run): label, str(run.resolve()): label}
    for config in configs:
        for key in PATH_KEYS:
            value = config.get(key)
            if isinstance(value, str) and value:
                found[value] = archived_value(key, value, label)
    return {old: new for old, new in found.items() if old != new and (os.sep in old or "/" in old)}


def archive_run(run: Path, dest: Path, label: str) -> None:
    """Copy one finished run's small files and TensorBoard events to `dest`, replacing what was there. The
    paths of the training machine in its configs (config.json, config.history.json, the events' config)
    become `archived_value`'s: the run folder becomes `label`, the run's path inside the archive.

    Built beside `dest` and moved into place with config.json written last, so that an archive killed
    midway holds the run as before or not at all, never half of it (a folder without config.json is no run).
    A path of the training machine left anywhere in the copy is a ResultsError, and nothing is replaced."""
    dest = dest.absolute()  # `--out .` too: the staging folder is named after it
    config = _read_json(run / CONFIG_FILE)
    if not isinstance(config, dict):
        raise ResultsError(f"{run / CONFIG_FILE} is not a JSON object; restore it, or leave the run out")
    history = _read_json(run / HISTORY_FILE) if (run / HISTORY_FILE).is_file() else None
    entries = [e for e in history if isinstance(e, dict)] if isinstance(history, list) else []
    paths = _machine_paths([config, *(e["config"] for e in entries if isinstance(e.get("config"), dict))], run,
                           label)
    staging = dest.with_name(f".{dest.name}.archiving")
    shutil.rmtree(staging, ignore_errors=True)  # left by an archive that was killed
    staging.mkdir(parents=True)
    try:
        for name in KEPT_FILES:
            if name not in (CONFIG_FILE, HISTORY_FILE) and (run / name).is_file():
                shutil.copyfile(run / name, staging / name)
        if history is not None:
            for entry in entries:  # edited in place: `history` is written with them
                if isinstance(entry.get("config"), dict):
                    entry["config"] = archived_config(entry["config"], label)
                if isinstance(entry.get("changes"), list):
                    entry["changes"] = [_replace_all(c, paths) if isinstance(c, str) else c for c in entry["changes"]]
            (staging / HISTORY_FILE).write_text(json.dumps(history, indent=2), encoding="utf-8")
        if (run / EVENTS_FOLDER).is_dir():
            try:
                copy_events(run / EVENTS_FOLDER, staging / EVENTS_FOLDER, label)
            except ValueError as exc:
                raise ResultsError(str(exc)) from None
        config_text = json.dumps(archived_config(config, label), indent=2, sort_keys=True)
        texts = {CONFIG_FILE: config_text.encode()}
        texts.update({f.relative_to(staging).as_posix(): f.read_bytes() for f in staging.rglob("*") if f.is_file()})
        left = [(old, name) for name, data in texts.items() for old in paths if old.encode() in data]
        if left:
            raise ResultsError(f"{run} is not archived: its {left[0][1]} holds {left[0][0]}, a path of the training "
                               "machine, where the archive cannot replace it (damaged events?)")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(dest, ignore_errors=True)
    staging.rename(dest)
    (dest / CONFIG_FILE).write_text(config_text, encoding="utf-8")


def _replace_all(text: str, paths: dict[str, str]) -> str:
    for old in sorted(paths, key=len, reverse=True):  # a longer path first: it may hold a shorter one
        text = text.replace(old, paths[old])
    return text


def plan(folders: tuple[str, ...], out: Path) -> tuple[list[tuple[Path, Path, str]], list[Path]]:
    """(finished run, its archive folder, its path inside the archive) and the unfinished runs, checked before
    anything is copied."""
    finished, unfinished = [], []
    for folder in map(Path, folders):
        if folder.is_dir() and (out.resolve() == folder.resolve() or folder.resolve() in out.resolve().parents):
            raise ResultsError(f"--out {out} is inside {folder}, which is archived: the archive would be found as "
                               "runs of the study; choose a folder outside it")
        for run in find_runs([folder]):
            if not (run / DONE_FILE).exists():
                unfinished.append(run)
                continue
            relative = run.relative_to(folder)
            finished.append((run, out / relative, relative.as_posix() if relative.parts else run.name))
    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ResultsError(f"cannot write the archive {out}: {existing} is not a writable folder; choose another "
                           "--out")
    for run, dest, _ in finished:
        if dest.resolve() == run.resolve():
            raise ResultsError(f"--out {out} would archive {run} onto itself; choose a folder outside the study")
        if dest.exists() and not dest.is_dir():
            raise ResultsError(f"{dest} exists and is not a folder; remove it or choose another --out")
        others = sorted(p.name for p in dest.iterdir() if p.name not in (*KEPT_FILES, EVENTS_FOLDER)) \
            if dest.is_dir() else []
        if others:  # the run's copy replaces the whole folder: it may hold nothing else
            raise ResultsError(f"{dest} holds more than an archived run ({', '.join(others[:3])}"
                               f"{', ...' if len(others) > 3 else ''}), and archiving {run} replaces that folder; "
                               "choose an empty or new --out")
    return finished, unfinished


def main(argv: list[str] | None = None) -> int:
    args = parse(ArchiveArgs, "pref-brl-archive", args=sys.argv[1:] if argv is None else argv, description=__doc__)
    out = Path(args.out)
    try:
        if not args.out.strip():
            raise ResultsError("--out is empty; name the archive folder")
        finished, unfinished = plan(args.folders, out)
        for run, dest, label in finished:
            archive_run(run, dest, label)
    except (ResultsError, OSError) as exc:
        reason = f"{exc.filename}: {exc.strerror}" if isinstance(exc, OSError) and exc.strerror else exc
        print(f"error: {reason}", file=sys.stderr)
        return 2
    for run in unfinished:
        print(f"not finished, left out: {run}")
    print(f"archived {len(finished)} finished run(s) into {out} ({len(unfinished)} unfinished left out)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
