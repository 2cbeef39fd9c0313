"""The bad-input table: every program answers bad input with one `error:` line on stderr naming the
problem (and the fix), exit code 2, and nothing created or touched (no run folder, lock or plots folder)."""

from __future__ import annotations

import fcntl
import json
import socket
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest
import torch

from pref_brl.experiments.archive import main as archive_main
from pref_brl.experiments.bench import main as bench_main
from pref_brl.experiments.estimators import main as estimators_main
from pref_brl.experiments.gridworld import main as gridworld_main
from pref_brl.experiments.label import main as label_main
from pref_brl.experiments.plot import main as plot_main
from pref_brl.experiments.reward_check import main as reward_check_main
from pref_brl.experiments.sweep import main as sweep_main
from pref_brl.experiments.train import main as train_main

PROGRAMS = {"train": train_main, "sweep": sweep_main, "plot": plot_main, "bench": bench_main, "label": label_main,
            "gridworld": gridworld_main, "archive": archive_main, "estimators": estimators_main,
            "reward-check": reward_check_main}
PEBBLE = ["--method", "pebble"]
HUMAN = [*PEBBLE, "--teacher", "human"]
NO_CUDA = not torch.cuda.is_available()
BAD_GL = {"MUJOCO_GL": "nonsense"}  # MuJoCo refuses to start with this back-end
GW = ["--quick", "--out", "{tmp}/gw"]  # --quick shortens a study, but the values given are checked

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
    ("train", ["--method", "bilevel", "--snr-min", "1", "--estimator", "shared-states"],
     "--estimator shared-states has no SNR"),
    ("train", ["--method", "bilevel", "--snr-min", "1", "--paired-episodes", "3", "--heldout-pairs", "2"],
     "needs at least 2 units for an SNR"),
    ("train", ["--method", "bilevel", "--snr-min", "1", "--estimator", "likelihood-ratio", "--lr-episodes", "1"],
     "needs at least 2 units for an SNR, but --lr-episodes gives 1"),
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
    ("train", [*PEBBLE, "--uncertainty-bonus", "-0.1"], "--uncertainty-bonus must be >= 0"),
    ("train", [*PEBBLE, "--uncertainty-bonus", "nan"], "--uncertainty-bonus must be >= 0"),
    ("train", [*PEBBLE, "--uncertainty-bonus", "0.05", "--uncertainty-decay", "1"],
     "--uncertainty-decay must be in [0, 1)"),
    ("train", [*PEBBLE, "--uncertainty-decay", "-1e-5"], "--uncertainty-decay must be in [0, 1)"),
    ("train", [*PEBBLE, "--uncertainty-bonus", "inf"], "--uncertainty-bonus must be a finite number >= 0"),
    ("train", [*PEBBLE, "--uncertainty-decay", "1e-5"], "which is off (--uncertainty-bonus 0): set both or neither"),
    ("train", [*PEBBLE, "--uncertainty-bonus", "0.05", "--ensemble-size", "1", "--query", "uniform"],
     "--ensemble-size 1 has none to disagree"),
    ("train", [*PEBBLE, "--query", "uniform", "--reward-model", "tests.user_plugins:make_linear",
               "--uncertainty-bonus", "0.05"], "--uncertainty-bonus is the disagreement of PEBBLE's reward ensemble"),
    ("train", [*PEBBLE, "--agent", "sb3-sac", "--uncertainty-bonus", "0.05"], "learns from SB3's own buffer"),
    ("train", [*PEBBLE, "--preferences", "{tmp}/missing.npz"], "--preferences: cannot read the preference file"),
    ("train", [*PEBBLE, "--preferences", "{tmp}/a_file"], "--preferences: {tmp}/a_file is not an .npz file"),
    ("train", ["--agent", "sb3-dqn"], "invalid choice 'sb3-dqn' for argument '--agent'"),
    ("train", ["--agent", "sb3-sac", "--method", "bilevel"], "--agent sb3-sac runs methods sac and pebble"),
    *([("train", ["--agent", "sb3-tqc"], "--agent sb3-tqc needs the sb3-contrib package")]
      if find_spec("sb3_contrib") is None else []),
    ("train", ["--run-dir", "{tmp}/a_file/run"], "lies under"),
    ("train", ["--run-dir", "{tmp}/foreign"], "is not a pref-brl run folder"),
    ("sweep", ["--seeds"], "empty grid: no values for --seeds"),
    ("sweep", ["--methods", "pebble", "dagger"], "unknown method 'dagger'"),
    ("sweep", ["--envs", "walker_run"], "unknown env 'walker_run'"),
    ("sweep", ["--budgets", "3"], "smaller than one round"),
    ("sweep", ["--set", "hidden_dim"], "is not key=value"),
    ("sweep", ["--root", "{tmp}/a_file/runs"], "the study folder (--root/--name) {tmp}/a_file/runs/study lies under"),
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
    ("bench", ["--threads", "-2"], "--threads must be in [0, 1024]"),
    ("bench", ["--threads", "two"], "invalid int value: 'two'"),
    ("bench", ["--json", "{tmp}/a_file/bench.json"], "{tmp}/a_file is a file, not a folder"),
    ("bench", ["--quik"], "unrecognized arguments: --quik"),
    ("train", [*HUMAN, "--label-port", "-1"], "--label-port must be in [0, 65535]"),
    ("train", [*HUMAN, "--label-port", "70000"], "--label-port must be in [0, 65535]"),
    ("train", [*HUMAN, "--label-port", "any"], "Error parsing --label-port"),
    ("train", [*HUMAN, "--label-host", "my host"], "--label-host 'my host' is not an address or host name"),
    ("train", [*HUMAN, "--audit-teacher", "sloppy"], "unknown audit teacher 'sloppy'; known: oracle"),
    ("train", [*PEBBLE, "--audit-teacher", "oracle"], "--human-async and --audit-teacher go with --teacher human"),
    ("train", [*PEBBLE, "--human-async"], "--human-async and --audit-teacher go with --teacher human"),
    ("train", [*HUMAN, "--agent", "sb3-sac"], "--teacher human runs with our agent"),
    ("archive", ["{tmp}/missing", "--out", "{tmp}/o"], "is not a folder"),
    ("archive", ["{tmp}/empty", "--out", "{tmp}/o"], "no run folders"),
    ("archive", ["{tmp}/study", "--out", "{tmp}/a_file/o"], "is not a writable folder"),
    ("archive", ["{tmp}/study", "--out", "{tmp}/study/archive"], "is inside"),
    ("archive", ["{tmp}/study"], "--out"),
    ("archive", ["{tmp}/study", "--out", "{tmp}/o", "--force"], "--force"),
    ("label", ["{tmp}/missing"], "is not a folder"),
    ("label", ["{tmp}/foreign"], "has no label database"),
    ("label", ["{tmp}/foreign", "--label-port", "-3"], "--label-port must be in [0, 65535]"),
    ("label", ["{tmp}/foreign", "--label-port", "x"], "invalid int value: 'x'"),
    ("label", [], "the following arguments are required: run_dir"),
    # --- measured by hand on main: tracebacks, late or misleading errors, silently accepted input
    *([("train", ["--device", "cuda"], "--device cuda: this torch is built without CUDA")] if NO_CUDA else []),
    ("train", ["--run-dir", "{tmp}/a_file"], "--run-dir {tmp}/a_file is a file, not a folder"),
    ("train", [*PEBBLE, "--preferences", "{tmp}/truncated.npz"], "truncated.npz is not an .npz file"),
    ("train", [*PEBBLE, "--preferences", "{tmp}/text.npz"], "text.npz is not an .npz file"),
    ("plot", ["{tmp}/study", "--out", "{tmp}/a_file/plots"], "--out {tmp}/a_file/plots lies under"),
    ("train", ["--num-eval-episodes", "0"], "--num-eval-episodes must be in [1, 1000]"),
    ("sweep", ["--jobs", "-1", "--dry-run"], "--jobs must be >= 0"),
    ("train", HUMAN, "--teacher human: MuJoCo cannot render here (MUJOCO_GL=nonsense", BAD_GL),
    ("plot", ["{tmp}/study", "--metric", "eval/mean_rewrd"], "is logged by no run; logged: eval/mean_reward"),
    ("plot", ["{tmp}/study", "--label", "pebble"], "--label takes NAME=TEXT"),
    ("plot", ["{tmp}/study", "--label", "dagger=x"], "--label: no group is named 'dagger'"),
    ("plot", ["{tmp}/study", "--label", "pebble=a", "--label", "pebble=b"], "--label given twice: only the last"),
    ("sweep", ["--set", "lr=0.001", "--set", "hidden_dim", "--dry-run"], "is not key=value"),  # --set may repeat
    ("sweep", ["--seeds", "0", "--seeds", "1", "--dry-run"], "--seeds given twice: only the last would count"),
    ("train", ["--compile", "--no-compile"], "--compile and --no-compile both given"),
    ("plot", ["{tmp}/study", "--compare", "x:pebble"], "--compare: unknown method(s) x"),
    ("gridworld", ["--benchmarks", "cartpole", *GW], "unknown benchmark(s) ['cartpole']"),
    ("sweep", ["--teachers", "human", "--dry-run"], "a sweep runs unattended"),
    *([("sweep", ["--set", "device=cuda", "--dry-run"], "--device cuda: this torch is built without CUDA")]
      if NO_CUDA else []),
    # --- ranges of ordinary training fields (NaN and inf included)
    ("train", ["--lr", "0"], "--lr must be in (0, 1]"),
    ("train", ["--lr", "nan"], "--lr must be in (0, 1]"),
    ("train", ["--lr", "3e4"], "--lr must be in (0, 1]"),
    ("train", ["--alpha-lr", "inf"], "--alpha-lr must be in (0, 1]"),
    ("train", [*PEBBLE, "--reward-lr", "-0.1"], "--reward-lr must be in (0, 1]"),
    ("train", ["--discount", "1"], "--discount must be in [0, 1)"),
    ("train", ["--tau", "1.5"], "--tau must be in (0, 1]"),
    ("train", ["--init-temperature", "0"], "--init-temperature must be a positive finite number"),
    ("train", ["--batch-size", "512", "--replay-capacity", "100"], "--batch-size 512 is larger than the replay"),
    ("train", [*PEBBLE, "--segment", "2000"], "--segment 2000 is longer than an episode (1000 steps)"),
    ("train", ["--max-episode-steps", "5000"], "--max-episode-steps must be in [0, 1000]"),
    ("train", ["--target-update-every", "0"], "--target-update-every must be >= 1"),
    ("train", [*PEBBLE, "--ensemble-size", "0"], "--ensemble-size must be >= 1"),
    ("train", [*PEBBLE, "--query-episodes", "0"], "--query-episodes must be >= 1"),
    ("train", ["--method", "sobirl", "--sobirl-warmup", "-1"], "--sobirl-warmup must be >= 0"),
    ("train", ["--num-seed-steps", "200000"], "--num-seed-steps 200000 leaves no step to learn in"),
    ("train", ["--seed", "-1"], "--seed must be in [0, 4293966]"),
    ("train", ["--seed", "5000000000"], "--seed must be in [0, 4293966]"),
    ("train", ["--threads", "-1"], "--threads must be in [0, 1024]"),
    ("train", ["--steps", "10000000000000"], "the replay buffer of 10,000,000,000,000 transitions needs"),
    ("train", ["--device", "gpu"], "--device 'gpu' is not a torch device"),
    ("train", ["--device", "cuda:99"], "--device cuda:99"),
    # --- paths: a file where a folder goes, too long, a folder in use
    ("train", ["--run-dir", "{tmp}/" + "x" * 300], "the path is too long for the file system"),
    ("train", ["--run-dir", "{tmp}/locked"], "{tmp}/locked is in use by another process"),
    ("train", ["--video-every", "1"], "--video-every: MuJoCo cannot render here", BAD_GL),
    ("train", [*HUMAN, "--label-port", "{port}"], "cannot serve the labelling page on 127.0.0.1:{port}"),
    # --- the sweep: its own options, every --set value as train would check it, executors, study files
    ("sweep", ["--seeds", "-1", "--dry-run"], "seed-1: --seed must be in [0, 4293966]"),
    ("sweep", ["--name", "a/b"], "--name 'a/b' must be one folder name"),
    ("sweep", ["--name", ""], "--name '' must be one folder name"),
    ("sweep", ["--set", "lr=nan", "--dry-run"], "--lr must be in (0, 1]"),
    ("sweep", ["--set", "device=cuda:99", "--dry-run"], "--device cuda:99"),
    ("sweep", ["--status-every", "0"], "--status-every must be a positive number of seconds"),
    ("sweep", ["--mem-gb", "nan"], "--mem-gb must be a finite number >= 0"),
    ("sweep", ["--gpus", "0", "--dry-run"], "--gpus spreads runs over GPUs; it goes with --set device=cuda"),
    ("sweep", ["--executor", "slurm", "--dry-run"], "--executor slurm needs Slurm's sbatch", {"PATH": "{tmp}/empty"}),
    ("sweep", ["--config", "{tmp}/latin1.toml"], "study file {tmp}/latin1.toml is not UTF-8 text"),
    ("sweep", ["--config"], "argument --config: expected one argument"),
    # --- the plotter on damaged input and its own options
    ("plot", ["{tmp}/plot_json"], "none of the 1 run folders can be read"),
    ("plot", ["{tmp}/plot_keys"], "is not a run config (missing env, method, max_feedback)"),
    ("plot", ["{tmp}/plot_types"], "is not a run config (wrong type: env=5)"),
    ("plot", ["{tmp}/plot_middle"], "scalars.jsonl:2 is not a JSON record"),
    ("plot", ["{tmp}/plot_record"], "scalars.jsonl:2 is not a record with an integer step"),
    ("plot", ["{tmp}/plot_nan"], "scalars.jsonl:1 has a non-finite value (eval/mean_reward=nan"),
    ("plot", ["{tmp}/study", "--min-runs", "-1"], "--min-runs must be >= 0"),
    ("plot", ["{tmp}/study", "--formats", "pgn"], "--formats: pgn; matplotlib writes"),
    ("plot", ["{tmp}/study", "--compare", "bilevel:pebbel"], "--compare: unknown method(s) pebbel"),
    ("plot", ["{tmp}/study", "--env", "cheetah_run"], "envs found: walker_walk"),
    ("plot", ["{tmp}/a_file"], "{tmp}/a_file is not a folder"),
    # --- pref-brl-gridworld and pref-brl-bench: every option
    ("gridworld", ["--iterations", "0", *GW], "--iterations must be >= 1"),
    ("gridworld", ["--seeds", "-1", *GW], "--seeds must be one or more integers >= 0"),
    ("gridworld", ["--tolerance", "nan", *GW], "--tolerance must be in (0, 1]"),
    ("gridworld", ["--quick", "--out", "{tmp}/a_file/gw"], "--out {tmp}/a_file/gw lies under"),
    ("gridworld", ["--quick", "--out", "{tmp}/gw_done"], "already holds results.md; pass --overwrite"),
    ("gridworld", ["--resync", "--resync-pairs", "0", *GW], "--resync needs K_B >= 0"),
    ("gridworld", ["--resync", "--resync-weights", "inf", *GW], "--resync needs K_B >= 0"),
    ("gridworld", ["--iteratons", "5"], "did you mean --iterations?"),
    ("bench", ["--json", "{tmp}/empty"], "--json {tmp}/empty is a folder; give a file name"),
    ("bench", ["--threads", "5000"], "--threads must be in [0, 1024]"),
    # --- pref-brl-estimators: the run folder, every option, every part of a setting
    ("estimators", ["{tmp}/nowhere", "--out", "{tmp}/e.md"], "{tmp}/nowhere is not a folder"),
    ("estimators", ["{tmp}/empty", "--out", "{tmp}/e.md"], "is not a run folder (no config.json)"),
    ("estimators", ["{tmp}/study/run0", "--out", "{tmp}/e.md"], "is a pebble run; the λ-term's estimators need"),
    ("estimators", ["{tmp}/bilevel_run", "--out", "{tmp}/e.md"], "has no checkpoint yet"),
    ("estimators", ["{tmp}/bilevel_damaged", "--out", "{tmp}/e.md"],
     "(UnpicklingError)): measure another run folder"),
    ("estimators", ["{tmp}/plot_json/r", "--out", "{tmp}/e.md"], "is not a readable run config"),
    ("estimators", ["{tmp}/empty", "--out", "{tmp}/empty"], "--out {tmp}/empty is a folder"),
    ("estimators", ["{tmp}/empty", "--out", "{tmp}/a_file/e.md"], "is not a writable folder"),
    ("estimators", ["{tmp}/empty", "--out", "{tmp}/e.md", "--repeats", "0"], "--repeats must be >= 1"),
    ("estimators", ["{tmp}/empty", "--out", "{tmp}/e.md", "--reference-pairs", "3"], "--reference-pairs must be"),
    ("estimators", ["{tmp}/empty", "--out", "{tmp}/e.md", "--threads", "-1"], "--threads must be >= 0"),
    ("estimators", ["{tmp}/empty", "--out", "{tmp}/e.md", "--kl-target", "-1"], "--kl-target must be 0"),
    ("estimators", ["{tmp}/empty", "--out", "{tmp}/e.md", "--kl-target", "inf"], "--kl-target must be 0"),
    ("estimators", ["{tmp}/empty", "--out", "{tmp}/e.md", "--settings", "shared-states"],
     "unknown estimator 'shared-states'; known (with an SNR)"),
    ("estimators", ["{tmp}/empty", "--out", "{tmp}/e.md", "--settings", "branch+pair_horizon"], "is not key=value"),
    ("estimators", ["{tmp}/empty", "--out", "{tmp}/e.md", "--settings", "branch+kl_target=1"],
     "kl_target is not an estimator setting"),
    ("estimators", ["{tmp}/empty", "--out", "{tmp}/e.md", "--settings", "branch+pair_horizon=ten"],
     "setting 'branch+pair_horizon=ten'"),
    ("estimators", ["{tmp}/empty", "--out", "{tmp}/e.md", "--settings", "branch+source=fresh"],
     "source is for likelihood-ratio"),
    ("estimators", ["{tmp}/empty", "--out", "{tmp}/e.md", "--settings", "likelihood-ratio+source=old"],
     "source is for likelihood-ratio, one of stored, fresh"),
    ("bench", ["--only", ","], "unknown section(s) (none given)"),
    # --- pref-brl-reward-check: the run folders, their checkpoints and envs, every option
    ("reward-check", ["{tmp}/nowhere"], "{tmp}/nowhere is not a folder: name a run folder"),
    ("reward-check", ["{tmp}/empty"], "is not a pref-brl run folder (no config.json)"),
    ("reward-check", ["{tmp}/plot_json/r"], "config.json is not a readable run config"),
    ("reward-check", ["{tmp}/study/run0"], "run0 has no checkpoint yet"),
    ("reward-check", ["{tmp}/bilevel_damaged"], "(UnpicklingError)"),
    ("reward-check", ["{tmp}/finished"], "is a sac run: it learns from the true reward and has no learned reward"),
    ("reward-check", ["{tmp}/study/run0", "--against", "{tmp}/empty"], "empty is not a pref-brl run folder"),
    ("reward-check", ["{tmp}/finished", "--watch", "{tmp}/checks"], "is a sac run: it learns from the true reward"),
    ("reward-check", ["{tmp}/study/run0", "--watch", "{tmp}/a_file"], "--watch {tmp}/a_file is a file, not a folder"),
    ("reward-check", ["{tmp}/study/run0", "--watch", "{tmp}/a_file/checks"], "--watch {tmp}/a_file/checks lies under"),
    ("reward-check", ["{tmp}/study/run0", "--watch", "{tmp}/checks", "--poll", "0"],
     "--poll must be in [0.1, 86400] seconds, got 0.0"),
    ("reward-check", ["{tmp}/study/run0", "--watch", "{tmp}/checks", "--poll", "nan"], "--poll must be in [0.1,"),
    ("reward-check", ["{tmp}/study/run0", "--watch", "{tmp}/checks", "--poll", "1e300"], "--poll must be in"),
    ("reward-check", ["{tmp}/study/run0", "--watch", "{tmp}/checks", "--out", "{tmp}/c.md"], "choose one"),
    ("reward-check", ["{tmp}/study/run0", "--watch", "{tmp}/checks", "--episodes", "0"], "--episodes must be >= 1"),
    ("reward-check", ["{tmp}/study/run0", "--against", "{tmp}/door_run"],
     "is a metaworld_door-open-v3 run and {tmp}/study/run0 a walker_walk run: compare runs of one environment"),
    ("reward-check", ["{tmp}/study/run0", "--episodes", "0"], "--episodes must be >= 1"),
    ("reward-check", ["{tmp}/study/run0", "--out", "{tmp}/empty"], "--out {tmp}/empty is a folder"),
    ("reward-check", ["{tmp}/study/run0", "--out", "{tmp}/a_file/c.md"], "is not a writable folder"),
    ("reward-check", ["{tmp}/study/run0", "--threads", "-1"], "--threads must be >= 0"),
    ("reward-check", ["{tmp}/study/run0", "--episodes", "two"], "Error parsing --episodes"),
    ("reward-check", ["{tmp}/study/run0", "--seed", "-1"], "--seed must be in [0, 4294967] (its reset seeds"),
    ("reward-check", ["{tmp}/study/run0", "--seed", "4294968"], "--seed must be in [0, 4294967]"),
    # --- a finished run continued (--allow-config-change, --extend): only to more steps, from a checkpoint
    ("train", ["--run-dir", "{tmp}/finished", "--steps", "20000", "--lr", "0.001", "--allow-config-change"],
     "holds a finished run (step 20000); a changed config applies only to steps still to run"),
    ("train", ["--run-dir", "{tmp}/finished", "--steps", "10000", "--allow-config-change"],
     "give a --steps above 20000 to continue it"),
    ("train", ["--run-dir", "{tmp}/finished", "--steps", "30000"],
     "pass --allow-config-change to continue it to the new --steps"),
    ("train", ["--run-dir", "{tmp}/archived", "--steps", "30000", "--allow-config-change"],
     "finished at step 20000 but no checkpoint to continue it from"),
    ("train", ["--run-dir", "{tmp}/done_damaged", "--steps", "30000", "--allow-config-change"],
     "done.json does not say at which step the run finished, so a changed config cannot continue it"),
    ("train", ["--run-dir", "{tmp}/finished_sb3", "--agent", "sb3-sac", "--steps", "30000", "--allow-config-change"],
     "changing --steps works for --agent sac only"),
    ("train", ["--run-dir", "{tmp}/partial_sb3", "--agent", "sb3-sac", "--steps", "30000", "--allow-config-change"],
     "changing --steps works for --agent sac only"),
    ("train", ["--run-dir", "{tmp}/partial_sb3", "--agent", "sb3-sac", "--steps", "30000"],
     "use another --run-dir, or pass --allow-config-change to resume anyway"),
    ("sweep", ["--root", "{tmp}", "--name", "studied_nostep", "--set", "steps=30000", "--extend"],
     "done.json does not say at which step the run finished"),
    ("sweep", ["--root", "{tmp}", "--name", "studied", "--set", "steps=30000"],
     "(or --extend to continue its runs to the new steps)"),
    ("sweep", ["--root", "{tmp}", "--name", "studied", "--set", "steps=30000", "--set", "lr=0.001", "--extend"],
     "holds a run with a different config (lr: 0.0005 -> 0.001; steps: 20000 -> 30000)"),
    ("sweep", ["--root", "{tmp}", "--name", "studied", "--set", "steps=10000", "--extend"],
     "holds a run with a different config (steps: 20000 -> 10000)"),
    ("sweep", ["--root", "{tmp}", "--name", "studied_archive", "--set", "steps=30000", "--extend"],
     "but no checkpoint to continue it from"),
]


