"""Per-round diagnostics pooled over the seeds of a group: what `pref-brl-plot --diagnostics` tabulates.

A method's own diagnostics (`bilevel/penalty_snr`, `bilevel/gap_before`, ...) are logged once per feedback
round. Pooled over every round of every seed of a group, their mean, median, range and the share of rounds
below zero say whether a mechanism did what it is meant to (a signal-to-noise ratio near 1 is noise; a gap
that is negative as often as positive has no sign), where a final return cannot.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pref_brl.results import Group, RunData, sort_key


@dataclass(frozen=True)
class Pooled:
    """One tag over every logged round of a group's runs."""

    group: Group
    tag: str
    values: np.ndarray
    runs: int
    """runs of the group that logged the tag"""

    @property
    def below_zero(self) -> float:
        return float((self.values < 0).mean())


def pooled_diagnostics(runs: list[RunData], prefix: str) -> list[Pooled]:
    """Every tag starting with `prefix`, pooled per group over all rounds of all its runs (finite values only)."""
    out = []
    for group in sorted({r.group for r in runs if r.group is not None}, key=sort_key):
        members = [r for r in runs if r.group == group]
        tags = sorted({k for r in members for rec in r.records for k in rec if k.startswith(prefix)})
        for tag in tags:
            series = [r.series(tag)[1] for r in members]
            values = np.concatenate(series) if series else np.zeros(0)
            values = values[np.isfinite(values)]
            if len(values):
                out.append(Pooled(group, tag, values, sum(len(s) > 0 for s in series)))
    return out


def to_markdown(rows: list[Pooled]) -> str:
    """One line per (group, tag): runs, rounds, mean, median, min – max, share of rounds below zero."""
    lines = ["| env | group | diagnostic | runs | rounds | mean | median | min – max | rounds < 0 |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        v = row.values
        lines.append(f"| {row.group.env} | {row.group.label} | `{row.tag}` | {row.runs} | {len(v)} | "
                     f"{_fmt(v.mean())} | {_fmt(np.median(v))} | {_fmt(v.min())} – {_fmt(v.max())} | "
                     f"{row.below_zero:.0%} |")
    return "\n".join(lines) + "\n"


def _fmt(x: float) -> str:
    return f"{x:.3g}"
