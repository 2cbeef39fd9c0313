"""pref-brl-gridworld: the tabular bilevel study of docs/tabular.md.

Runs every method of the papers (:data:`pref_brl.tabular.methods.PAPER_METHODS`, exact and sampled
variants) on every benchmark with fixed seeds, scores each iterate with the exact F and ‖∇F‖, and writes into
``--out``: ``<benchmark>_F_vs_iteration.png``, ``<benchmark>_F_vs_samples.png``,
``<benchmark>_gradnorm_vs_iteration.png``, ``<benchmark>_reward_heatmap.png`` (GridWorlds),
``penalty_bias_vs_lambda.png`` and ``results.md``.

With ``--resync`` it runs the bias study of the re-sync twin of the deep ``bilevel`` method instead
(:mod:`pref_brl.tabular.resync_study`) and writes ``resync.md``; with ``--estimators`` the bias and
signal of the λ-term's estimators (:mod:`pref_brl.tabular.estimator_study`), written to
``estimators.md``.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from pref_brl.cli import parse
from pref_brl.tabular.benchmarks import BENCHMARKS
from pref_brl.tabular.estimator_study import estimator_report
from pref_brl.tabular.methods import PAPER_METHODS, run_method, run_reference
from pref_brl.tabular.problem import BilevelProblem, hypergradient
from pref_brl.tabular.proxy import penalty_point
from pref_brl.tabular.report import (
    RunGroup,
    markdown_table,
    plot_curves,
    plot_penalty_bias,
    plot_reward_maps,
    summarise,
)
from pref_brl.tabular.resync import ResyncConfig
from pref_brl.tabular.resync_study import StudyAxes, resync_report

HELP = (
    "Tabular bilevel study (docs/tabular.md): every method (penalty, sobirl, regularized_ac, partial; exact and sampled"
    " variants) on every benchmark with fixed seeds, scored by the exact F and ||grad F||. Writes PNG plots (F vs"
    " iterations and vs samples, ||grad F|| vs iterations, final reward heat maps with policy arrows, penalty bias"
    " vs lambda) and results.md (final F, stationarity, cost to reach a tolerance) into --out. With --resync:"
    " the bias study of the re-sync twin of the deep bilevel method instead (cosine and relative error of its"
    " hypergradient estimate against the exact grad F, next to the exact penalty gradient and partial, as"
    " functions of K_B, delta, lambda~ and the clip epsilon), written to resync.md. With --estimators: the bias"
    " (against the exact lambda-term) and the signal per 1000 transitions of each estimator of the lambda-term"
    " (paired rollouts, branches, shared states, likelihood ratios), written to estimators.md."
)


@dataclass
class StudyConfig:
    """Every tabular bilevel method on every benchmark: exact F, plots and a Markdown table."""

    out: Path = Path("runs/gridworld")
    """Output folder for the PNG plots and results.md (created if missing)."""
    quick: bool = False
    """Smoke version: 40 iterations, one seed, three λ values (seconds; used by the tests)."""
    benchmarks: tuple[str, ...] = tuple(BENCHMARKS)
    """Benchmarks to run (gridworld_goal, preference_gridworld, random_mdp)."""
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    """Seeds of the sampled variants (exact variants are deterministic and run once)."""
    iterations: int = 400
    """Upper iterations per run (the quick version uses 40)."""
    tolerance: float = 0.02
    """'Cost to tolerance' counts until F ≤ F_ref + tolerance · (F(φ₀) − F_ref), F_ref the oracle's final F."""
    overwrite: bool = False
    """Allow writing into a folder that already holds a results.md (otherwise the study refuses)."""
    resync: bool = False
    """Run the re-sync bias study (twin of the deep bilevel method) instead; writes resync.md (about a minute)."""
    resync_b_steps: tuple[int, ...] = (10, 100, 1000)
    """--resync: K_B values, B's inner Adam steps after the re-sync (the largest is used by the other tables)."""
    resync_kl_targets: tuple[float, ...] = (0.002, 0.02, 0.2)
    """--resync: KL targets δ of the adaptive β (the middle one is used by the other tables)."""
    resync_weights: tuple[float, ...] = (1.0, 3.0, 10.0, 30.0)
    """--resync: penalty weights λ̃ (λ = (1 − γ) λ̃)."""
    resync_clips: tuple[float, ...] = (0.1, 0.2, 0.5, math.inf)
    """--resync: clip ε values of the clip table (inf: no clip)."""
    resync_pairs: int = 16
    """--resync: paired A/B rollouts per sampled round."""
    resync_repetitions: int = 16
    """--resync: independent sampled rounds per setting of the sampled table."""
    estimators: bool = False
    """Run the study of the λ-term's estimators instead; writes estimators.md (seconds)."""
    estimators_weight: float = 1.0
    """--estimators: λ̃ of the twin's round that makes B (the deep method's default is 1)."""
    estimators_units: int = 2000
    """--estimators: sampled units (pairs, branches, episodes) per setting for the SNR (--quick: 200)."""


