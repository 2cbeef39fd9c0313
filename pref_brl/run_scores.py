"""Each run's final performance on its own (pref-brl-plot's runs.md and runs.csv).

The final table (`pref_brl.results.final_table`) aggregates a group's seeds; this one lists them: per run, the
mean of its last `window` evaluations (the score the final table aggregates), those evaluations, its best
evaluation, and, given a threshold, the first env step at which the mean of `window` consecutive evaluations
was at least the threshold. With a window of 3 and a threshold of 0.5 on eval success that is a rule such as
"a setting passes on a seed when the mean of its last three evaluations is at least 0.5, and of two that pass,
the one that first reaches that level is taken".
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from pref_brl.results import RunData, short_number, sort_key

DIGITS = 9
"""a mean is compared with the threshold rounded to this many decimals: 0.7, 0.5 and 0.3 average to 0.5 exactly, not
to the 0.49999999999999994 of floating point"""


@dataclass(frozen=True)
class RunScore:
    """One run's evaluations of the metric and what the per-run table reads from them."""

    run: RunData
    metric: str
    steps: np.ndarray
    values: np.ndarray
    window: int
    threshold: float | None = None

    @property
    def seed(self) -> int:
        return int(self.run.config["seed"])

    @property
    def final(self) -> float:
        """The mean of the last `window` evaluations (of all of them when there are fewer): the final score, as
        `pref_brl.results.final_score` takes it for the final table."""
        return float(self.last.mean())

    @property
    def last(self) -> np.ndarray:
        return self.values[-self.window:]

    @property
    def short(self) -> bool:
        """fewer evaluations than the window: no window of `window` consecutive ones to judge"""
        return len(self.values) < self.window

    @property
    def best(self) -> tuple[float, int]:
        """The highest evaluation and its step (the first such step)."""
        i = int(np.argmax(self.values))
        return float(self.values[i]), int(self.steps[i])

    @property
    def reached(self) -> int | None:
        """The first step at which the mean of `window` consecutive evaluations (ending there) was at least the
        threshold; None when it never was, no threshold is set, or the run has fewer evaluations than the window."""
        if self.threshold is None or self.short:
            return None
        means = sliding_window_view(self.values, self.window).mean(axis=1)  # as `final` averages its window
        hits = np.flatnonzero(np.round(means, DIGITS) >= self.threshold)
        return int(self.steps[hits[0] + self.window - 1]) if len(hits) else None

    @property
    def passes(self) -> bool | None:
        """whether the final score is at least the threshold; None without one, or with fewer evaluations than the
        window (a rule on the mean of the last `window` evaluations does not apply)"""
        if self.threshold is None or self.short:
            return None
        return bool(round(self.final, DIGITS) >= self.threshold)


def run_scores(runs: list[RunData], metrics: dict[str, str], window: int = 1,
               threshold: float | None = None) -> list[RunScore]:
    """One score per run, in the final table's group order and by seed within a group."""
    ordered = sorted(runs, key=lambda r: (sort_key(r.group), int(r.config["seed"]), str(r.path)))
    return [RunScore(r, metrics[r.group.env], *r.series(metrics[r.group.env]), window, threshold)
            for r in ordered]


def _num(x: float) -> str:
    text = short_number(x)
    return text[1:] if text == "-0" else text


def _steps(x: int) -> str:
    return f"{x:,}"


def to_markdown(scores: list[RunScore]) -> str:
    """The per-run table as Markdown: a row per run."""
    if not scores:
        return ""
    window, threshold = scores[0].window, scores[0].threshold
    head = ["env", "method", "budget", "seed", "finished", "metric", "evaluations", "final step"]
    head += ["final"] if window == 1 else [f"final (mean of last {window})", f"last {window} evaluations (steps)"]
    head += ["best (step)"]
    if threshold is not None:
        level = f"the mean of {window} consecutive evaluations" if window > 1 else "an evaluation"
        head += [f"first step with {level} >= {threshold:g}", f"final >= {threshold:g}"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in scores:
        group = s.run.group
        best, at = s.best
        shown = ", ".join(_num(v) for v in s.last)
        span = s.steps[-len(s.last):]
        where = _steps(int(span[0])) if len(span) == 1 else f"{_steps(int(span[0]))} to {_steps(int(span[-1]))}"
        cells = [group.env, group.label, "-" if group.budget is None else str(group.budget), str(s.seed),
                 "yes" if s.run.finished else "no", s.metric, str(len(s.values)), _steps(int(s.steps[-1])),
                 _num(s.final)]
        cells += [] if window == 1 else [f"{shown} ({where})"]
        cells += [_num(best) if (s.values == best).all() else f"{_num(best)} ({_steps(at)})"]
        if threshold is not None and s.short:
            cells += [f"n/a ({len(s.values)} of {window} evaluations)"] * 2
        elif threshold is not None:
            cells += ["never" if s.reached is None else _steps(s.reached), "yes" if s.passes else "no"]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def to_csv(scores: list[RunScore]) -> str:
    """The per-run table as CSV, full precision (`reached_step` empty when never; `passes` empty without a threshold
    or for a run with fewer evaluations than the window)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["env", "method", "settings", "budget", "seed", "finished", "run", "metric", "evaluations",
                     "final_step", "window", "final", "best", "best_step", "threshold", "reached_step", "passes"])
    for s in scores:
        group = s.run.group
        best, at = s.best
        writer.writerow([group.env, group.method, ";".join(f"{k}={v}" for k, v in group.extras),
                         group.budget if group.budget is not None else "", s.seed, int(s.run.finished), s.run.path,
                         s.metric, len(s.values), int(s.steps[-1]), s.window, s.final, best, at,
                         "" if s.threshold is None else s.threshold,
                         "" if s.reached is None else s.reached, "" if s.passes is None else int(s.passes)])
    return buffer.getvalue()


__all__ = ["RunScore", "run_scores", "to_csv", "to_markdown"]
