"""`pref-brl-reward-check`: how a preference run's learned reward scores its own agent's behaviour and other
runs' agents' (SAC on the true reward, say), on the same reset seeds.

It tells a reward that does not reward the behaviour that solves the task from an agent that has not got there
yet: if a policy that solves the task has a higher learned return than the run's own agent and the learned
reward orders their segments as the true one does (the cross-pair accuracy), the reward would lead there. The
run folders are only read.

Examples:
  pref-brl-reward-check runs/door-v1/metaworld_door-open-v3/pebble/budget1000/oracle/seed1 \\
      --against runs/door-v1/metaworld_door-open-v3/sac/seed0 --out reward-check.md
  pref-brl-reward-check RUN --against SAC_RUN OTHER_RUN --episodes 10 --seed 3
  pref-brl-reward-check RUNNING_RUN --against SAC_RUN --watch checks/   # a check at every checkpoint, to the end
  pref-brl-reward-check DOOR_RUN --expert   # Meta-World's scripted policy for the task, no trained run needed
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import torch
import tyro

from pref_brl.cli import parse
from pref_brl.reward_check import RewardCheckError, check_reward, to_markdown, watch, write_check


@dataclass(frozen=True)
class RewardCheckArgs:
    """Which run's learned reward, scored on which agents' episodes."""

    run_dir: tyro.conf.Positional[Annotated[str, tyro.conf.arg(metavar="RUN_DIR")]]
    """a preference run folder (pebble, bilevel, sobirl, mrn) with a checkpoint after a feedback round"""
    against: tuple[str, ...] = ()
    """run folders of the same env whose agent A is scored too (e.g. a sac run on the true reward)"""
    expert: bool = False
    """also score Meta-World's scripted policy for the run's task (metaworld.policies), which solves it with no
    training: a policy that succeeds, on a Meta-World run, without a sac run to hand"""
    episodes: int = 5
    """deterministic episodes per policy, on reset seeds 1000·seed + 0, 1, ..."""
    seed: int = 0
    """the environment's seed and the reset seeds' block"""
    out: str = ""
    """also write the table to this markdown file (and the numbers to <out>.json)"""
    watch: str = ""
    """keep checking: a check of each new checkpoint of RUN_DIR while it trains, until it has finished, each
    written to this folder as step<N>.md and step<N>.json (N the checkpoint's step); each checkpoint is kept in
    its .pending folder from when it appears until checked, so a slow check skips none; re-run to go on where it
    stopped (steps already there are kept)"""
    poll: float = 60.0
    """--watch: seconds between looks at whether the run has finished or stopped (new checkpoints are kept
    within 2 s, or --poll if shorter)"""
    threads: int = 1
    """torch CPU threads (0: torch's default)"""


def check_out(out: str) -> None:
    if not out:
        return
    path = Path(out)
    if path.is_dir():
        raise RewardCheckError(f"--out {path} is a folder; name a file (e.g. {path}/reward-check.md)")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise RewardCheckError(f"cannot write --out {path}: {parent} is not a writable folder")


def main(argv: list[str] | None = None) -> int:
    args = parse(RewardCheckArgs, "pref-brl-reward-check", args=sys.argv[1:] if argv is None else argv,
                 description=__doc__)
    try:
        if args.threads < 0:
            raise RewardCheckError(f"--threads must be >= 0 (0: torch's default), got {args.threads}")
        if args.watch and args.out:
            raise RewardCheckError("--watch writes a check per checkpoint into its folder and --out one check to a "
                                   "file: choose one")
        check_out(args.out)
        if args.threads > 0:
            torch.set_num_threads(args.threads)
        if args.watch:
            steps = watch(args.run_dir, args.against, args.watch, args.episodes, args.seed, args.poll,
                          progress=lambda line: print(line, flush=True), expert=args.expert)
            print(f"{args.run_dir} has finished; checks of steps {', '.join(map(str, steps)) or '(none)'} are in "
                  f"{args.watch}")
            return 0
        result = check_reward(args.run_dir, args.against, args.episodes, args.seed,
                              progress=lambda line: print(line, flush=True), expert=args.expert)
    except RewardCheckError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if args.watch:
            print(f"stopped; the checks written so far are kept in {args.watch}: run the same command to go on",
                  file=sys.stderr)
        return 130
    print(to_markdown(result))
    if args.out:
        out = Path(args.out)
        write_check(result, out, out.with_name(out.name + ".json"))
        print(f"wrote {out} and {out.name}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
