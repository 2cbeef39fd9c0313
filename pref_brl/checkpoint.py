"""Atomic checkpoints: write to a temporary file, fsync, rename; keep the previous one as a fallback."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import torch

LATEST = "checkpoint.pt"
PREVIOUS = "checkpoint.prev.pt"


def save_checkpoint(run_dir: Path, state: dict[str, Any]) -> Path:
    """Write `state` as the newest checkpoint; the former newest becomes the fallback."""
    path, prev = run_dir / LATEST, run_dir / PREVIOUS
    tmp = run_dir / (LATEST + ".tmp")
    with tmp.open("wb") as fh:
        torch.save(state, fh)
        fh.flush()
        os.fsync(fh.fileno())
    if path.exists():
        os.replace(path, prev)
    os.replace(tmp, path)
    return path


def load_checkpoint(run_dir: Path) -> dict[str, Any] | None:
    """The newest readable checkpoint in `run_dir`, falling back to the previous one; None if none."""
    candidates = [run_dir / LATEST, run_dir / PREVIOUS]
    for i, path in enumerate(candidates):
        if not path.exists():
            continue
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:  # noqa: BLE001 - any unreadable file falls back to the previous one
            warnings.warn(f"checkpoint {path} is unreadable ({exc.__class__.__name__}); "
                          "falling back to the previous one", stacklevel=2)
            continue
        if i > 0:
            warnings.warn(f"resuming from the previous checkpoint {path}", stacklevel=2)
        return state
    if any(p.exists() for p in candidates):
        raise RuntimeError(f"no readable checkpoint in {run_dir}: delete the folder or pick another --run-dir")
    return None
