"""Command-line parsing with one-line errors: tyro's boxed messages become `error: ...; see --help`."""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import sys
from collections.abc import Collection
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


def append_options(cls: type) -> set[str]:
    """The options of `cls` meant to be given more than once (fields marked `tyro.conf.UseAppendAction`)."""
    import dataclasses
    import typing

    if not dataclasses.is_dataclass(cls):
        return set()
    hints = typing.get_type_hints(cls, include_extras=True)
    return {"--" + f.name.replace("_", "-") for f in dataclasses.fields(cls)
            if any(m is tyro.conf.UseAppendAction for m in getattr(hints.get(f.name), "__metadata__", ()))}


def repeated_option(args: list[str], repeatable: Collection[str] = ()) -> str | None:
    """What is wrong when an option is given twice (`--seeds 0 --seeds 1`, or `--compile` and `--no-compile`),
    before a `--`; tyro would keep the last silently. None when none is (`repeatable` options may repeat)."""
    seen: dict[str, str] = {}
    for token in args:
        if token == "--":
            break
        if not token.startswith("--"):
            continue
        option = token.split("=", 1)[0]
        if option in repeatable:
            continue
        key = option[5:] if option.startswith("--no-") else option[2:]
        if key in seen:
            first = seen[key]
            if first == option:
                return (f"{option} given twice: only the last would count; give all its values after one {option} "
                        f"(as in --seeds 0 1 2)")
            return f"{first} and {option} both given: only the last would count; give one of them"
        seen[key] = option
    return None


def parse(cls: type[T], prog: str, args: list[str] | None = None, **kwargs: Any) -> T:
    """tyro.cli(cls, ...), but a parsing error exits with code 2 and one line on stderr; so does an option given
    twice, which tyro would take the last of without a word (`--seeds 0 --seeds 1` runs seed 1 only)."""
    twice = repeated_option(sys.argv[1:] if args is None else list(args), append_options(cls))
    if twice:
        print(f"error: {twice} (see {prog} --help)", file=sys.stderr)
        raise SystemExit(2)
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

