"""`pref-brl-label RUN_DIR`: serve the labelling page of a run that is labelled by hand (`--teacher human`).

The training process serves the same page itself; this one lets you label from another terminal (or after
the training process has stopped: labels go straight to the run's database, and a resumed run takes them).
It prints one URL with a random access token; requests without the token are refused. Ctrl-C stops it.

Example:
  pref-brl-label runs/walker_walk/pebble/seed0 --label-port 8765
"""

from __future__ import annotations

import sys
from pathlib import Path

from pref_brl.cli import OneLineParser

PROG = "pref-brl-label"


def parse_args(argv: list[str]):
    parser = OneLineParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", help="the run folder of a run started with --teacher human")
    parser.add_argument("--label-host", default="127.0.0.1",
                        help="address to serve on (default 127.0.0.1: this machine only; 0.0.0.0: every network)")
    parser.add_argument("--label-port", type=int, default=0, help="port (default 0: any free port)")
    args = parser.parse_args(argv)
    if not 0 <= args.label_port <= 65535:
        parser.error(f"--label-port must be in [0, 65535] (0: any free port), got {args.label_port}")
    return parser, args


def main(argv: list[str] | None = None) -> int:
    parser, args = parse_args(list(sys.argv[1:] if argv is None else argv))
    from pref_brl.human.db import db_path
    from pref_brl.human.server import LabelServer

    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        parser.error(f"{run_dir} is not a folder")
    if not db_path(run_dir).is_file():
        parser.error(f"{run_dir} has no label database ({db_path(run_dir)}): start its training with "
                     "--teacher human first")
    try:
        server = LabelServer(run_dir, args.label_host, args.label_port)
    except OSError as exc:
        parser.error(f"cannot serve on {args.label_host}:{args.label_port} ({exc.strerror or exc})")
    print(f"labelling page: {server.url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
