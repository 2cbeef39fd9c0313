"""`pref-brl-sweep`: run a label-budget study (envs x methods x budgets x teachers x seeds, plus overrides).

Each grid point is one run folder, `<root>/<name>/<env>/<method>/budget<B>/<teacher>/seed<S>` (see
pref_brl.study). Finished runs (done.json) are skipped and interrupted ones resume, so re-running the same
command completes a study. Locally, runs go in parallel subprocesses (`--jobs`), one torch thread each unless
`--set threads=N`, one GPU each (CUDA_VISIBLE_DEVICES) for `--set device=cuda` on a multi-GPU machine. On a
cluster, `--executor slurm` submits the same runs as one Slurm job array through submitit; a run longer than
the job time limit checkpoints shortly before it (`--signal-lead`) and its job is requeued (`--max-requeues`).

Examples:
  pref-brl-sweep --name walker-budgets --methods pebble bilevel --budgets 50 100 --seeds 0 1 --jobs 2
  pref-brl-sweep --name quick --methods sac pebble bilevel --budgets 20 --seeds 0 1 \\
      --set steps=20000 --set num_unsup_steps=4000 --set num_interact=4000 --set reward_batch=5
  pref-brl-sweep --config study.toml --dry-run
  pref-brl-sweep --config study.toml --executor slurm --partition gpu --set device=cuda
  pref-brl-sweep --config study.toml --executor slurm --timeout-min 240 --signal-lead 300 --wait

A TOML file holds the same options (underscores for dashes) and a [set] table of overrides, where a list
makes the field one more grid axis:
  name = "walker-budgets"
  methods = ["pebble", "bilevel"]
  budgets = [50, 100]
  seeds = [0, 1, 2]
  [set]
  steps = 50000
  penalty_weight = [0.5, 1.0]

Options given on the command line win over the file. See docs/studies.md.
"""

from __future__ import annotations

import ctypes
import dataclasses
import math
import os
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import tyro

from pref_brl.cli import OneLineParser, parse
from pref_brl.logger import format_duration
from pref_brl.study import (
    Grid,
    Run,
    StudyError,
    check_runs,
    expand,
    normalise_overrides,
    parse_override,
    run_state,
    runs_to_extend,
)


@dataclass(frozen=True)
class SweepArgs:
    """A label-budget study and how to run it."""

    config: str = ""
    """TOML file with these options and a [set] table of overrides (command-line options win)"""
    name: str = "study"
    """study name: the study folder is <root>/<name>"""
    root: str = "runs"
    """folder that holds study folders"""
    preset: str = "cpu"
    """named preset every run starts from (cpu or paper; see pref-brl-train --print-presets)"""
    envs: tuple[str, ...] = ("walker_walk",)
    """environments"""
    methods: tuple[str, ...] = ("pebble", "bilevel")
    """methods (sac, pebble, bilevel, sobirl, mrn); sac uses no labels, so it runs once per env and seed. A
    variant method+key=value[+key=value] sets fields for that method alone and is its own folder and curve,
    e.g. bilevel+penalty=false (B on, λ-term off)"""
    budgets: tuple[int, ...] = ()
    """label budgets (max_feedback); none given: each env's preset budget"""
    teachers: tuple[str, ...] = ("oracle",)
    """scripted teacher presets"""
    seeds: tuple[int, ...] = (0,)
    """seeds"""
    set: Annotated[tuple[str, ...], tyro.conf.UseAppendAction] = ()
    """config override key=value (repeatable); key=v1,v2 makes the field a grid axis"""
    jobs: int = 0
    """runs at once (0: one per GPU with device=cuda, else CPU cores / threads per run); Slurm array limit"""
    gpus: tuple[int, ...] = ()
    """GPU ids to spread runs over (default: every visible GPU, when device=cuda)"""
    executor: Literal["local", "slurm", "submitit-local"] = "local"
    """local subprocesses; slurm: one job array through submitit; submitit-local: the same on this machine"""
    dry_run: bool = False
    """print the expanded grid with each run's state (new, partial, running, done) and exit"""
    extend: bool = False
    """continue the study's runs to a larger steps (--set steps=N): a run folder whose config differs only by
    a smaller steps resumes from its checkpoint, a finished one too, and runs on to N (its old config is kept
    in config.history.json); the runs' first steps are those of a run started with N"""
    status_every: float = 60.0
    """seconds between summary lines when nothing changes"""
    timeout_min: int = 24 * 60
    """Slurm/submitit: time limit of one job in minutes (a run that needs longer is requeued, see --signal-lead)"""
    partition: str = ""
    """Slurm partition (empty: the cluster's default)"""
    mem_gb: float = 0.0
    """Slurm memory per run in GB (0: the cluster's default)"""
    wait: bool = False
    """slurm: wait for the array and print live summaries (submitit-local always waits)"""
    signal_lead: int = 120
    """slurm: seconds before a job's time limit when its run checkpoints (at its episode's end) and is requeued"""
    max_requeues: int = 3
    """slurm: how often one run's job may be requeued at its time limit before the run counts as failed"""


