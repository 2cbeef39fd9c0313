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


FPS_TAG = "time/fps"


def run_seconds(run: RunData) -> float:
    """A run's training time from its logged throughput: the sum over log intervals of steps / (steps/s)
    (a resumed run's stopped time is not counted; time spent waiting for human labels is)."""
    return _seconds(*run.series(FPS_TAG))


def _seconds(steps: np.ndarray, fps: np.ndarray) -> float:
    gaps = np.diff(np.r_[0.0, steps])
    ok = fps > 0
    return float((gaps[ok] / fps[ok]).sum())


def run_times_markdown(runs: list[RunData]) -> str:
    """One line per group: runs, last step, hours per run (median, min – max) and env steps/s."""
    lines = ["| env | group | runs | steps | hours per run, median (min – max) | env steps/s |",
             "|---|---|---|---|---|---|"]
    for group in sorted({r.group for r in runs if r.group is not None}, key=sort_key):
        logged = [r.series(FPS_TAG) for r in runs if r.group == group]
        logged = [(steps, fps) for steps, fps in logged if len(steps)]
        if not logged:
            continue
        seconds = np.array([_seconds(steps, fps) for steps, fps in logged])
        steps = np.array([steps[-1] for steps, _ in logged])
        hours = seconds / 3600
        lines.append(f"| {group.env} | {group.label} | {len(logged)} | {int(steps.max())} | {_fmt(np.median(hours))} "
                     f"({_fmt(hours.min())} – {_fmt(hours.max())}) | {_fmt(steps.sum() / seconds.sum())} |")
    return "\n".join(lines) + "\n"


def _fmt(x: float) -> str:
    return f"{x:.3g}"
