"""Atomic checkpoints: write to a temporary file, fsync, rename, fsync the folder; keep the previous one as
a fallback. Checkpoints are data, not code: they hold tensors, numbers, strings and containers only, and are
read with ``torch.load(weights_only=True)``, so a crafted file cannot run code when a run resumes."""

from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path
from typing import Any

import torch

LATEST = "checkpoint.pt"
PREVIOUS = "checkpoint.prev.pt"


class CheckpointError(RuntimeError):
    """A checkpoint cannot be written or read; the message says why and what to do."""


def save_checkpoint(run_dir: Path, state: dict[str, Any]) -> Path:
    """Write `state` as the newest checkpoint; the former newest becomes the fallback.

    A failed write (a full disk, say) removes its temporary file, keeps the existing checkpoints as they were
    and raises CheckpointError.
    """
    path, prev = run_dir / LATEST, run_dir / PREVIOUS
    tmp = run_dir / (LATEST + ".tmp")
    try:
        with tmp.open("wb") as fh:
            torch.save(state, fh)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(f"cannot write a checkpoint in {run_dir} ({exc.strerror or exc}); the previous "
                              "checkpoints are kept: free disk space and run the same command again to resume "
                              "from them") from None
    if path.exists():
        os.replace(path, prev)
    os.replace(tmp, path)
    fsync_folder(run_dir)
    return path


def fsync_folder(folder: Path) -> None:
    """Make the renames inside `folder` durable (a no-op where folders cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


RESUME_REMEDY = "delete the folder or pick another --run-dir"
"""What a run that cannot resume should do: the `remedy` of the trainers' `load_checkpoint`."""


def load_checkpoint(run_dir: Path, remedy: str = "") -> dict[str, Any] | None:
    """The newest readable checkpoint in `run_dir`, falling back to the previous one; None if none.

    CheckpointError when checkpoints exist but none can be read (the files are left as they are); its message
    ends with `remedy`, what the caller's user can do about it, when one is given."""
    candidates = [p for p in (run_dir / LATEST, run_dir / PREVIOUS) if p.exists()]
    problems = []
    for i, path in enumerate(candidates):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable or unsafe file falls back to the previous one
            unsafe = isinstance(exc, pickle.UnpicklingError)
            problems.append(f"{path.name} is {'not plain data (refused, not executed)' if unsafe else 'unreadable'}"
                            f" ({exc.__class__.__name__})")
            if i + 1 < len(candidates):
                warnings.warn(f"checkpoint {path}: {problems[-1].split(' ', 2)[2]}; falling back to the previous "
                              "one", stacklevel=2)
            continue
        if i > 0:
            warnings.warn(f"reading the previous checkpoint {path}", stacklevel=2)
        return state
    if candidates:
        raise CheckpointError(f"no readable checkpoint in {run_dir} ({'; '.join(problems)})"
                              + (f": {remedy}" if remedy else ""))
    return None