RUN_CONFIG = {"env": "walker_walk", "method": "pebble", "seed": 0, "max_feedback": 100}


def plot_run(folder: Path, config: object = None, scalars: str = "") -> None:
    """A run folder as the plotter reads it (config.json and scalars.jsonl), damaged where asked."""
    folder.mkdir(parents=True)
    text = config if isinstance(config, str) else json.dumps(RUN_CONFIG if config is None else config)
    (folder / "config.json").write_text(text, encoding="utf-8")
    good = '{"step": 1000, "eval/mean_reward": 1.5, "feedback/total": 10}\n'
    (folder / "scalars.jsonl").write_text(scalars or good, encoding="utf-8")


def finished_run(folder: Path, argv: list[str], checkpoint: bool = True, done: str | None = '{"step": 20000}') -> None:
    """A run folder as pref-brl-train `argv` leaves it when it has run 20,000 steps (no networks: whatever
    loads the checkpoint comes after the checks)."""
    from pref_brl.experiments.train import parse_config

    cfg, _ = parse_config([*argv, "--run-dir", str(folder), "--steps", "20000"])
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(cfg.to_json(), encoding="utf-8")
    if done is not None:  # None: a run stopped before its end
        (folder / "done.json").write_text(done, encoding="utf-8")
    if checkpoint:
        (folder / "checkpoint.pt").write_bytes(b"the networks")