def load_toml(path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(options, overrides) from a study file; unknown keys are errors."""
    from pref_brl.inputs import text_file_problem

    problem = text_file_problem(path, "--config", "study file")
    if problem:
        raise StudyError(problem)
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise StudyError(f"study file {path} is not valid TOML: {exc}") from None
    overrides = data.pop("set", {})
    fields = {f.name for f in dataclasses.fields(SweepArgs)} - {"config", "set"}
    unknown = sorted(set(data) - fields)
    if unknown or not isinstance(overrides, dict):
        bad = ", ".join(unknown) if unknown else "set (must be a table)"
        raise StudyError(f"study file {path}: unknown key(s) {bad}; known: {', '.join(sorted(fields))}, [set]")
    return {k: _option(path, k, v) for k, v in data.items()}, overrides


def _option(path: str, key: str, value: Any) -> Any:
    """A TOML value as the type of SweepArgs field `key` (a single value where a list is expected is fine)."""
    kind = typing.get_type_hints(SweepArgs)[key]
    if typing.get_origin(kind) is tuple:
        items = value if isinstance(value, list) else [value]
        element = typing.get_args(kind)[0]
        if all(isinstance(x, element) and not isinstance(x, bool) for x in items):
            return tuple(items)
        raise StudyError(f"study file {path}: {key} must be a list of {element.__name__}, got {value!r}")
    if typing.get_origin(kind) is Literal:
        if value in typing.get_args(kind):
            return value
        raise StudyError(f"study file {path}: {key} must be one of {', '.join(typing.get_args(kind))}")
    if isinstance(value, kind) or (kind is float and isinstance(value, int)):
        return kind(value)
    raise StudyError(f"study file {path}: {key} must be a {kind.__name__}, got {value!r}")


def parse_args(argv: list[str]) -> tuple[SweepArgs, Grid]:
    pre = OneLineParser(prog="pref-brl-sweep", add_help=False)
    pre.add_argument("--config", default="")
    known, _ = pre.parse_known_args(argv)
    options, file_overrides = load_toml(known.config) if known.config else ({}, {})
    try:
        default = SweepArgs(config=known.config, **options)
    except TypeError as exc:
        raise StudyError(f"study file {known.config}: {exc}") from None
    args = parse(SweepArgs, "pref-brl-sweep", args=argv, default=default, description=__doc__)
    check_args(args)
    overrides = dict(normalise_overrides(file_overrides))
    overrides.update(dict(normalise_overrides(dict(parse_override(s) for s in args.set))))
    grid = Grid(name=args.name, root=args.root, preset=args.preset, envs=args.envs, methods=args.methods,
                budgets=args.budgets, teachers=args.teachers, seeds=args.seeds,
                overrides=tuple(overrides.items()))
    return args, grid


def check_args(args: SweepArgs) -> None:
    """Option values that no grid can make right."""
    name = args.name
    if not name or name in (".", "..") or "/" in name or "\0" in name or len(name.encode()) > 255:
        raise StudyError(f"--name {name!r} must be one folder name (not empty, no '/', not . or .., at most 255 "
                         "bytes): the study folder is <root>/<name>")
    if args.jobs < 0:
        raise StudyError(f"--jobs must be >= 0 (0: as many as the cores or GPUs allow), got {args.jobs}")
    if not (math.isfinite(args.status_every) and args.status_every > 0):
        raise StudyError(f"--status-every must be a positive number of seconds, got {args.status_every}")
    if not (math.isfinite(args.mem_gb) and args.mem_gb >= 0):
        raise StudyError(f"--mem-gb must be a finite number >= 0 (0: the cluster's default), got {args.mem_gb}")
    check_executor(args.executor)
    if args.timeout_min < 1:
        raise StudyError(f"--timeout-min must be >= 1 (got {args.timeout_min})")
    for option, value in (("--signal-lead", args.signal_lead), ("--max-requeues", args.max_requeues)):
        if value < 0:
            raise StudyError(f"{option} must be >= 0 (got {value})")
    if args.signal_lead >= args.timeout_min * 60:
        raise StudyError(f"--signal-lead {args.signal_lead} s must be shorter than the job time limit "
                         f"(--timeout-min {args.timeout_min} = {args.timeout_min * 60} s)")


def check_executor(executor: str) -> None:
    """The executor can run here: submitit installed, and Slurm's sbatch on the PATH for --executor slurm."""
    from importlib.util import find_spec

    if executor == "local":
        return
    if find_spec("submitit") is None:
        raise StudyError(f"--executor {executor} needs submitit: pip install -e '.[sweep]'")
    if executor == "slurm" and shutil.which("sbatch") is None:
        raise StudyError("--executor slurm needs Slurm's sbatch on the PATH, and it is not there; on a single "
                         "machine use --executor local")


def check_gpus(gpus: tuple[int, ...], runs: list[Run]) -> None:
    """--gpus names GPUs that are visible here, for runs that use one."""
    if not gpus:
        return
    if not any(r.config.device.startswith("cuda") for r in runs):
        raise StudyError("--gpus spreads runs over GPUs; it goes with --set device=cuda")
    visible = default_gpus(runs)
    missing = [g for g in gpus if g not in visible]
    if missing:
        raise StudyError(f"--gpus {' '.join(map(str, missing))}: not a visible GPU here (visible: "
                         f"{' '.join(map(str, visible)) or 'none'})")


def print_grid(grid: Grid, runs: list[Run]) -> None:
    """Each run's state: new, partial, done, or running (another process, another sweep say, trains it now)."""
    from pref_brl.runs import folder_holder

    holders = [folder_holder(r.run_dir) for r in runs]
    states = ["running" if holder is not None else run_state(r) for r, holder in zip(runs, holders)]
    for run, state, holder in zip(runs, states, holders):
        print(f"{state:8s} {run.label}" + (f"  (pid {holder})" if holder is not None else ""))
    counts = ", ".join(f"{states.count(s)} {s}" for s in ("new", "partial", "running", "done"))
    print(f"{len(runs)} runs in {grid.folder} ({counts})")


# ------------------------------------------------------------------------------------------ local runs
def default_gpus(runs: list[Run]) -> tuple[int, ...]:
    """Visible GPU ids when runs ask for device=cuda (CUDA_VISIBLE_DEVICES is honoured), else none."""
    if not any(r.config.device == "cuda" for r in runs):
        return ()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return tuple(int(x) for x in visible.split(",") if x.strip().isdigit())
    import torch

    return tuple(range(torch.cuda.device_count()))


def pick_gpu(gpus: tuple[int, ...], busy: list[int | None]) -> int | None:
    """The GPU with the fewest running jobs (lowest id on ties); None without GPUs."""
    return min(gpus, key=lambda g: (busy.count(g), g)) if gpus else None


def job_env(run: Run, gpu: int | None) -> dict[str, str]:
    env = dict(os.environ)
    if run.config.threads > 0:
        env.update(OMP_NUM_THREADS=str(run.config.threads), MKL_NUM_THREADS=str(run.config.threads))
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(gpu)
    return env


def launch(run: Run, gpu: int | None, extend: bool = False) -> subprocess.Popen:
    """Start one run in a subprocess; its output goes to <run_dir>/train.log. `extend`: continue the folder's run
    of a smaller steps (`--extend`)."""
    from pref_brl.runs import prepare_run_dir

    prepare_run_dir(run.config, allow_config_change=extend)  # creates the folder (or checks it) for the log
    log = (run.run_dir / "train.log").open("a", encoding="utf-8")
    command = [sys.executable, "-m", "pref_brl.study", run.config.to_json(), *(["--extend"] if extend else [])]
    with log:
        # Own session: a terminal's Ctrl-C reaches the sweep only, which then stops each run exactly once.
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=job_env(run, gpu),
                                start_new_session=True, preexec_fn=die_with_parent(os.getpid()))


PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> Callable[[], None] | None:
    """A preexec_fn that has Linux send the child SIGTERM when the sweep dies (even by SIGKILL), so that no
    run goes on training as an orphan: the run checkpoints at the end of its episode and exits, and a re-run
    of the sweep resumes it. None elsewhere (no such signal there)."""
    if not sys.platform.startswith("linux"):
        return None

    def preexec() -> None:  # runs in the child between fork and exec
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the sweep died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


def next_free(queue: list[Run], waiting: set[str], progress: StudyProgress) -> Run | None:
    """Take the first queued run whose folder no other process holds (a run of a killed sweep may still be
    saving its checkpoint); the runs it waits for are named once."""
    from pref_brl.runs import folder_holder

    for run in queue:
        holder = folder_holder(run.run_dir)
        if holder is None:
            queue.remove(run)
            return run
        if run.label not in waiting:
            waiting.add(run.label)
            progress.event(f"waiting for {run.label}: its folder is in use by process {holder}")
    return None


def last_line(path: Path) -> str:
    lines = path.read_text(encoding="utf-8", errors="replace").strip().splitlines() if path.exists() else []
    return lines[-1] if lines else "(no output)"


class StudyProgress:
    """Counts and one-line summaries of a sweep; with `jobs`, an ETA once a run has finished."""

    def __init__(self, total: int, skipped: int, status_every: float, jobs: int = 0) -> None:
        self.total, self.skipped, self.status_every, self.jobs = total, skipped, status_every, jobs
        self.done, self.failed, self.running = skipped, 0, 0
        self.t0 = self.last = time.time()
        self.started: dict[str, float] = {}
        """label -> start time of each running run"""
        self.durations: list[float] = []
        """seconds of each run that finished in this sweep"""

    def start(self, label: str) -> None:
        self.started[label] = time.time()
        self.running += 1

    def end(self, label: str, finished: bool) -> float:
        """Seconds the run took; a finished one counts towards the ETA."""
        seconds = time.time() - self.started.pop(label, time.time())
        self.running -= 1
        if finished:
            self.durations.append(seconds)
        return seconds

    def eta(self) -> str:
        """`, ETA 1h05m` from the mean finished run: what the running runs have left and the queued runs, spread
        over `jobs` at once; empty before a run has finished."""
        if not self.durations or not self.jobs:
            return ""
        mean = sum(self.durations) / len(self.durations)
        queued = self.total - self.done - self.failed - self.running
        now = time.time()
        left = sum(max(0.0, mean - (now - t)) for t in self.started.values()) + queued * mean
        return f", ETA {format_duration(left / self.jobs)} (mean run {mean / 60:.1f} min)"

    def event(self, message: str) -> None:
        print(f"[{self.clock()}] {message}", flush=True)
        self.summary()

    def summary(self) -> None:
        queued = self.total - self.done - self.failed - self.running
        print(f"[{self.clock()}] {self.done}/{self.total} done ({self.skipped} skipped), {self.running} running, "
              f"{self.failed} failed, {queued} queued{self.eta()}", flush=True)
        self.last = time.time()

    def tick(self) -> None:
        if time.time() - self.last >= self.status_every:
            self.summary()

    def clock(self) -> str:
        seconds = int(time.time() - self.t0)
        return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def stop(procs: list[subprocess.Popen]) -> None:
    """SIGTERM each run (it checkpoints at the end of its episode and exits); a second Ctrl-C stops at once."""
    print("stopping: each run saves a checkpoint at the end of its episode (Ctrl-C again: stop now, keeping "
          "the previous checkpoint); re-run the same command to resume", file=sys.stderr, flush=True)
    for proc in procs:
        proc.terminate()
    try:
        for proc in procs:
            proc.wait()
    except KeyboardInterrupt:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait()