EXACT_PHI_LR = {"gridworld_goal": 5.0, "preference_gridworld": 5.0, "random_mdp": 1.0}
"""φ step of the exact variants (and of the oracle reference) per benchmark."""
SAMPLED_PHI_LR = 0.5
"""φ step of every sampled variant (noisy gradients need a smaller step)."""
METHOD_SETTINGS: dict[tuple[str, str], dict[str, Any]] = {
    ("penalty", "exact"): {"lam": 20.0},
    ("penalty", "sampled"): {"lam": 5.0, "n_rollouts": 64, "critic_lr": 0.3, "inner_lr": 0.2},
    ("regularized_ac", "exact"): {"lam": 20.0},
    ("regularized_ac", "sampled"): {"lam": 5.0, "n_rollouts": 64, "critic_lr": 0.3, "actor_lr": 0.3},
    ("sobirl", "exact"): {},
    ("sobirl", "sampled"): {"q_lr": 0.1, "n_rollouts": 8},
    ("partial", "exact"): {},
    ("partial", "sampled"): {"q_lr": 0.1},
}
"""Per method/variant settings, hand-tuned once on a small grid (λ ∈ {5, 20}, steps ∈ {0.1, 0.3, 0.5})."""
EXTRA_RUNS: tuple[tuple[str, str, str, dict[str, Any]], ...] = (
    ("penalty", "exact", "inner solves", {"lam": 20.0, "inner_solve": True}),
)
"""(method, variant, tag, settings) run in addition: the penalty method with exact inner solves."""
BIAS_LAMBDAS = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0)
"""λ values of the penalty-bias measurement."""


def method_settings(benchmark: str, method: str, variant: str, seed: int, config: StudyConfig) -> dict[str, Any]:
    """The full settings of one run: preset step, per-method settings, iterations, variant and seed."""
    phi_lr = EXACT_PHI_LR[benchmark] if variant == "exact" else SAMPLED_PHI_LR
    return {"phi_lr": phi_lr, **METHOD_SETTINGS[(method, variant)], "iterations": config.iterations,
            "variant": variant, "seed": seed}


def run_benchmark(name: str, config: StudyConfig) -> tuple[str, list[str]]:
    """Run every method on one benchmark, write its plots, and return its Markdown section."""
    problem = BENCHMARKS[name]()
    reference = run_reference(problem, config.iterations, EXACT_PHI_LR[name])
    groups = []
    for method in PAPER_METHODS:
        for variant in ("exact", "sampled"):
            seeds = (0,) if variant == "exact" else config.seeds
            traces = tuple(run_method(method, problem, **method_settings(name, method, variant, s, config))
                           for s in seeds)
            groups.append(RunGroup(method, variant, traces))
    for method, variant, tag, extra in EXTRA_RUNS:
        settings = {**method_settings(name, method, variant, 0, config), **extra}
        groups.append(RunGroup(method, variant, (run_method(method, problem, **settings),), tag))
    f_ref, f_start = float(reference.values[-1]), float(reference.values[0])
    threshold = f_ref + config.tolerance * (f_start - f_ref)
    rows = [summarise(g, threshold) for g in [*groups, RunGroup("oracle", "exact", (reference,))]]
    written = plot_curves(groups, reference, name, config.out)
    if problem.layout is not None:
        finals = [(g.label, g.traces[0].phis[-1]) for g in groups]
        finals.append(("oracle/exact", reference.phis[-1]))
        written.append(plot_reward_maps(problem, finals, config.out))
    header = (f"### {name}\n\nF(φ₀) = {f_start:.5f}; oracle (exact-hypergradient descent) final "
              f"F_ref = {f_ref:.5f}; tolerance: F ≤ {threshold:.5f}.\n\n")
    return header + markdown_table(rows) + "\n", [p.name for p in written]


