"""`pref-brl-plot`: learning curves and final-performance tables from run folders.

Reads config.json and scalars.jsonl of every run folder under the given folders (a study folder made by
pref-brl-sweep, or run folders). Per env it draws the metric (default: eval/mean_reward, eval/success_rate
for Meta-World) against env steps and against labels used (feedback/total), one panel per label budget,
one line per method (sac, which uses no labels, is drawn dashed in every panel of the steps figure). Lines
are the IQM (or mean) over seeds with 95% stratified-bootstrap intervals (rliable's conventions). The table
gives each method x budget's final performance and the probability that bilevel improves on pebble.

Examples:
  pref-brl-plot runs/walker-budgets
  pref-brl-plot runs/study-a runs/study-b --aggregate mean --out figures/
  pref-brl-plot runs/door --metric eval/mean_reward --x steps
  pref-brl-plot runs/door --label "pebble+uncertainty_bonus=1.0=pebble with bonus"
  pref-brl-plot runs/door --checks checks/pebble-seed0 checks/bilevel-seed0   # reward checks of pref-brl-reward-check

Reward checks (the JSON files of pref-brl-reward-check, --out or --watch) are drawn as series, one figure per env:
the cross-pair accuracy against each other policy at each checked checkpoint, one panel per method. By default
they are read from the reward-checks folder of each given folder (an archived study keeps them there), and
tabled per run in <env>_reward-checks.md: the cross-pair accuracy before and with the whole budget of labels,
when it reached 0.5 and held there, learned returns, pair accuracy and the own agent's success.

Each run's own final score is listed in runs.md (and runs.csv): the mean of its last --final-window evaluations,
those evaluations, its best one and, with --threshold X, the first step at which the mean of --final-window
consecutive evaluations reached X, and whether its final score does.
"""

from __future__ import annotations

import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import tyro

from pref_brl import diagnostics, run_scores
from pref_brl.check_series import CheckSeries, check_files, default_check_folders, load_series, run_key
from pref_brl.cli import parse
from pref_brl.results import (
    MIN_SEEDS_FOR_CI,
    Curve,
    Group,
    ResultsError,
    Row,
    RunData,
    apply_labels,
    curves,
    final_table,
    load,
    parse_labels,
    thin_groups,
    to_csv,
    to_markdown,
)

COLORS = {"sac": "black", "pebble": "tab:blue", "bilevel": "tab:red", "sobirl": "tab:green", "mrn": "tab:purple"}
SPARE_COLORS = ("tab:orange", "tab:brown", "tab:pink", "tab:olive", "tab:cyan", "tab:gray", "gold", "navy")
"""colours for method variants and methods without a fixed one: none of them a fixed colour, so every line of a
figure differs from every other up to this many variants"""
AXIS_LABELS = {"steps": "env steps", "labels": "labels used (feedback/total)"}


@dataclass(frozen=True)
class PlotArgs:
    """What to plot from which run folders."""

    folders: tyro.conf.Positional[tuple[str, ...]]
    """study folders or run folders (searched recursively for config.json)"""
    metric: str = ""
    """scalar to plot (empty: eval/success_rate for Meta-World envs, eval/mean_reward otherwise)"""
    env: tuple[str, ...] = ()
    """only these envs (default: every env found, one figure each)"""
    x: Literal["both", "steps", "labels"] = "both"
    """x-axis: env steps, labels used, or both (two figures)"""
    aggregate: Literal["iqm", "mean"] = "iqm"
    """aggregate over seeds: interquartile mean (rliable's default) or mean"""
    min_runs: int = 0
    """a curve point needs this many seeds evaluated there (0: all seeds of the line)"""
    final_window: int = 1
    """final performance of a run: mean of its last this many evaluations"""
    threshold: float | None = None
    """runs.md: the first step at which the mean of --final-window consecutive evaluations reached this level, and
    whether the run's final score does (None: no such columns; one metric at a time)"""
    compare: tuple[str, ...] = ("bilevel:pebble",)
    """method:baseline pairs whose probability of improvement the table reports; either side may be a method
    variant as the table names it (bilevel:bilevel+penalty=false)"""
    label: tuple[str, ...] = ()
    """NAME=TEXT: call the group the table names NAME (a method variant's long name, e.g.
    pebble+uncertainty_bonus=1.0+uncertainty_decay=1e-05) TEXT in figures and tables; --compare takes either"""
    reps: int = 5000
    """bootstrap resamples"""
    out: str = ""
    """output folder (default: <first folder>/plots)"""
    formats: tuple[str, ...] = ("png", "svg")
    """figure file formats"""
    checks: tuple[str, ...] = ()
    """folders of pref-brl-reward-check results (.json of --out or --watch) to draw as series (default: the
    reward-checks folder of each given folder, where there is one)"""
    diagnostics: str = ""
    """also pool every scalar whose tag starts with this prefix (e.g. bilevel/) over all rounds of all seeds of
    each group, into diagnostics.md: runs, rounds, mean, median, range, share of rounds below zero"""


