"""The bad-input table: every program answers bad input with one `error:` line on stderr naming the
problem (and the fix), a non-zero exit, and no partial folder left behind."""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path

import pytest

from experiments.bench import main as bench_main
from experiments.label import main as label_main
from experiments.plot import main as plot_main
from experiments.sweep import main as sweep_main
from experiments.train import main as train_main

PROGRAMS = {"train": train_main, "sweep": sweep_main, "plot": plot_main, "bench": bench_main, "label": label_main}
PEBBLE = ["--method", "pebble"]
HUMAN = [*PEBBLE, "--teacher", "human"]

# (program, arguments ({tmp} is a scratch folder), a fragment the error line must contain)
BAD_INPUTS = [
    ("train", ["--env", "walker_run"], "unknown env 'walker_run'; known: walker_walk"),
    ("train", ["--method", "dqn"], "invalid choice 'dqn' for argument '--method'"),
    ("train", [*PEBBLE, "--teacher", "sloppy"], "unknown teacher 'sloppy'; known: oracle"),
    ("train", [*PEBBLE, "--query", "random"], "unknown query strategy 'random'; known: uniform"),
    ("train", [*PEBBLE, "--max-feedback", "-5"], "--max-feedback must be positive"),
    ("train", [*PEBBLE, "--max-feedback", "0"], "--max-feedback must be positive"),
    ("train", [*PEBBLE, "--max-feedback", "5", "--reward-batch", "10"], "smaller than one round"),
    ("train", [*PEBBLE, "--steps", "5000"], "ends before the first feedback round"),
    ("train", ["--steps", "abc"], "Error parsing --steps"),
    ("train", ["--stepz", "5"], "did you mean --steps?"),
    ("train", ["--preset", "gpu"], "unknown preset 'gpu'; known presets: cpu, paper"),
    ("train", ["--batch-size", "0"], "--batch-size, --hidden-dim must be positive"),
    ("train", ["--method", "bilevel", "--penalty-weight", "-1"], "--penalty-weight must be a finite number >= 0"),
    ("train", ["--method", "bilevel", "--penalty-weight", "inf"], "--penalty-weight must be a finite number >= 0"),
    ("train", ["--method", "bilevel", "--kl-target", "0"], "--kl-target must be a positive number"),
    ("train", ["--method", "bilevel", "--kl-target", "nan"], "--kl-target must be a positive number"),
    ("train", ["--method", "bilevel", "--psi-clip", "1.5"], "--psi-clip must be in (0, 1)"),
    ("train", ["--method", "bilevel", "--b-updates", "-1"], "--b-updates must be >= 0"),
    ("train", ["--method", "bilevel", "--penalty-steps", "0"], "--penalty-steps must be >= 1"),
    ("train", ["--method", "bilevel", "--heldout-pairs", "10"], "--heldout-pairs must be in [0, --paired-episodes)"),
    ("train", ["--method", "bilevel", "--pair-horizon", "2000"], "--pair-horizon must be in [1, 1000]"),
    ("train", ["--method", "bilevel", "--paired-episodes", "30"], "do not fit between two feedback rounds"),
    ("train", ["--method", "bilevel", "--snr-min", "-1"], "--snr-min must be a finite number >= 0"),
    ("train", ["--method", "bilevel", "--snr-min", "inf"], "--snr-min must be a finite number >= 0"),
    ("train", ["--method", "bilevel", "--query-agent", "C"], "invalid choice 'C'"),
    ("train", ["--method", "bilevel", "--estimator", "branches"], "invalid choice 'branches'"),
    ("train", ["--method", "bilevel", "--lr-episodes", "0"], "--lr-episodes must be >= 1"),
    ("train", ["--method", "bilevel", "--estimator", "branch", "--pair-horizon", "995"],
     "--estimator branch starts its 10 branches at distinct steps t < episode length 1000 - --pair-horizon 995"),
    ("train", ["--method", "bilevel", "--lr-window", "-1"], "--lr-window must be >= 0"),
    ("train", ["--method", "bilevel", "--lr-clip", "0.5"], "--lr-clip must be 0 (no cap) or a finite number >= 1"),
    ("train", ["--method", "bilevel", "--lr-clip", "inf"], "--lr-clip must be 0 (no cap) or a finite number >= 1"),
    ("train", [*PEBBLE, "--teacher", "no_such_module_xyz:label"], "cannot import teacher 'no_such_module_xyz:label'"),
    ("train", [*PEBBLE, "--reward-model", "ensembel"], "unknown reward model 'ensembel'; known: ensemble"),
    ("train", [*PEBBLE, "--reward-model", "no_such_module_xyz:make"], "cannot import reward model"),
    ("train", ["--method", "mrn", "--reward-model", "tests.user_plugins:make_linear"],
     "works on the members of PEBBLE's reward ensemble"),
    ("train", [*PEBBLE, "--reward-model", "tests.user_plugins:make_linear"], "ranks pairs by the disagreement"),
    ("train", [*PEBBLE, "--preferences", "{tmp}/missing.npz"], "--preferences: cannot read the preference file"),
    ("train", [*PEBBLE, "--preferences", "{tmp}/a_file"], "--preferences: cannot read the preference file"),
    ("train", ["--agent", "sb3-dqn"], "invalid choice 'sb3-dqn' for argument '--agent'"),
    ("train", ["--agent", "sb3-sac", "--method", "bilevel"], "--agent sb3-sac runs methods sac and pebble"),
    *([("train", ["--agent", "sb3-tqc"], "--agent sb3-tqc needs the sb3-contrib package")]
      if find_spec("sb3_contrib") is None else []),
    ("train", ["--run-dir", "{tmp}/a_file/run"], "cannot create the run folder"),
    ("train", ["--run-dir", "{tmp}/foreign"], "is not a pref-brl run folder"),
    ("sweep", ["--seeds"], "empty grid: no values for --seeds"),
    ("sweep", ["--methods", "pebble", "dagger"], "unknown method 'dagger'"),
    ("sweep", ["--envs", "walker_run"], "unknown env 'walker_run'"),
    ("sweep", ["--budgets", "3"], "smaller than one round"),
    ("sweep", ["--set", "hidden_dim"], "is not key=value"),
    ("sweep", ["--root", "{tmp}/a_file/runs"], "is not a writable folder"),
    ("sweep", ["--config", "{tmp}/missing.toml"], "cannot read study file"),
    ("sweep", ["--jobs", "many"], "Error parsing --jobs"),
    ("sweep", ["--signal-lead", "soon"], "Error parsing --signal-lead"),
    ("sweep", ["--signal-lead", "-5"], "--signal-lead must be >= 0"),
    ("sweep", ["--timeout-min", "1", "--signal-lead", "60"], "must be shorter than the job time limit"),
    ("sweep", ["--timeout-min", "0"], "--timeout-min must be >= 1"),
    ("sweep", ["--max-requeues", "-1"], "--max-requeues must be >= 0"),
    ("sweep", ["--max-requeues", "2.5"], "Error parsing --max-requeues"),
    ("plot", ["{tmp}/missing"], "is not a folder"),
    ("plot", ["{tmp}/empty"], "no run folders"),
    ("plot", ["{tmp}/empty", "--reps", "0"], "--final-window and --reps must be >= 1"),
    ("plot", ["{tmp}/empty", "--aggregate", "median"], "invalid choice 'median'"),
    ("bench", ["--only", "sac,gpu"], "unknown section(s) gpu; known:"),
    ("bench", ["--threads", "-2"], "--threads must be >= 0"),
    ("bench", ["--threads", "two"], "invalid int value: 'two'"),
    ("bench", ["--json", "{tmp}/a_file/bench.json"], "is not a writable folder"),
    ("bench", ["--quik"], "unrecognized arguments: --quik"),
    ("train", [*HUMAN, "--label-port", "-1"], "--label-port must be in [0, 65535]"),
    ("train", [*HUMAN, "--label-port", "70000"], "--label-port must be in [0, 65535]"),
    ("train", [*HUMAN, "--label-port", "any"], "Error parsing --label-port"),
    ("train", [*HUMAN, "--label-host", "my host"], "--label-host 'my host' is not an address or host name"),
    ("train", [*HUMAN, "--audit-teacher", "sloppy"], "unknown audit teacher 'sloppy'; known: oracle"),
    ("train", [*PEBBLE, "--audit-teacher", "oracle"], "--human-async and --audit-teacher go with --teacher human"),
    ("train", [*PEBBLE, "--human-async"], "--human-async and --audit-teacher go with --teacher human"),
    ("train", [*HUMAN, "--agent", "sb3-sac"], "--teacher human runs with our agent"),
    ("label", ["{tmp}/missing"], "is not a folder"),
    ("label", ["{tmp}/foreign"], "has no label database"),
    ("label", ["{tmp}/foreign", "--label-port", "-3"], "--label-port must be in [0, 65535]"),
    ("label", ["{tmp}/foreign", "--label-port", "x"], "invalid int value: 'x'"),
    ("label", [], "the following arguments are required: run_dir"),
]


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    (tmp_path / "a_file").write_text("not a folder", encoding="utf-8")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine", encoding="utf-8")
    (tmp_path / "empty").mkdir()
    return tmp_path


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else b"" for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("program, args, fragment", BAD_INPUTS,
                         ids=[f"{p}:{' '.join(a)}" for p, a, _ in BAD_INPUTS])
def test_bad_input_gets_one_clear_line(scratch: Path, monkeypatch, capsys, program, args, fragment) -> None:
    monkeypatch.chdir(scratch)  # default run folders (runs/...) would land here
    before = snapshot(scratch)
    argv = [a.replace("{tmp}", str(scratch)) for a in args]
    if program == "train":
        argv += ["--quiet"]
    try:
        code = PROGRAMS[program](argv)
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code not in (0, None)
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert fragment in lines[0]
    assert snapshot(scratch) == before  # nothing created, nothing touched


def test_table_is_large_enough() -> None:
    assert len(BAD_INPUTS) >= 20 and {p for p, _, _ in BAD_INPUTS} == set(PROGRAMS)
