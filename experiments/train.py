"""`pref-brl-train`: train one agent (sac, pebble, bilevel, sobirl, mrn) and write a run folder.

Defaults come from a named preset (`--preset cpu` or `--preset paper`) for the chosen `--env`; any
option given on the command line overrides the preset. Re-running the same command resumes the run.

Examples:
  pref-brl-train --env walker_walk --method pebble --seed 1
  pref-brl-train --env metaworld_door-open-v3 --method bilevel --penalty-weight 1.0
  pref-brl-train --print-presets
"""

from __future__ import annotations

import argparse
import sys

from pref_brl.cli import parse
from pref_brl.config import PRESETS, TrainConfig, describe_presets, preset_config

EXTRA_FLAGS = ("--print-presets", "--allow-config-change", "--quiet", "--detect-anomaly")
SIGNAL_EXIT = {"SIGINT": 130, "SIGTERM": 143}
EXTRA_HELP = ("\nExtra flags: --print-presets (show presets and exit), --allow-config-change (resume a run folder "
              "with changed options; a finished run with a larger --steps continues to it), --quiet (no progress "
              "output), --detect-anomaly (torch autograd anomaly detection: slow, names the operation that "
              "produced a NaN).")


def _pre_parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """Read the options that choose the defaults (preset, env) and the ones outside the config."""
    pre = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    pre.add_argument("--preset", default="cpu")
    pre.add_argument("--env", default=TrainConfig.env)
    pre.add_argument("--print-presets", action="store_true")
    pre.add_argument("--allow-config-change", action="store_true")
    pre.add_argument("--quiet", action="store_true")
    pre.add_argument("--detect-anomaly", action="store_true")
    try:
        known, _ = pre.parse_known_args(argv)
    except argparse.ArgumentError as exc:
        print(f"error: {exc} (see pref-brl-train --help)", file=sys.stderr)
        raise SystemExit(2) from None
    rest = [a for a in argv if a not in EXTRA_FLAGS]
    return known, rest


def parse_config(argv: list[str]) -> tuple[TrainConfig, argparse.Namespace]:
    known, rest = _pre_parse(argv)
    if known.preset not in PRESETS:
        print(f"error: unknown preset {known.preset!r}; known presets: {', '.join(PRESETS)}", file=sys.stderr)
        raise SystemExit(2)
    default = preset_config(known.preset, known.env)
    description = (__doc__ or "") + EXTRA_HELP
    cfg = parse(TrainConfig, "pref-brl-train", args=rest, default=default, description=description)
    return cfg, known


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    cfg, known = parse_config(argv)
    if known.print_presets:
        print(describe_presets())
        return 0
    import torch

    from pref_brl.checkpoint import CheckpointError
    from pref_brl.runs import RunFolderError
    from pref_brl.training import make_trainer
    from pref_brl.validate import ConfigError, validate

    torch.autograd.set_detect_anomaly(known.detect_anomaly)
    try:
        validate(cfg)
        trainer = make_trainer(cfg, progress=not known.quiet, allow_config_change=known.allow_config_change)
        trainer.train()
    except (ConfigError, RunFolderError, CheckpointError, FloatingPointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if trainer.interrupted:
        return SIGNAL_EXIT.get(trainer.interrupted, 1)
    print(f"run folder: {trainer.run_dir}  (tensorboard --logdir {trainer.run_dir})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
