"""docs/library.md runs as written: every Python block of each section, in a scratch working directory (tiny
runs: the page's own `QUICK` settings). Blocks that start with `# file: NAME.py` are written there as modules."""

from __future__ import annotations

import re
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
def test_section_runs_as_written(title: str, tmp_path: Path, monkeypatch) -> None:
    files = modules()
    for name, source in files.items():
        (tmp_path / name).write_text(source, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    namespace: dict = {"__name__": "__main__"}
    try:
        for block in sections()[title]:
            exec(compile(block, f"docs/library.md ({title})", "exec"), namespace)  # noqa: S102
    finally:
        for name in files:
            sys.modules.pop(name.removesuffix(".py"), None)