def colors_for(groups: list[Group]) -> dict[str, str]:
    """A colour per line label: fixed ones for the plain methods, spare ones for variants (repeating only past
    len(SPARE_COLORS) of them)."""
    colors: dict[str, str] = {}
    spare = iter(SPARE_COLORS * 10)
    for group in groups:
        if group.label not in colors:
            plain = group.variant == () and group.method in COLORS
            colors[group.label] = COLORS[group.method] if plain else next(spare)
    return colors


def new_figure(panels: int = 1, per_row: int | None = None, height: float = 3.8):
    """Panels side by side sharing the y-axis, `per_row` of them to a row (all in one row by default); a row is
    `height` inches high. Returns (figure, axes [rows, columns])."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = panels if per_row is None else min(per_row, panels)
    rows = -(-panels // columns)
    width = 4.8 * columns if columns > 1 else 5.2
    return plt.subplots(rows, columns, figsize=(width, height * rows), sharey=True, squeeze=False)


def save(fig, base: Path, formats: tuple[str, ...]) -> list[Path]:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    paths = [base.with_suffix(f".{fmt}") for fmt in formats]
    for path in paths:
        fig.savefig(path, dpi=150, bbox_inches="tight")  # the legend below the panels included
    plt.close(fig)
    return paths


def draw(items: list[Curve], env: str, metric: str, axis: str, aggregate: str, base: Path,
         formats: tuple[str, ...]) -> list[Path]:
    """One figure: a panel per label budget; reference (true-reward) lines dashed in every panel."""
    budgets = sorted({c.group.budget for c in items if c.group.budget is not None}) or [None]
    references = [c for c in items if c.group.budget is None]
    colors = colors_for([c.group for c in items])
    fig, axes = new_figure(len(budgets))
    for ax, budget in zip(axes[0], budgets):
        for curve in [c for c in items if c.group.budget == budget] + (references if budget is not None else []):
            style = "--" if curve.group.budget is None else "-"
            name = f"{curve.group.label} (n={curve.runs})"
            ax.plot(curve.x, curve.point, style, color=colors[curve.group.label], label=name, lw=1.6)
            ax.fill_between(curve.x, curve.lo, curve.hi, color=colors[curve.group.label], alpha=0.2, lw=0)
        ax.set_title(env if budget is None else f"{env}, budget {budget} labels")
        ax.set_xlabel(AXIS_LABELS[axis])
        if axis == "labels":
            whole_ticks(ax.xaxis)
        ax.grid(alpha=0.3)
        legend_below(ax)
    banded = any(np.isfinite(c.lo).any() for c in items)
    axes[0][0].set_ylabel(f"{metric} ({aggregate.upper()}{', 95% CI' if banded else ''})")
    return save(fig, base, formats)


def legend_below(ax) -> None:
    """The legend under the panel, one entry a line, so that long method names never cover the curves."""
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(0.0, -0.22), frameon=False)


def whole_ticks(axis) -> None:
    """Ticks at whole numbers only (labels and budgets are counts)."""
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))


def draw_budgets(rows: list[Row], env: str, aggregate: str, base: Path, formats: tuple[str, ...]) -> list[Path]:
    """Final performance against label budget, one line per method; true-reward references as bands."""
    fig, axes = new_figure()
    ax = axes[0][0]
    colors = colors_for([r.group for r in rows])
    for label in colors:
        line = [r for r in rows if r.group.label == label]
        if line[0].group.budget is None:
            ax.axhline(line[0].point, ls="--", color=colors[label], label=f"{label} (n={len(line[0].scores)})")
            ax.axhspan(line[0].lo, line[0].hi, color=colors[label], alpha=0.15, lw=0)
            continue
        x = np.array([r.group.budget for r in line], dtype=float)
        y = np.array([r.point for r in line])
        err = np.array([[r.point - r.lo for r in line], [r.hi - r.point for r in line]])
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, color=colors[label], label=label)
    ax.set_xlabel("label budget")
    whole_ticks(ax.xaxis)
    banded = any(np.isfinite(r.lo) for r in rows)
    ax.set_ylabel(f"final {rows[0].metric} ({aggregate.upper()}{', 95% CI' if banded else ''})")
    ax.set_title(f"{env}: final performance per label budget")
    ax.grid(alpha=0.3)
    legend_below(ax)
    return save(fig, base, formats)


LINESTYLES = ("-", "--", ":", "-.")
"""one per other policy a panel's checks scored"""


