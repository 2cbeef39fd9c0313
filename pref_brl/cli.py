"""Command-line parsing with one-line errors: tyro's boxed messages become `error: ...; see --help`."""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import sys
from typing import Any, TypeVar

import tyro

T = TypeVar("T")
_EDGE = re.compile(r"^[\s│|]+|[\s│|]+$")


def one_line(message: str) -> str:
    """The essential part of a boxed tyro message on one line: the problem and, if any, a suggestion.

    tyro draws a box (unicode or ASCII, depending on the console): a title line, content lines between
    edge bars, separator lines of dashes. Content is joined up to the first separator; a "Perhaps you
    meant" section adds the suggested option.
    """
    raw = [line.strip() for line in message.splitlines() if line.strip()]
    if not raw:
        return "bad arguments"
    title = raw[0].strip("╭╮+─- ")
    boxed = raw[0][0] in "╭+"
    sections: list[list[str]] = [[]]
    for line in raw[1:-1] if boxed else raw[1:]:
        text = _EDGE.sub("", line)
        if not text.strip("─-"):
            sections.append([])
        else:
            sections[-1].append(text)
    sections = [section for section in sections if section]
    if not sections:
        return title
    problem = " ".join(sections[0])
    hint = ""
    for section in sections[1:]:
        if section and section[0] == "Perhaps you meant:" and len(section) > 1:
            hint = f"; did you mean {section[1].split()[0]}?"
    return f"{problem}{hint}"


def parse(cls: type[T], prog: str, args: list[str] | None = None, **kwargs: Any) -> T:
    """tyro.cli(cls, ...), but a parsing error exits with code 2 and one line on stderr."""
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            return tyro.cli(cls, args=args, prog=prog, **kwargs)
    except SystemExit as exc:
        if exc.code in (0, None):
            sys.stderr.write(captured.getvalue())
            raise
        print(f"error: {one_line(captured.getvalue())} (see {prog} --help)", file=sys.stderr)
        raise SystemExit(2) from None


class OneLineParser(argparse.ArgumentParser):
    """argparse with the same one-line errors (`error: ... (see PROG --help)`, exit code 2)."""

    def error(self, message: str):  # type: ignore[override]
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)

