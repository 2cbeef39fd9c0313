"""`pref-brl-archive`: keep a study's finished runs, without their checkpoints, in a folder you can commit.

Copies each finished run (one with done.json) under the given study or run folders into `--out`, laid out as
in the study folder: config.json, versions.json, scalars.jsonl, done.json, config.history.json (if any) and
the TensorBoard events in tb/. Checkpoints, logs and labelling databases stay behind, so a 100k-step walker
run keeps about 1 MB. `pref-brl-plot <out>` re-plots the archived runs and `tensorboard --logdir <out>` shows
their curves. No path of the training machine is kept: the run folder in config.json and config.history.json,
and in the config text and hyperparameters the TensorBoard events logged, becomes the run's path inside the
archive (every other event is copied byte for byte). Re-running it refreshes runs that are archived already and
adds newly finished ones; unfinished runs are listed and left out.

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
from pref_brl.logger import RUN_DIR_KEY, copy_events
from pref_brl.results import ResultsError, find_runs
from pref_brl.runs import CONFIG_FILE, DONE_FILE, HISTORY_FILE, SCALARS_FILE, VERSIONS_FILE

KEPT_FILES = (CONFIG_FILE, VERSIONS_FILE, SCALARS_FILE, DONE_FILE, HISTORY_FILE)
"""The small files of a run folder that an archive keeps (with the TensorBoard folder tb/)."""
EVENTS_FOLDER = "tb"


@dataclass(frozen=True)
class ArchiveArgs:
    """Which finished runs to archive, and where."""

    folders: tyro.conf.Positional[tuple[str, ...]]
    """study folders or run folders (searched recursively for run folders)"""
    out: str
    """archive folder; each run lands at its path relative to the folder it was found under"""


def archive_run(run: Path, dest: Path, label: str) -> None:
    """Copy one finished run's small files and TensorBoard events to `dest` (replacing what was there); the run
    folder its configs name (config.json, config.history.json and the events' config) becomes `label`, the
    run's path inside the archive."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in KEPT_FILES:
        if (run / name).is_file():
            shutil.copyfile(run / name, dest / name)
    config = json.loads((dest / CONFIG_FILE).read_text(encoding="utf-8"))
    if isinstance(config, dict) and RUN_DIR_KEY in config:
        config[RUN_DIR_KEY] = label
    (dest / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True), encoding="utf-8")
    if (dest / HISTORY_FILE).is_file():  # the configs that changes replaced name the run folder as well
        history = json.loads((dest / HISTORY_FILE).read_text(encoding="utf-8"))
        for entry in history if isinstance(history, list) else ():
            if isinstance(entry, dict) and isinstance(entry.get("config"), dict) and RUN_DIR_KEY in entry["config"]:
                entry["config"][RUN_DIR_KEY] = label
        (dest / HISTORY_FILE).write_text(json.dumps(history, indent=2), encoding="utf-8")
    events = run / EVENTS_FOLDER
    if events.is_dir():
        shutil.rmtree(dest / EVENTS_FOLDER, ignore_errors=True)
        copy_events(events, dest / EVENTS_FOLDER, label)


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
    return finished, unfinished


def main(argv: list[str] | None = None) -> int:
    args = parse(ArchiveArgs, "pref-brl-archive", args=sys.argv[1:] if argv is None else argv, description=__doc__)
    out = Path(args.out)
    try:
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
