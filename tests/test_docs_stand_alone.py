"""Code and docs stand alone: no citations of an internal specification or of internal paper file names, and
no paths or phrases of the one machine the runs were made on.

Every .py and .md file of the repository (tracked, or untracked but not ignored) is scanned for section
references into the specification and for the internal paper labels; papers are cited by authors and
title instead, and the project's own docs (README.md, docs/*.md) are pointed to by name. Those files and the
packaging (Makefile, setup.cfg, pyproject.toml) are scanned for absolute paths of a machine (a home, work or
scratch folder; /tmp in docs) and for phrases that speak of the one machine instead of naming its CPU: docs
say which CPU a figure was measured on, and commands use paths relative to the repository.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SKIP_DIRS = {".venv", "venv", "runs", ".git", "build", "dist", "__pycache__", ".pytest_cache", ".ruff_cache"}
SUFFIXES = (".py", ".md")
# Written so that this file does not match its own patterns.
FORBIDDEN = re.compile(r"SPEC ?\u00a7|[Ss]eed 00[0-9]|[Ss]eed Eq\b")
PACKAGING = ("Makefile", "setup.cfg", "pyproject.toml")
MACHINE_PATH = re.compile(r"(?<![\w.~-])/(?:work|home|root|Users|mnt|scratch|srv)/[\w.-]")
DOC_TMP_PATH = re.compile(r"(?<![\w.~-])/tmp/[\w.-]")
ONE_MACHINE = re.compile(r"\b(?:[Tt]hese (?:\d+-core )?machines|[Tt]his \d+-core|[Tt]he shared \d+-core)\b")
def _files() -> list[Path]:
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            check=True,
            timeout=30,
        ).stdout.decode()
        names = [n for n in out.split("\0") if n]
    except (OSError, subprocess.SubprocessError):
        names = []
        for dirpath, dirnames, filenames in os.walk(ROOT):
            dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS and not d.endswith(".egg-info")]
            rel = Path(dirpath).relative_to(ROOT)
            names.extend(str(rel / f) for f in filenames)
    paths = []
    for name in names:
        if not name.endswith(SUFFIXES) or SKIP_DIRS.intersection(Path(name).parts):
            continue
        path = ROOT / name
        if path.is_file():
            paths.append(path)
    return paths


def test_no_internal_references():
    files = _files()
    assert files, "no .py or .md files found"
    hits = []
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        if not FORBIDDEN.search(text):
            continue
        for lineno, line in enumerate(text.splitlines(), 1):
            if FORBIDDEN.search(line):
                hits.append(f"{path.relative_to(ROOT)}:{lineno}: {line.strip()}")
    assert not hits, "internal references (cite the paper or the project's docs instead):\n" + "\n".join(hits)


def test_no_paths_or_phrases_of_one_machine():
    files = _files() + [ROOT / name for name in PACKAGING if (ROOT / name).is_file()]
    hits = []
    for path in files:
        patterns = [MACHINE_PATH, ONE_MACHINE] + ([DOC_TMP_PATH] if path.suffix == ".md" else [])
        for lineno, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if any(p.search(line) for p in patterns):
                hits.append(f"{path.relative_to(ROOT)}:{lineno}: {line.strip()}")
    assert not hits, "paths or phrases of one machine (say which CPU; use relative paths):\n" + "\n".join(hits)
