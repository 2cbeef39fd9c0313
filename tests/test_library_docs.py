"""docs/library.md runs as written: every Python block of each section, in a scratch working directory (tiny
runs: the page's own `QUICK` settings). Blocks that start with `# file: NAME.py` are written there as modules."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parent.parent / "docs" / "library.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
FILE = re.compile(r"\A# file: (\w+\.py)\n")


def modules() -> dict[str, str]:
    """The page's module files: name -> source."""
    found = (FILE.match(block) for block in BLOCK.findall(DOC.read_text(encoding="utf-8")))
    return {match.group(1): match.string for match in found if match}


def sections() -> dict[str, list[str]]:
    """Each `## ` section's runnable blocks, in order."""
    out = {}
    for part in re.split(r"^## ", DOC.read_text(encoding="utf-8"), flags=re.M)[1:]:
        blocks = [b for b in BLOCK.findall(part) if not FILE.match(b)]
        if blocks:
            out[part.splitlines()[0]] = blocks
    return out


def test_page_has_the_examples() -> None:
    assert {"quick.py", "my_teachers.py", "my_rewards.py"} <= set(modules())
    assert len(sections()) >= 7


@pytest.mark.parametrize("title", list(sections()))
def test_section_runs_as_written(title: str, tmp_path: Path) -> None:
    # in a process of its own started in the scratch folder, as a user's script runs: only the installed package
    # is importable, not the repository's top-level folders that the tests themselves see
    for name, source in modules().items():
        (tmp_path / name).write_text(source, encoding="utf-8")
    script = "\n\n".join(sections()[title])
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-"], input=script, cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, f"docs/library.md, section {title!r}:\n{out.stderr[-3000:]}"