@dataclass(frozen=True)
class CheckPanel:
    """The reward checks drawn in one panel: the runs of one group (or, for checks of runs not among the plotted
    folders, of one folder path below the env), at one budget."""

    title: str
    budget: int | None
    series: tuple[CheckSeries, ...]


def check_panels(series: list[CheckSeries], runs: list[RunData]) -> list[CheckPanel]:
    """A check's run, found among the loaded runs by its path below the env folder, gives its panel the group's
    name as the tables show it (with --label's text) and its budget; a run not found there goes by its folders."""
    known = {(r.config["env"], run_key(r.path, r.config["env"])): r.group for r in runs if r.group is not None}
    panels: dict[tuple[str, int | None], list[CheckSeries]] = {}
    methods: dict[tuple[str, int | None], str] = {}
    for line in series:
        group = known.get((line.env, line.run))
        key = (group.label, group.budget) if group is not None else (line.folder_group, line.budget)
        panels.setdefault(key, []).append(line)
        methods[key] = group.method if group is not None else line.folder_group.split("+")[0].split("/")[0]
    order = list(COLORS)

    def rank(key: tuple[str, int | None]) -> tuple:
        """in the order of the methods' colours (a --label text goes by its group's method), then budget, name"""
        return order.index(methods[key]) if methods[key] in order else len(order), key[1] or 0, key[0]

    return [CheckPanel(title, budget, tuple(panels[(title, budget)])) for title, budget in sorted(panels, key=rank)]


def draw_checks(panels: list[CheckPanel], env: str, base: Path, formats: tuple[str, ...]) -> list[Path]:
    """The reward checks of one env: a panel per group and budget, a colour per seed, a line style per other
    policy."""
    every = [line for panel in panels for line in panel.series]
    seeds = list(dict.fromkeys(line.seed for line in every))  # in the series' order: seed2 before seed10
    againsts = sorted({line.against for line in every})
    fig, axes = new_figure(len(panels), per_row=3, height=4.6)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, panel in zip(axes.flat, panels):
        for line in panel.series:
            color = SPARE_COLORS[seeds.index(line.seed) % len(SPARE_COLORS)]
            style = LINESTYLES[againsts.index(line.against) % len(LINESTYLES)]
            ax.plot(line.steps, line.cross_accuracy, style, marker="o", ms=2.5, lw=1.4, color=color,
                    label=f"{line.seed} vs {line.against}")
        ax.axhline(0.5, color="gray", lw=0.8, ls=":")
        spent = labels_spent(panel)
        if spent is not None:
            ax.axvline(spent, color="gray", lw=0.8, ls="--", label="first check with every label")
        ax.set_ylim(-0.03, 1.03)
        title = textwrap.fill(panel.title.replace("+", "+ "), 48, break_on_hyphens=False,
                              break_long_words=False).replace("+ ", "+")  # lines broken after a '+' only
        budget = "" if panel.budget is None or "budget" in panel.title else f", budget {panel.budget}"
        ax.set_title(f"{env}{budget}\n{title}", fontsize=9)
        ax.set_xlabel(AXIS_LABELS["steps"])
        ax.grid(alpha=0.3)
        legend_below(ax)
    for ax in axes[:, 0]:
        ax.set_ylabel("cross-pair accuracy of the learned reward")
    return save(fig, base, formats)