def run_local(runs: list[Run], jobs: int, gpus: tuple[int, ...], status_every: float, extend: bool = False) -> int:
    """Run every unfinished run, at most `jobs` at once; 0 if all finished, 1 if any failed."""
    gpus = gpus or default_gpus(runs)
    jobs = jobs or len(gpus) or max(1, (os.cpu_count() or 1) // max(1, runs[0].config.threads))
    queue = [r for r in runs if run_state(r) != "done"]
    progress = StudyProgress(len(runs), len(runs) - len(queue), status_every, jobs)
    progress.summary()
    running: dict[subprocess.Popen, tuple[Run, int | None, float]] = {}
    signal.signal(signal.SIGTERM, _interrupt)  # a killed sweep ends its runs too (they resume next time)
    waiting: set[str] = set()
    try:
        while queue or running:
            while queue and len(running) < jobs:
                run = next_free(queue, waiting, progress)
                if run is None:
                    break
                gpu = pick_gpu(gpus, [g for _, g, _ in running.values()])
                running[launch(run, gpu, extend)] = (run, gpu, time.time())
                progress.start(run.label)
                progress.event(f"started {run.label}" + (f" on GPU {gpu}" if gpu is not None else ""))
            for proc in [p for p in running if p.poll() is not None]:
                run, _, _ = running.pop(proc)
                finish(run, proc.returncode, progress)
            progress.tick()
            time.sleep(0.2)
    except KeyboardInterrupt:
        stop(list(running))
        return 130
    return 1 if progress.failed else 0


def finish(run: Run, returncode: int, progress: StudyProgress) -> None:
    finished = returncode == 0 and run_state(run) == "done"
    seconds = progress.end(run.label, finished)
    if finished:
        progress.done += 1
        progress.event(f"finished {run.label} ({seconds / 60:.1f} min)")
        return
    progress.failed += 1
    log = run.run_dir / "train.log"
    progress.event(f"FAILED {run.label} (exit {returncode}): {last_line(log)}  [log: {log}]")


# ------------------------------------------------------------------------------------------ submitit
def run_submitit(runs: list[Run], grid: Grid, args: SweepArgs) -> int:
    """Submit the unfinished runs as one job array (Slurm, or submitit's local executor)."""
    try:
        import submitit
    except ImportError:
        print("error: --executor slurm needs submitit: pip install -e '.[sweep]'", file=sys.stderr)
        return 2
    from pref_brl.study import TrainJob

    todo = [r for r in runs if run_state(r) != "done"]
    print(f"{len(runs) - len(todo)} of {len(runs)} runs already finished")
    if not todo:
        return 0
    cluster = "slurm" if args.executor == "slurm" else "local"
    try:
        executor = submitit.AutoExecutor(folder=grid.folder / ".submitit" / "%j", cluster=cluster,
                                         slurm_max_num_timeout=args.max_requeues,
                                         local_max_num_timeout=args.max_requeues)
    except RuntimeError as exc:  # e.g. no srun on this machine
        print(f"error: submitit cannot use {cluster}: {exc} (on a single machine use --executor local)",
              file=sys.stderr)
        return 2
    params: dict[str, Any] = dict(name=f"pref-brl-{grid.name}", timeout_min=args.timeout_min,
                                  cpus_per_task=max(1, todo[0].config.threads),
                                  gpus_per_node=int(todo[0].config.device.startswith("cuda")),
                                  slurm_array_parallelism=args.jobs or len(todo),
                                  slurm_signal_delay_s=args.signal_lead,
                                  slurm_additional_parameters={"requeue": True})
    if args.partition:
        params["slurm_partition"] = args.partition
    if args.mem_gb > 0:
        params["mem_gb"] = args.mem_gb
    executor.update_parameters(**params)
    jobs = executor.map_array(TrainJob(args.max_requeues, extend=args.extend),
                              [dataclasses.asdict(r.config) for r in todo])
    print(f"submitted {len(jobs)} jobs ({cluster}): {jobs[0].job_id.split('_')[0]}; "
          f"logs in {grid.folder / '.submitit'}", flush=True)
    if cluster == "slurm" and not args.wait:
        print("re-run the same command when they end: finished runs are skipped, unfinished ones resume")
        return 0
    if cluster == "slurm" and not sacct_works():
        watcher = squeue_watcher()  # no job accounting here: follow the jobs through squeue instead
        for job in jobs:
            job.watcher = watcher
    return wait_for(jobs, todo, len(runs), args.status_every)


def sacct_works() -> bool:
    """Whether Slurm's accounting answers (it is off on many small clusters; submitit polls it by default)."""
    try:
        subprocess.run(["sacct", "--noheader", "--allocations", "--starttime", "now", "--format", "JobID"],
                       capture_output=True, timeout=60, check=True)
    except (OSError, subprocess.SubprocessError):
        return False
    return True


FINAL_STATES = {"COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL",
                "DEADLINE", "ENDED"}
"""Slurm job states after which a job never runs again (ENDED: no longer listed by squeue)."""


def squeue_watcher(delay_s: int = 15) -> Any:
    """A submitit job watcher that reads squeue instead of sacct (for clusters without job accounting).

    A job that squeue no longer lists has ended (state ENDED); a failed squeue call keeps the last states,
    quietly (submitit's own watcher warns on every failed sacct call).
    """
    from submitit.slurm.slurm import SlurmInfoWatcher, read_job_id

    class SqueueWatcher(SlurmInfoWatcher):
        def update(self) -> None:
            to_check = self._registered - self._finished
            if not to_check:
                return
            self._num_calls += 1
            command = ["squeue", "--noheader", "--array", "--states=all", "--format=%i|%T"]
            try:
                out = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True).stdout
            except (OSError, subprocess.SubprocessError):
                self._last_status_check = time.time()
                return
            states: dict[str, dict[str, str]] = {}
            for line in out.splitlines():
                job_id, _, state = line.strip().partition("|")
                try:
                    parts = read_job_id(job_id)
                except ValueError:
                    continue
                for main_id, *array in parts:
                    ids = [f"{main_id}_{i}" for i in range(int(array[0]), int(array[-1]) + 1)] if array else [main_id]
                    states.update({i: {"State": state.split()[0]} for i in ids})
            for job_id in to_check:
                self._info_dict[job_id] = states.get(job_id, {"State": "ENDED"})
            self._last_status_check = time.time()
            self._finished.update(j for j in to_check if self.is_done(j, mode="cache"))

        def is_done(self, job_id: str, mode: str = "standard") -> bool:
            return self.get_state(job_id, mode).upper() in FINAL_STATES

    return SqueueWatcher(delay_s=delay_s)