def penalty_bias(problem: BilevelProblem, lams: Sequence[float]) -> tuple[np.ndarray, np.ndarray, float]:
    """‖∇L*_λ − ∇F‖ at the benchmark's φ₀ (moved off zero) for each λ, and the fitted log–log slope."""
    phi = problem.phi0 + 0.3 * np.random.default_rng(1).standard_normal(problem.dim)
    exact = hypergradient(problem, phi)
    lam_array = np.asarray(lams, dtype=np.float64)
    errors = np.array([np.linalg.norm(penalty_point(problem, phi, lam).grad - exact) for lam in lam_array])
    slope = float(np.polyfit(np.log(lam_array), np.log(errors), 1)[0])
    return lam_array, errors, slope


class StudyConfigError(ValueError):
    """An option of the study is unusable; the message names it and says what to do."""


def check_config(config: StudyConfig) -> None:
    """Every option, and the output folder, before anything runs or is written."""
    from pref_brl.inputs import folder_problem

    unknown = sorted(set(config.benchmarks) - set(BENCHMARKS))
    if unknown or not config.benchmarks:
        raise StudyConfigError(f"unknown benchmark(s) {unknown or 'none given'}; choose from {sorted(BENCHMARKS)}")
    if not config.seeds or min(config.seeds) < 0:
        raise StudyConfigError(f"--seeds must be one or more integers >= 0, got {list(config.seeds)}")
    if config.iterations < 1:
        raise StudyConfigError(f"--iterations must be >= 1, got {config.iterations}")
    if not 0 < config.tolerance <= 1:
        raise StudyConfigError(f"--tolerance must be in (0, 1] (a share of the way from F(phi0) to F_ref), got "
                               f"{config.tolerance}")
    if config.resync and config.estimators:
        raise StudyConfigError("choose one of --resync and --estimators")
    if not (config.estimators_weight > 0 and math.isfinite(config.estimators_weight)):
        raise StudyConfigError(f"--estimators-weight must be positive and finite, got {config.estimators_weight}")
    if config.estimators_units < 2:
        raise StudyConfigError(f"--estimators-units must be at least 2 (a variance needs two units), got "
                               f"{config.estimators_units}")
    problem = folder_problem(config.out, "--out")
    report = "resync.md" if config.resync else "estimators.md" if config.estimators else "results.md"
    if problem is None and (config.out / report).exists() and not config.overwrite:
        problem = f"{config.out} already holds {report}; pass --overwrite or choose another --out"
    if problem:
        raise StudyConfigError(problem)
    if config.resync:
        _check_resync_axes(resync_axes(replace(config, quick=False)))  # the values given, even under --quick


def _prepare_output(config: StudyConfig) -> None:
    config.out.mkdir(parents=True, exist_ok=True)


def resync_axes(config: StudyConfig) -> StudyAxes:
    """The re-sync study's axes from the options (``--quick``: K_B 10 and 100, δ 0.02, λ̃ 3, ε 0.2, 4 rounds)."""
    if config.quick:
        return StudyAxes((10, 100), (0.02,), (3.0,), (0.2,), config.resync_pairs, 4)
    return StudyAxes(tuple(sorted(config.resync_b_steps)), config.resync_kl_targets, config.resync_weights,
                     config.resync_clips, config.resync_pairs, config.resync_repetitions)


def _check_resync_axes(axes: StudyAxes) -> None:
    positive = axes.kl_targets + axes.weights + axes.clips
    if not (axes.b_steps and axes.kl_targets and axes.weights and axes.clips):
        raise StudyConfigError("--resync needs at least one value of K_B, δ, λ̃ and ε")
    finite = all(math.isfinite(x) for x in axes.kl_targets + axes.weights)
    if min(axes.b_steps) < 0 or not min(positive) > 0 or not finite or min(axes.n_pairs, axes.repetitions) < 1:
        raise StudyConfigError("--resync needs K_B >= 0, positive finite δ and λ̃, positive ε (inf: no clip), and "
                               "at least one pair and round")