CHECK_TABLE_HEAD = ("method", "budget", "seed", "against", "checks (steps)",
                    "cross-pair accuracy before the last label", "first check >= 0.5 (labels)",
                    "held >= 0.5 from", "cross-pair accuracy with every label", "at the last check",
                    "learned return with every label: own / other", "pair accuracy with every label",
                    "label coverage of the other's segments with every label", "own agent's best success (step)")


def check_table(panels: list[CheckPanel]) -> str:
    """The reward checks of one env as Markdown, a row per run and other policy: the cross-pair accuracy before
    the run had its whole budget of labels and with it (ranges over the checks), the first check at which it
    reached 0.5 and the check from which it stayed there, the learned returns per episode of the run's own agent
    and of the other policy once every label was given, the pair accuracy over all checked segments then, the
    share of the other policy's segments whose true return the highest labelled segment reaches then (the label
    coverage), and the own agent's best success in the checks. NaN values (no pair to order; no coverage in a check
    written before it was recorded) are left out of every range; a run of unknown budget has every check before its
    last label. The 0.5 columns compare the accuracy as shown
    (two decimals), so that they agree with the ranges beside them."""
    lines = ["| " + " | ".join(CHECK_TABLE_HEAD) + " |", "|" + "---|" * len(CHECK_TABLE_HEAD)]
    for panel in panels:
        for line in panel.series:
            every = [i for i, labels in enumerate(line.labels) if panel.budget is not None and labels >= panel.budget]
            before = [i for i in range(len(line.steps)) if i not in every]
            shown = [round(acc, 2) for acc in line.cross_accuracy]  # 0.5 as the table shows it, two decimals
            reached = [i for i, acc in enumerate(shown) if acc >= 0.5]
            below = [i for i, acc in enumerate(shown) if acc < 0.5]
            held = [i for i in reached if not below or i > below[-1]]
            success = [(value, -step) for value, step in zip(line.own_success, line.steps) if not np.isnan(value)]
            best = max(success, default=None)
            cells = [_cell(panel.title), "-" if panel.budget is None else str(panel.budget), _cell(line.seed),
                     _cell(line.against),
                     f"{len(line.steps)} ({_span(line.steps, list(range(len(line.steps))), ',')})",
                     _span(line.cross_accuracy, before, ".2f"),
                     f"{line.steps[reached[0]]:,} ({line.labels[reached[0]]:,})" if reached else "never",
                     f"{line.steps[held[0]]:,}" if held else "never",
                     _span(line.cross_accuracy, every, ".2f"), _span(line.cross_accuracy, [len(line.steps) - 1], ".2f"),
                     f"{_span(line.own_learned, every, ',.0f')} / {_span(line.other_learned, every, ',.0f')}",
                     _span(line.pair_accuracy, every, ".2f"), _span(line.label_coverage, every, ".2f"),
                     "n/a" if best is None else f"{best[0]:.2f} ({-best[1]:,})" if best[0] > 0 else f"{best[0]:.2f}"]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _span(values: tuple[float, ...], at: list[int], spec: str) -> str:
    """min-max of the values at these indices (NaN left out), one value when they agree, n/a when none is left."""
    kept = [values[i] for i in at if i < len(values) and not np.isnan(values[i])]
    if not kept:
        return "n/a"
    low, high = _number(min(kept), spec), _number(max(kept), spec)
    return low if low == high else f"{low} to {high}"


def _number(value: float, spec: str) -> str:
    """format(value, spec), without the sign of a value that rounds to zero ("-0")."""
    text = format(value, spec)
    return text[1:] if text.startswith("-") and not any(c in "123456789" for c in text) else text


def _cell(text: str) -> str:
    """A name in a Markdown table cell: '|' would end the cell."""
    return text.replace("|", "\\|")


def check_tables(series: list[CheckSeries], runs: list[RunData]) -> dict[str, tuple[list[CheckPanel], str]]:
    """Per env with checks: its panels and their table (what <env>_reward-checks.md holds)."""
    tables_by_env = {}
    for env in sorted({s.env for s in series}):  # a known env (the checks are refused otherwise)
        panels = check_panels([s for s in series if s.env == env], runs)
        tables_by_env[env] = (panels, check_table(panels))
    return tables_by_env