def requeue_count(job: Any, seen: dict[str, tuple[float, int]]) -> int:
    """How often the task's job was requeued: TrainJob.requeues in the submission submitit re-pickles at
    each requeue (read again only when that file changes)."""
    from submitit.core.utils import DelayedSubmission

    path = job.paths.submitted_pickle
    try:
        mtime = path.stat().st_mtime
        if job.job_id not in seen or seen[job.job_id][0] != mtime:
            seen[job.job_id] = (mtime, getattr(DelayedSubmission.load(path).function, "requeues", 0))
    except Exception:  # noqa: BLE001 - a file being replaced: read it next time
        pass
    return seen.get(job.job_id, (0.0, 0))[1]


def failure_reason(job: Any, error: BaseException | None) -> str:
    """One line on why a task ended without finishing its run."""
    if error is None:
        result = job.result()
        step = f" at step {result['step']}" if isinstance(result, dict) and "step" in result else ""
        return f"stopped{step} before its end (cancelled or signalled); re-run the same command to resume it"
    text = str(error).strip()
    if "has not produced any output" in text:  # killed, cancelled or timed out without a result
        return f"the job ended ({job_state(job)}) before the run finished; log: {job.paths.stdout}"
    lines = text.splitlines()
    dashes = [i for i, x in enumerate(lines) if x.startswith("-----")]
    if len(dashes) >= 2:  # a failed job's message: its traceback between two dashed lines
        lines = lines[dashes[0] + 1:dashes[1]]
    line = next((x.strip() for x in reversed(lines) if x.strip()), type(error).__name__)
    return line.split(": ", 1)[1] if line.startswith("pref_brl.") and ": " in line else line