def run_resync_study(config: StudyConfig, argv: Sequence[str]) -> None:
    """``--resync``: the twin's bias tables on the chosen benchmarks, printed and written to resync.md."""
    axes = resync_axes(config)
    _prepare_output(config)
    started = time.perf_counter()
    body = resync_report({name: BENCHMARKS[name]() for name in config.benchmarks}, axes)
    write_report(config, "resync.md", "# Re-sync twin: bias of the hypergradient estimate", body, started, argv)


def run_estimator_study(config: StudyConfig, argv: Sequence[str]) -> None:
    """``--estimators``: bias and SNR of each λ-term estimator on the chosen benchmarks, written to estimators.md."""
    _prepare_output(config)
    units = 200 if config.quick else config.estimators_units
    twin = ResyncConfig(penalty_weight=config.estimators_weight, b_steps=100 if config.quick else 1000)
    started = time.perf_counter()
    body = estimator_report({name: BENCHMARKS[name]() for name in config.benchmarks}, twin, units)
    write_report(config, "estimators.md", "# Estimators of the λ-term: bias against the exact term and signal per "
                 "transition", body, started, argv)


def write_report(config: StudyConfig, name: str, title: str, body: str, started: float, argv: Sequence[str]) -> None:
    """Write a study's Markdown report under its title and the command that made it, and print it."""
    elapsed = time.perf_counter() - started
    command = "python -m pref_brl.experiments.gridworld " + " ".join(argv)
    (config.out / name).write_text(f"{title}\n\nCommand: `{command.strip()}` — {elapsed:.0f} s.\n\n{body}")
    print(body)
    print(f"wrote {name} to {config.out} in {elapsed:.1f} s")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``pref-brl-gridworld`` / ``python -m pref_brl.experiments.gridworld``; 2 after one `error:`
    line."""
    argv = list(sys.argv[1:] if argv is None else argv)
    config = parse(StudyConfig, "pref-brl-gridworld", args=argv, description=HELP)
    try:
        check_config(config)  # the values given, before --quick shortens them
    except StudyConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if config.quick:
        config = replace(config, iterations=40, seeds=config.seeds[:1])
    if config.resync:
        run_resync_study(config, argv)
        return 0
    if config.estimators:
        run_estimator_study(config, argv)
        return 0
    run_study(config, argv)
    return 0


def run_study(config: StudyConfig, argv: Sequence[str]) -> None:
    """Every method on every chosen benchmark, the penalty bias, the plots and results.md."""
    _prepare_output(config)
    started = time.perf_counter()
    sections, plots = [], []
    for name in config.benchmarks:
        section, written = run_benchmark(name, config)
        sections.append(section)
        plots += written
        print(section, flush=True)
    lams = BIAS_LAMBDAS[::3] if config.quick else BIAS_LAMBDAS
    curves = {name: penalty_bias(BENCHMARKS[name](), lams) for name in config.benchmarks}
    plots.append(plot_penalty_bias(curves, config.out).name)
    bias_lines = [f"- {name}: fitted slope {slope:.3f} over λ ∈ [{lams[0]:g}, {lams[-1]:g}]"
                  for name, (_, _, slope) in curves.items()]
    elapsed = time.perf_counter() - started
    report = _report(config, argv, sections, bias_lines, plots, elapsed)
    (config.out / "results.md").write_text(report)
    print("\n".join(bias_lines))
    print(f"wrote {len(plots)} plots and results.md to {config.out} in {elapsed:.1f} s")


def _report(config: StudyConfig, argv: Sequence[str], sections: list[str], bias: list[str],
            plots: list[str], elapsed: float) -> str:
    command = "python -m pref_brl.experiments.gridworld " + " ".join(argv)
    return "\n".join([
        "# Tabular bilevel study", "",
        f"Command: `{command.strip()}` — iterations {config.iterations}, seeds {list(config.seeds)}, "
        f"{elapsed:.0f} s.", "",
        "F and ‖∇F‖ are exact (soft policy iteration + adjoint solve) at the final iterate; sampled variants are"
        " averaged over seeds. Cost is environment transitions for sampled variants and exact lower-level"
        " calls for exact ones.", "",
        *sections, "### Penalty gradient bias ‖∇L*_λ − ∇F‖ against λ (exact inner solves)", "", *bias, "",
        "Plots: " + ", ".join(plots), "",
    ])


if __name__ == "__main__":
    sys.exit(main())