def labels_spent(panel: CheckPanel) -> int | None:
    """The first checked step at which a run of the panel had been given its whole budget of labels, the earliest
    over its runs; None when the budget is not known or no run had it all by its last check."""
    if panel.budget is None:
        return None
    return min((step for line in panel.series for step, labels in zip(line.steps, line.labels)
                if labels >= panel.budget), default=None)


def check_series(args: PlotArgs) -> list[CheckSeries]:
    """The reward-check series to draw (of --env's envs when given); before anything is written."""
    folders = [Path(f) for f in args.checks] if args.checks else default_check_folders(args.folders)
    files = check_files(folders)
    series = load_series(files)
    if args.checks and not files:
        raise ResultsError(f"--checks: no pref-brl-reward-check results (.json) in {', '.join(args.checks)}")
    if args.checks and not series:
        raise ResultsError(f"--checks: the checks in {', '.join(args.checks)} score no policy but the run's own "
                           "agent (pref-brl-reward-check --against RUN or --expert): nothing to draw")
    return [s for s in series if not args.env or s.env in args.env]


def out_folder(args: PlotArgs) -> Path:
    return Path(args.out) if args.out else Path(args.folders[0]) / "plots"


def check_args(args: PlotArgs) -> None:
    """Options that no run folder can make right, and an output folder that can be written; before loading."""
    from importlib.util import find_spec

    from pref_brl.inputs import folder_problem

    bad = [p for p in args.compare if ":" not in p]
    if bad:
        raise ResultsError(f"bad options: --compare takes method:baseline (got {', '.join(bad)}); "
                           "--final-window and --reps must be >= 1")
    texts = set(parse_labels(args.label).values())
    known = set(COLORS)  # a side is a method or a variant of one, e.g. bilevel+penalty=false, or a --label text
    unknown = sorted({m for p in args.compare for m in p.split(":", 1)
                      if m.split("+", 1)[0] not in known and m not in texts})
    if unknown:
        raise ResultsError(f"--compare: unknown method(s) {', '.join(unknown)}; known: {', '.join(COLORS)}, "
                           "their variants (bilevel+penalty=false) and the texts of --label")
    if args.final_window < 1 or args.reps < 1:
        raise ResultsError("--final-window and --reps must be >= 1")
    if args.threshold is not None and not np.isfinite(args.threshold):
        raise ResultsError(f"--threshold must be a finite number, got {args.threshold}")
    if args.min_runs < 0:
        raise ResultsError(f"--min-runs must be >= 0 (0: every seed of a line), got {args.min_runs}")
    if not args.folders:
        raise ResultsError("no folders given; pass a study folder or run folders")
    for folder in map(Path, args.folders):
        if not folder.is_dir():
            raise ResultsError(f"{folder} is not a folder; pass a study folder or run folders")
    for folder in map(Path, args.checks):
        if not folder.is_dir():
            raise ResultsError(f"--checks {folder} is not a folder; pass folders of pref-brl-reward-check results")
    if find_spec("matplotlib") is None:
        raise ResultsError("pref-brl-plot draws with matplotlib: install the [plot] extra (pip install -e '.[plot]')")
    from matplotlib.figure import Figure

    supported = Figure().canvas.get_supported_filetypes()
    wrong = [f for f in args.formats if f not in supported]
    if wrong or not args.formats:
        raise ResultsError(f"--formats: {', '.join(wrong) or 'none given'}; matplotlib writes "
                           f"{', '.join(sorted(supported))}")
    problem = folder_problem(out_folder(args), "--out")
    if problem:
        raise ResultsError(problem)


def load_runs(args: PlotArgs) -> tuple[list[RunData], dict[str, str]]:
    """The command's runs, with --label's texts given, and the metric of each env: what every figure and table
    reads (the docs' result tables are checked from these)."""
    runs, metrics = load(list(args.folders), args.metric or None, args.env)
    if args.threshold is not None and len(set(metrics.values())) > 1:
        judged = ", ".join(f"{env} by {metric}" for env, metric in metrics.items())
        raise ResultsError(f"--threshold {args.threshold:g} is a level of one metric, and these runs are judged by "
                           f"several ({judged}): plot one env at a time (--env NAME) or name one --metric")
    apply_labels(runs, parse_labels(args.label))
    return runs, metrics