def job_state(job: Any) -> str:
    """The job's state as last seen (Slurm: PENDING, RUNNING, ...; local: RUNNING, FINISHED, ...)."""
    try:
        return str(job.state).upper()
    except Exception:  # noqa: BLE001 - a state we cannot read is just unknown
        return "UNKNOWN"


def wait_for(jobs: list, todo: list[Run], total: int, status_every: float) -> int:
    """Follow the array until every task ends: events for finished, failed and requeued runs, then one
    status line per run."""
    progress = StudyProgress(total, total - len(todo), status_every)
    progress.running = len(jobs)
    pending = dict(zip(jobs, todo))
    seen: dict[str, tuple[float, int]] = {}
    requeues = {run.label: 0 for run in todo}
    outcome: dict[str, str] = {}
    while pending:
        progress.running = sum(job_state(j) not in ("PENDING", "REQUEUED", "UNKNOWN") for j in pending)
        for job, run in pending.items():
            count = requeue_count(job, seen)
            if count > requeues[run.label]:
                requeues[run.label] = count
                progress.event(f"requeued {run.label} at its job's time limit ({count}×); it continues from its "
                               "checkpoint")
        for job in [j for j in pending if j.done()]:
            run = pending.pop(job)
            progress.running = max(0, progress.running - 1)
            error = job.exception()
            times = f" (requeued {requeues[run.label]}×)" if requeues[run.label] else ""
            if error is None and run_state(run) == "done":
                progress.done += 1
                outcome[run.label] = "done"
                progress.event(f"finished {run.label}{times}")
            else:
                progress.failed += 1
                outcome[run.label] = "FAILED"
                progress.event(f"FAILED {run.label} (job {job.job_id}){times}: {failure_reason(job, error)}")
        progress.tick()
        time.sleep(0.5)
    for run in todo:
        times = f"  requeued {requeues[run.label]}×" if requeues[run.label] else ""
        print(f"{outcome[run.label]:8s} {run.label}{times}", flush=True)
    return 1 if progress.failed else 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args, grid = parse_args(argv)
        runs = expand(grid)
        check_runs(grid, runs, extend=args.extend, running_ok=args.dry_run)
        check_gpus(args.gpus, runs)
        if args.dry_run:
            print_grid(grid, runs)
            return 0
    except StudyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for run in runs_to_extend(runs) if args.extend else []:
        print(f"extending {run.label} to {run.config.steps} steps", flush=True)
    if args.executor == "local":
        return run_local(runs, args.jobs, args.gpus, args.status_every, args.extend)
    return run_submitit(runs, grid, args)


if __name__ == "__main__":
    sys.exit(main())
