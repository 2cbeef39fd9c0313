"""`pref-brl-estimators`: the λ-term's estimators side by side at a fixed checkpoint of a bilevel run.

For each repeat, agent B is re-solved from the checkpoint's agent A; a reference (many whole-episode A/B
pairs under common random numbers, drawn apart from everything else) estimates the round's λ-term; each
setting collects its own units as a run would, and reports its SNR over them (`bilevel/penalty_snr`), the
cosine of its mean gradient with the reference's and the extra env steps a run spends on it per round. The
run folder is only read. Settings are `estimator[+key=value...]` with the keys paired_episodes,
pair_horizon, lr_episodes, lr_window, lr_clip, and for likelihood-ratio source=stored (the run's episode
store, as a run uses it) or source=fresh (new episodes of the re-synced A). docs/bilevel.md reads its
tables.

Examples:
  pref-brl-estimators runs/dev/walker_walk/bilevel/seed10 --out runs/estimators-walker.md
  pref-brl-estimators RUN --settings paired-rollouts branch+pair_horizon=100 likelihood-ratio+lr_window=20 \\
      --repeats 2 --reference-pairs 20 --out est.md
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import torch
import tyro

from pref_brl.bilevel.measure import MeasureError, measure, parse_setting, table
from pref_brl.checkpoint import CheckpointError
from pref_brl.cli import parse

DEFAULT_SETTINGS = ("paired-rollouts", "paired-rollouts+pair_horizon=100+paired_episodes=20",
                    "branch+pair_horizon=50+paired_episodes=40", "branch+pair_horizon=200+paired_episodes=10",
                    "likelihood-ratio+lr_window=100", "likelihood-ratio+lr_window=20",
                    "likelihood-ratio+lr_window=100+source=fresh", "likelihood-ratio+lr_window=20+source=fresh")
"""At v2's 4000 extra env steps per round where an estimator takes any: the paired and branch settings."""


@dataclass(frozen=True)
class EstimatorArgs:
    """Which run's checkpoint, which settings, how many repeats."""

    run_dir: tyro.conf.Positional[Annotated[str, tyro.conf.arg(metavar="RUN_DIR")]]
    """a bilevel run folder with a checkpoint (only read)"""
    out: str
    """markdown file for the table; the rows go beside it as <out>.json"""
    settings: tuple[str, ...] = DEFAULT_SETTINGS
    """estimator settings, estimator[+key=value...]"""
    repeats: int = 3
    """rounds measured, each with B re-solved (B's generator seeded per repeat)"""
    reference_pairs: int = 40
    """whole-episode pairs of the reference estimate per repeat"""
    seed: int = 0
    """seeds the measurement's environment, B's solves and every draw"""
    threads: int = 1
    """torch CPU threads (0: torch's default)"""
    kl_target: float = 0.0
    """B's KL budget δ for the solves (0: the run's own): how far B may move from A"""


def check(args: EstimatorArgs):
    """The parsed settings; MeasureError for any bad argument, before anything runs or is written."""
    if args.threads < 0:
        raise MeasureError(f"--threads must be >= 0 (0: torch's default), got {args.threads}")
    if not (args.kl_target == 0 or 0 < args.kl_target < float("inf")):
        raise MeasureError(f"--kl-target must be 0 (the run's) or a positive finite number, got {args.kl_target}")
    if args.repeats < 1:
        raise MeasureError(f"--repeats must be >= 1, got {args.repeats}")
    if args.reference_pairs < 4:
        raise MeasureError(f"--reference-pairs must be >= 4 (two halves of two pairs for its split-half cosine), "
                           f"got {args.reference_pairs}")
    if not args.settings:
        raise MeasureError("--settings is empty: name at least one estimator setting")
    out = Path(args.out)
    if out.is_dir():
        raise MeasureError(f"--out {out} is a folder; name a file (e.g. {out}/estimators.md)")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise MeasureError(f"cannot write --out {out}: {parent} is not a writable folder")
    if not Path(args.run_dir).is_dir():
        raise MeasureError(f"{args.run_dir} is not a folder: name a bilevel run folder")
    return [parse_setting(spec) for spec in args.settings]


def main(argv: list[str] | None = None) -> int:
    args = parse(EstimatorArgs, "pref-brl-estimators", args=sys.argv[1:] if argv is None else argv,
                 description=__doc__)
    try:
        settings = check(args)
        if args.threads > 0:
            torch.set_num_threads(args.threads)
        measured = measure(Path(args.run_dir), settings, args.repeats, args.reference_pairs, args.seed,
                           progress=lambda line: print(line, flush=True), kl_target=args.kl_target)
    except (MeasureError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    text = table(measured)
    out.write_text(text, encoding="utf-8")
    out.with_name(out.name + ".json").write_text(measured.to_json(), encoding="utf-8")
    print(text)
    print(f"wrote {out} and {out.name}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