def make_plots(args: PlotArgs) -> list[Path]:
    runs, metrics = load_runs(args)
    series = check_series(args)
    out = out_folder(args)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    axes = ("steps", "labels") if args.x == "both" else (args.x,)
    for env, metric in metrics.items():
        env_runs = [r for r in runs if r.config["env"] == env]
        for axis in axes:
            items = curves(env_runs, metric, axis, args.aggregate, args.min_runs, args.reps)
            if items:
                base = out / f"{env}_{metric.replace('/', '-')}_vs_{axis}"
                written += draw(items, env, metric, axis, args.aggregate, base, args.formats)
    checked = check_tables(series, runs)
    for env, (panels, table) in checked.items():
        written += draw_checks(panels, env, out / f"{env}_reward-checks", args.formats)
        (out / f"{env}_reward-checks.md").write_text(table, encoding="utf-8")
        written.append(out / f"{env}_reward-checks.md")
    rows, pooled = tables(args, runs, metrics)
    for env, metric in metrics.items():
        env_rows = [r for r in rows if r.group.env == env]
        if len({r.group.budget for r in env_rows if r.group.budget is not None}) > 1:
            base = out / f"{env}_{metric.replace('/', '-')}_final_vs_budget"
            written += draw_budgets(env_rows, env, args.aggregate, base, args.formats)
    markdown = to_markdown(rows, args.aggregate)
    (out / "final.md").write_text(markdown, encoding="utf-8")
    (out / "final.csv").write_text(to_csv(rows, args.aggregate), encoding="utf-8")
    print(markdown)
    for env, (_, table) in checked.items():
        print(f"reward checks, {env}:\n{table}")
    written += [out / "final.md", out / "final.csv"]
    scores = per_run(args, runs, metrics)
    (out / "runs.md").write_text(run_scores.to_markdown(scores), encoding="utf-8")
    (out / "runs.csv").write_text(run_scores.to_csv(scores), encoding="utf-8")
    written += [out / "runs.md", out / "runs.csv"]
    if pooled is not None:
        (out / "diagnostics.md").write_text(pooled, encoding="utf-8")
        print(pooled)
        written.append(out / "diagnostics.md")
    times = diagnostics.run_times_markdown(runs)
    (out / "runtimes.md").write_text(times, encoding="utf-8")
    written.append(out / "runtimes.md")
    warn_unfinished(rows)
    return written


def tables(args: PlotArgs, runs: list[RunData], metrics: dict[str, str]) -> tuple[list[Row], str | None]:
    """The final-performance rows and, with --diagnostics, the pooled diagnostics as Markdown, of `load_runs`'s
    runs: what final.md and diagnostics.md hold (the docs' result tables are checked against this)."""
    pairs = tuple(tuple(p.split(":", 1)) for p in args.compare if ":" in p)
    rows = final_table(runs, metrics, args.aggregate, pairs, args.final_window, args.reps)  # type: ignore[arg-type]
    if not args.diagnostics:
        return rows, None
    return rows, diagnostics.to_markdown(diagnostics.pooled_diagnostics(runs, args.diagnostics))


def per_run(args: PlotArgs, runs: list[RunData], metrics: dict[str, str]) -> list[run_scores.RunScore]:
    """Each run's final score, its last evaluations and, with --threshold, when it reached the level, of
    `load_runs`'s runs: runs.md."""
    return run_scores.run_scores(runs, metrics, args.final_window, args.threshold)


def warn_unfinished(rows: list) -> None:
    for label in thin_groups(rows):
        print(f"warning: {label}: fewer than {MIN_SEEDS_FOR_CI} runs, so no confidence interval or probability "
              "of improvement is given", file=sys.stderr)
    for row in rows:
        if row.finished < len(row.scores) or row.final_steps[0] != row.final_steps[1]:
            print(f"note: {row.group.env} {row.group.label} budget {row.group.budget}: {row.finished} of "
                  f"{len(row.scores)} runs finished, final steps {row.final_steps[0]}-{row.final_steps[1]}",
                  file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = parse(PlotArgs, "pref-brl-plot", args=sys.argv[1:] if argv is None else argv, description=__doc__)
    try:
        check_args(args)
        written = make_plots(args)
    except ResultsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