@pytest.fixture
def scratch(tmp_path: Path):
    (tmp_path / "a_file").write_text("not a folder", encoding="utf-8")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine", encoding="utf-8")
    (tmp_path / "empty").mkdir()
    np.savez_compressed(tmp_path / "whole.npz", labels=np.zeros(1000))
    data = (tmp_path / "whole.npz").read_bytes()
    (tmp_path / "truncated.npz").write_bytes(data[: len(data) // 2])
    (tmp_path / "whole.npz").unlink()
    (tmp_path / "text.npz").write_text("labels: 1 0 1\n", encoding="utf-8")
    (tmp_path / "latin1.toml").write_bytes('name = "études"\n'.encode("latin-1"))
    plot_run(tmp_path / "study" / "run0")
    plot_run(tmp_path / "plot_json" / "r", '{"env": "walker_walk", "meth')
    plot_run(tmp_path / "bilevel_run", {**RUN_CONFIG, "method": "bilevel"})
    plot_run(tmp_path / "door_run", {**RUN_CONFIG, "env": "metaworld_door-open-v3"})
    plot_run(tmp_path / "bilevel_damaged", {**RUN_CONFIG, "method": "bilevel"})
    (tmp_path / "bilevel_damaged" / "checkpoint.pt").write_bytes(b"not a checkpoint")
    plot_run(tmp_path / "plot_keys" / "r", {"seed": 0})
    plot_run(tmp_path / "plot_types" / "r", {**RUN_CONFIG, "env": 5})
    plot_run(tmp_path / "plot_middle" / "r", scalars='{"step": 1, "eval/mean_reward": 1}\n{"step": 2, "ev\n{}\n')
    plot_run(tmp_path / "plot_record" / "r", scalars='{"step": 1, "eval/mean_reward": 1}\n[1, 2]\n')
    plot_run(tmp_path / "plot_nan" / "r", scalars='{"step": 1, "eval/mean_reward": NaN}\n')
    (tmp_path / "gw_done").mkdir()
    (tmp_path / "gw_done" / "results.md").write_text("an earlier study", encoding="utf-8")
    finished_run(tmp_path / "finished", [])
    finished_run(tmp_path / "archived", [], checkpoint=False)
    finished_run(tmp_path / "done_damaged", [], done='{"step": ')
    finished_run(tmp_path / "finished_sb3", ["--agent", "sb3-sac"])
    finished_run(tmp_path / "partial_sb3", ["--agent", "sb3-sac"], done=None)
    finished_run(tmp_path / "studied_nostep" / "walker_walk" / "pebble" / "budget100" / "oracle" / "seed0",
                 ["--method", "pebble", "--threads", "1"], done="{}")
    finished_run(tmp_path / "studied" / "walker_walk" / "pebble" / "budget100" / "oracle" / "seed0",
                 ["--method", "pebble", "--threads", "1"])
    finished_run(tmp_path / "studied_archive" / "walker_walk" / "pebble" / "budget100" / "oracle" / "seed0",
                 ["--method", "pebble", "--threads", "1"], checkpoint=False)
    (tmp_path / "locked").mkdir()
    (tmp_path / "locked" / "config.json").write_text("{}", encoding="utf-8")
    with (tmp_path / "locked" / "lock").open("a+") as lock, socket.socket() as busy:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a training process holds its run folder
        busy.bind(("127.0.0.1", 0))
        busy.listen()  # a port another server listens on
        yield tmp_path, str(busy.getsockname()[1])


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else b"" for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("program, args, fragment, env", [(*case, {})[:4] for case in BAD_INPUTS],
                         ids=[f"{c[0]}:{' '.join(c[1])}"[:120] + (" with " + " ".join(c[3]) if len(c) > 3 else "")
                              for c in BAD_INPUTS])
def test_bad_input_gets_one_clear_line(scratch, monkeypatch, capsys, program, args, fragment, env) -> None:
    tmp, port = scratch
    monkeypatch.chdir(tmp)  # default run folders (runs/...) would land here
    for key, value in env.items():
        monkeypatch.setenv(key, value.replace("{tmp}", str(tmp)))
    before = snapshot(tmp)
    argv = [a.replace("{tmp}", str(tmp)).replace("{port}", port) for a in args]
    if program == "train":
        argv += ["--quiet"]
    try:
        code = PROGRAMS[program](argv)
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert fragment.replace("{tmp}", str(tmp)).replace("{port}", port) in lines[0]
    assert snapshot(tmp) == before  # nothing created, nothing touched


def test_table_is_large_enough() -> None:
    assert len(BAD_INPUTS) >= 100 and {p for p, *_ in BAD_INPUTS} == set(PROGRAMS)


# ------------------------------------------------------------------------------------------ the library
def cli_error(capsys, argv: list[str]) -> str:
    """The message pref-brl-train prints after `error: ` for `argv`."""
    assert train_main([*argv, "--quiet"]) == 2
    return capsys.readouterr().err.strip().removeprefix("error: ")


@pytest.mark.parametrize("fields, argv", [
    (dict(run_dir="{tmp}/a_file"), ["--run-dir", "{tmp}/a_file"]),
    (dict(num_eval_episodes=0), ["--num-eval-episodes", "0"]),
    (dict(method="pebble", preferences="{tmp}/truncated.npz"), [*PEBBLE, "--preferences", "{tmp}/truncated.npz"]),
    (dict(lr=float("nan")), ["--lr", "nan"]),
])
def test_the_library_raises_one_valueerror_with_the_clis_message(scratch, monkeypatch, capsys, fields, argv) -> None:
    import pref_brl

    tmp, _ = scratch
    monkeypatch.chdir(tmp)
    fields = {k: v.replace("{tmp}", str(tmp)) if isinstance(v, str) else v for k, v in fields.items()}
    message = cli_error(capsys, [a.replace("{tmp}", str(tmp)) for a in argv])
    before = snapshot(tmp)
    with pytest.raises(pref_brl.ConfigError) as info:
        pref_brl.train(pref_brl.TrainConfig(**fields), progress=False)
    assert isinstance(info.value, ValueError) and str(info.value) == message
    assert snapshot(tmp) == before


@pytest.mark.parametrize("fields, message", [
    (dict(steps="3000"), "--steps (TrainConfig.steps) must be an integer, got '3000' (str)"),
    (dict(lr="fast"), "--lr (TrainConfig.lr) must be a number, got 'fast' (str)"),
    (dict(compile=1), "--compile (TrainConfig.compile) must be True or False, got 1 (int)"),
    (dict(method="dqn"), "--method must be one of sac, pebble, bilevel, sobirl, mrn, got 'dqn'"),
])
def test_wrong_types_from_python_are_one_configerror(tmp_path: Path, fields, message) -> None:
    import pref_brl

    with pytest.raises(pref_brl.ConfigError) as info:
        pref_brl.train(pref_brl.TrainConfig(run_dir=str(tmp_path / "run"), **fields), progress=False)
    assert str(info.value) == message and not (tmp_path / "run").exists()


def test_resuming_a_run_in_a_read_only_folder_is_refused(tmp_path: Path, monkeypatch) -> None:
    import os

    from pref_brl.validate import ConfigError, validate

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}", encoding="utf-8")
    real_access = os.access
    # as root every folder is writable, so the read-only folder is simulated where the check asks
    monkeypatch.setattr(os, "access", lambda path, mode: False if Path(path) == run else real_access(path, mode))
    from pref_brl.config import TrainConfig

    with pytest.raises(ConfigError, match=f"--run-dir {run} is not writable"):
        validate(TrainConfig(run_dir=str(run)))


def test_nothing_is_written_into_a_new_run_folder_before_its_lock(tiny) -> None:
    from pref_brl.runs import RunFolderError
    from pref_brl.trainer import Trainer

    cfg = tiny()
    run = Path(cfg.run_dir)
    run.mkdir()
    with (run / "lock").open("a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another process is starting the same new run
        with pytest.raises(RunFolderError, match="in use by another process"):
            Trainer(cfg, progress=False)
    assert sorted(p.name for p in run.iterdir()) == ["lock"]  # no config.json or versions.json of the loser
