"""`pref-brl-bench`: how fast training runs here, against peers and limits measured in the same run.

Examples:
  pref-brl-bench --quick                 # about a minute once the compile cache is warm
  pref-brl-bench                         # the full table, about ten minutes
  pref-brl-bench --json bench.json       # also write the rows as JSON
  pref-brl-bench --quick --only sac,reward --threads 1

Rows: SAC training throughput on walker_walk (2x256/batch 256 and 2x1024/batch 1024) against
Stable-Baselines3's SAC with identical networks, timed in this process; one SAC update against the compute
limit (its matrix-product FLOPs at the best fp32 matmul rate measured here); the Meta-World agent (3x256,
batch 512) on door-open, and door-open's env step alone against walker's; one reward-ensemble training
step; agent A's update with the reward-uncertainty bonus, its σ̂ cached per replay slot against an ensemble
pass per minibatch; relabelling 1M transitions; a k-NN state-entropy step; `pebble`, `bilevel` and `mrn` end to end; the
clips of a labelling round (`--teacher human`) against a plain renderer. Ours and the peer alternate in
rounds, so a slow spell on a shared machine hits both; cells are medians over rounds, ratios the median of
per-round ratios.
Compiled-update warm-up (first call of each graph: compilation, or loading it from the inductor cache)
is reported on its own and excluded from the rates.

OpenMP threads that wait by spinning stall each other when other processes share the cores, so this
program sets OMP_WAIT_POLICY=PASSIVE unless the variable is already set.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # must precede torch's OpenMP start-up

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import asdict, dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from pref_brl.agents import fast_update  # noqa: E402
from pref_brl.agents.networks import product  # noqa: E402
from pref_brl.agents.replay import Batch, ReplayBuffer  # noqa: E402
from pref_brl.agents.sac import SAC, SACConfig  # noqa: E402
from pref_brl.agents.state_entropy import StateEntropy, knn_distance  # noqa: E402
from pref_brl.cli import OneLineParser  # noqa: E402
from pref_brl.inputs import output_file_problem  # noqa: E402
from pref_brl.reward_model import RewardEnsemble  # noqa: E402
from pref_brl.validate import MAX_THREADS  # noqa: E402

WALKER = ("walker_walk", 24, 6)
DOOR = ("metaworld_door-open-v3", 39, 4)


# ---------------------------------------------------------------------------------------- FLOP counting
def mlp_flops(rows: int, dims: list[int], input_grad: bool) -> tuple[int, int]:
    """(forward, backward) matrix-product FLOPs of an MLP with layer widths `dims` on `rows` inputs.

    Two FLOPs per multiply-add; element-wise work is not counted. The backward pass forms each layer's
    weight gradient and the gradient of its input, except the first layer's when `input_grad` is False.
    """
    layers = [2 * rows * d_in * d_out for d_in, d_out in zip(dims[:-1], dims[1:])]
    forward = sum(layers)
    return forward, 2 * forward - (0 if input_grad else layers[0])


def sac_update_flops(obs_dim: int, act_dim: int, hidden: int, depth: int, batch: int, critics: int = 2) -> int:
    """Matrix-product FLOPs of one SAC update (Haarnoja et al., 2018): critic step, then actor step.

    Critic step: actor forward on s' and each target critic forward (no gradient); each critic forward
    and backward (no input gradient). Actor step: actor forward and backward, each critic forward and a
    backward to its input only (the actor loss leaves critic weights alone). The temperature's gradient
    is element-wise. Agrees with torch.utils.flop_counter on the plain path (tests/test_bench.py).
    """
    actor = [obs_dim] + [hidden] * depth + [2 * act_dim]
    critic = [obs_dim + act_dim] + [hidden] * depth + [1]
    a_fwd, a_bwd = mlp_flops(batch, actor, input_grad=False)
    c_fwd, c_bwd = mlp_flops(batch, critic, input_grad=False)
    c_input_grad = c_fwd  # backward to the input only: one input-gradient product per layer
    critic_step = a_fwd + critics * c_fwd + critics * (c_fwd + c_bwd)
    actor_step = a_fwd + a_bwd + critics * (c_fwd + c_input_grad)
    return critic_step + actor_step


def reward_step_flops(in_dim: int, hidden: int, depth: int, members: int, pairs: int, segment: int) -> int:
    """Matrix-product FLOPs of one reward-ensemble training step: every member's forward and backward
    on both segments of its `pairs` pairs (`segment` steps each)."""
    fwd, bwd = mlp_flops(2 * pairs * segment, [in_dim] + [hidden] * depth + [1], input_grad=False)
    return members * (fwd + bwd)


def relabel_flops(in_dim: int, hidden: int, depth: int, members: int, transitions: int) -> int:
    """Matrix-product FLOPs of relabelling `transitions` stored steps with the ensemble mean."""
    return members * mlp_flops(transitions, [in_dim] + [hidden] * depth + [1], input_grad=False)[0]


# ---------------------------------------------------------------------------------------- measuring
@dataclass
class Row:
    """One table row: ours against the peer or the limit; `ratio` > 1 means ours is faster."""

    component: str
    ours: float
    peer: float
    ratio: float
    unit: str
    peer_name: str
    ratio_name: str


@dataclass(frozen=True)
class Scale:
    """How long each row measures (rounds alternate ours and the peer)."""

    rounds: int
    sac_steps: int  # env steps per round and side, 2x256
    big_steps: int  # env steps per round and side, 2x1024
    door_steps: int  # env steps per round and side, Meta-World agent
    updates: int  # updates per round, update-against-limit rows (2x256)
    reward_steps: int
    relabel: int  # stored transitions to relabel
    knn: tuple[int, int]  # (batch, stored states)
    e2e_steps: int  # pebble/bilevel run length; seed, exploration and feedback scale with it
    matmul: int  # n of the n x n peak matmul
    small: tuple[int, int] = (256, 256)  # hidden width, batch of the cpu-preset walker agent
    big: tuple[int, int] = (1024, 1024)  # hidden width, batch of the paper-scale walker agent
    clip_queries: int = 10  # pairs per labelling round in the clips section (two clips each)


QUICK = Scale(rounds=3, sac_steps=100, big_steps=2, door_steps=30, updates=30, reward_steps=2,
              relabel=1_000_000, knn=(1024, 10_000), e2e_steps=1000, matmul=2048, clip_queries=4)
FULL = Scale(rounds=7, sac_steps=400, big_steps=6, door_steps=200, updates=100, reward_steps=5,
             relabel=1_000_000, knn=(1024, 10_000), e2e_steps=4000, matmul=2048)


def median(xs: list[float]) -> float:
    return float(statistics.median(xs))


def timed(fn: Callable[[], object], reps: int = 1) -> float:
    """Seconds per call of `fn` over `reps` calls."""
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - start) / reps


def paired(ours: list[float], peer: list[float]) -> float:
    """Median of per-round ratios ours/peer (rates: higher is better)."""
    return median([o / p for o, p in zip(ours, peer)])


class Peak:
    """The best fp32 matmul rate measured now: torch.mm (MKL) and oneDNN on n x n operands."""

    def __init__(self, n: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.a, self.b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
        self.flops = 2 * n**3
        self.samples: dict[str, list[float]] = {"aten": [], "onednn": []}

    def sample(self) -> float:
        """GFLOP/s of the faster backend (each the median of 3 products), recorded per backend."""
        rates = {}
        for name, fn in (("aten", torch.mm), ("onednn", product)):
            fn(self.a, self.b)
            rates[name] = self.flops / median([timed(lambda fn=fn: fn(self.a, self.b)) for _ in range(3)]) / 1e9
            self.samples[name].append(rates[name])
        return max(rates.values())


def limit_rows(peak: Peak) -> list[Row]:
    aten, onednn = median(peak.samples["aten"]), median(peak.samples["onednn"])
    n = round(peak.flops ** (1 / 3) / 2 ** (1 / 3))
    return [Row(f"fp32 matmul {n}x{n}: oneDNN vs torch.mm (MKL)", onednn, aten, onednn / aten, "GFLOP/s",
                "torch.mm", "x")]


def against_limit(name: str, flops: int, fn: Callable[[], object], reps: int, peak: Peak,
                  rounds: int) -> Row:
    """`fn`'s FLOP rate against the matmul peak, sampled in alternation."""
    ours, limit = [], []
    for _ in range(rounds):
        limit.append(peak.sample())
        ours.append(flops / timed(fn, reps) / 1e9)
    return Row(name, median(ours), median(limit), paired(ours, limit), "GFLOP/s", "fp32 matmul peak", "of peak")


# ---------------------------------------------------------------------------------------- SAC rows
def walker_batch(obs_dim: int, act_dim: int, batch: int, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    return Batch(torch.randn(batch, obs_dim, generator=g), torch.rand(batch, act_dim, generator=g) * 2 - 1,
                 torch.randn(batch, 1, generator=g), torch.randn(batch, obs_dim, generator=g),
                 torch.ones(batch, 1))


def update_rows(scale: Scale, peak: Peak) -> list[Row]:
    """One SAC update (compiled) against the compute limit, and against the plain path."""
    rows = []
    for (hidden, batch), reps in ((scale.small, scale.updates), (scale.big, 1)):
        _, obs, act = WALKER
        flops = sac_update_flops(obs, act, hidden, 2, batch)
        fast = SAC(obs, act, SACConfig(hidden_dim=hidden, compile=True))
        plain = SAC(obs, act, SACConfig(hidden_dim=hidden))
        data = walker_batch(obs, act, batch)
        fast.update(data)  # compiles (warm-up reported separately)
        plain.update(data)
        label = f"SAC update 2x{hidden}/b{batch} ({flops / 1e9:.2f} GFLOP)"
        rows.append(against_limit(label + ", compiled", flops, lambda a=fast, d=data: a.update(d), reps, peak,
                                  scale.rounds))
        t_fast, t_plain = [], []
        for _ in range(scale.rounds):
            t_plain.append(timed(lambda a=plain, d=data: a.update(d), max(1, reps // 3)))
            t_fast.append(timed(lambda a=fast, d=data: a.update(d), max(1, reps // 3)))
        rows.append(Row(label + ": compiled vs plain path", 1e3 * median(t_fast), 1e3 * median(t_plain),
                        paired(t_plain, t_fast), "ms", "--no-compile", "x"))
    return rows


def sac_throughput(env: tuple[str, int, int], hidden: int, depth: int, batch: int, steps: int,
                   rounds: int, compile_: bool, workdir: Path) -> Row:
    """Env steps/s with one update per step: our Trainer's hot loop against SB3's `learn`."""
    from pref_brl.experiments.bench_peers import SB3SAC, OurSAC

    starts = max(batch, 256)
    ours = OurSAC(env[0], hidden, depth, batch, starts, compile_, workdir)
    peer = SB3SAC(env[0], hidden, depth, batch, starts)
    rates_ours, rates_peer = [], []
    for _ in range(rounds):
        rates_ours.append(ours.advance(steps))
        rates_peer.append(peer.advance(steps))
    ours.close()
    name = f"SAC {env[0]} {depth}x{hidden}/b{batch}"
    return Row(name, median(rates_ours), median(rates_peer), paired(rates_ours, rates_peer), "env steps/s",
               "SB3 SAC, same nets", "x")


# ---------------------------------------------------------------------------------------- other rows
def reward_rows(scale: Scale, peak: Peak) -> list[Row]:
    """One ensemble training step (3 members x 128 pairs x 50 steps, 3x256) against the limit."""
    _, obs, act = WALKER
    ens = RewardEnsemble(obs, act, 3, 256, 3)
    g = torch.Generator().manual_seed(0)
    sa0, sa1 = (torch.randn(3, 128, 50, obs + act, generator=g) for _ in range(2))
    targets = (torch.rand(3, 128, generator=g) > 0.5).float()
    ens._train_step(sa0, sa1, targets, None)
    flops = reward_step_flops(obs + act, 256, 3, 3, 128, 50)
    return [against_limit(f"reward ensemble step 3x(128 pairs x 50) 3x256 ({flops / 1e9:.1f} GFLOP)", flops,
                          lambda: ens._train_step(sa0, sa1, targets, None), scale.reward_steps, peak,
                          scale.rounds)]


def random_replay(obs_dim: int, act_dim: int, n: int) -> ReplayBuffer:
    """A full buffer of n random transitions (normal observations and rewards, uniform actions, no terminals)."""
    replay = ReplayBuffer(obs_dim, act_dim, n)
    g = torch.Generator().manual_seed(0)
    replay.obs.normal_(generator=g)
    replay.act.uniform_(-1, 1, generator=g)
    replay.next_obs.normal_(generator=g)
    replay.reward.normal_(generator=g)
    replay.not_done.fill_(1.0)
    replay.size = n
    return replay


def bonus_rows(scale: Scale, compile_: bool) -> list[Row]:
    """Agent A's update with the reward-uncertainty bonus (door-open's 3x256 agent, batch 256): σ̂ from the
    replay buffer's per-slot cache, every slot computed (as after the last feedback round), against one
    ensemble pass per minibatch (how the bonus was computed before the cache)."""
    _, obs, act = DOOR
    agent = SAC(obs, act, SACConfig(hidden_dim=256, hidden_depth=3, compile=compile_))
    ens = RewardEnsemble(obs, act, 3, 256, 3)
    n = min(scale.relabel, 100_000)
    replay = random_replay(obs, act, n)

    def std(o: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return ens.mean_std_reward(o, a)[1]

    replay.cached(torch.arange(n), std)
    sampler = torch.Generator().manual_seed(1)
    idx = replay.sample_indices(256, sampler)  # the cache holds what a pass per batch computes
    torch.testing.assert_close(replay.cached(idx, std), std(replay.obs[idx], replay.act[idx]), rtol=1e-5, atol=1e-6)

    def cached() -> None:
        idx = replay.sample_indices(256, sampler)
        batch = replay.gather(idx)
        agent.update(batch._replace(reward=batch.reward + replay.cached(idx, std).reshape(-1, 1)))

    def per_batch() -> None:
        batch = replay.sample(256, sampler)
        agent.update(batch._replace(reward=batch.reward + std(batch.obs, batch.act).reshape(-1, 1)))

    cached()  # compiles (warm-up reported separately)
    per_batch()
    ours, peer = [], []
    for _ in range(scale.rounds):
        peer.append(timed(per_batch, scale.updates))
        ours.append(timed(cached, scale.updates))
    return [Row("SAC update + reward-uncertainty bonus, door-open 3x256/b256, σ̂ cached per slot",
                1e3 * median(ours), 1e3 * median(peer), paired(peer, ours), "ms", "an ensemble pass per batch",
                "x")]


def relabel_rows(scale: Scale, peak: Peak) -> list[Row]:
    """Relabel a full buffer with the ensemble mean; the limit is its FLOPs at the matmul peak."""
    _, obs, act = WALKER
    ens = RewardEnsemble(obs, act, 3, 256, 3)
    replay = random_replay(obs, act, scale.relabel)
    flops = relabel_flops(obs + act, 256, 3, 3, scale.relabel)
    ours, floor = [], []
    for _ in range(max(1, scale.rounds // 2)):
        floor.append(flops / (peak.sample() * 1e9))
        ours.append(timed(lambda: replay.relabel(ens.mean_reward)))
    return [Row(f"relabel {scale.relabel / 1e6:g}M transitions, 3x256 ensemble (target < 5 s)", median(ours),
                median(floor), paired(floor, ours), "s", "FLOPs at matmul peak", "of peak")]


def knn_rows(scale: Scale) -> list[Row]:
    """k-NN state-entropy reward (k = 5) of a batch against the stored states vs a broadcast-norm version."""
    batch, stored = scale.knn
    g = torch.Generator().manual_seed(0)
    states = torch.randn(stored, WALKER[1], generator=g)
    queries = states[torch.randint(0, stored, (batch,), generator=g)]
    entropy = StateEntropy(k=5)

    def broadcast_knn() -> torch.Tensor:  # difference tensors and a norm, chunked over stored states
        best = torch.cat([(queries[:, None] - states[None, i:i + 1000]).norm(dim=-1)
                          for i in range(0, stored, 1000)], dim=1)
        return best.topk(6, dim=1, largest=False).values[:, -1]

    torch.testing.assert_close(knn_distance(queries, states, k=5), broadcast_knn(), rtol=1e-4, atol=1e-4)
    ours, peer = [], []
    for _ in range(scale.rounds):
        peer.append(timed(broadcast_knn, 3))
        ours.append(timed(lambda: entropy.intrinsic_reward(queries, states), 3))
    return [Row(f"k-NN state entropy, batch {batch} vs {stored} states", 1e3 * median(ours), 1e3 * median(peer),
                paired(peer, ours), "ms", "broadcast norm + topk", "x")]


def e2e_rows(scale: Scale, compile_: bool, workdir: Path) -> list[Row]:
    """Whole `pebble`, `bilevel` and `mrn` runs (seed, exploration, three feedback rounds, B's updates or the
    meta-steps, eval, checkpoint), alternating; rates exclude compile warm-up."""
    from pref_brl.experiments.bench_peers import e2e_rate

    rates: dict[str, list[float]] = {"pebble": [], "bilevel": [], "mrn": []}
    for _ in range(max(1, scale.rounds // 3)):
        for method in rates:
            rates[method].append(e2e_rate(method, scale.e2e_steps, workdir, compile_)[0])
    pebble = median(rates["pebble"])

    def time_ratio(method: str) -> float:  # method's time per step over pebble's, per round
        return median([p / m for p, m in zip(rates["pebble"], rates[method])])

    label = f"walker 2x256/b256, {scale.e2e_steps} steps, 3 feedback rounds; rate after the first"
    return [Row(f"pebble end to end ({label})", pebble, float("nan"), float("nan"), "env steps/s", "", ""),
            Row(f"bilevel end to end ({label})", median(rates["bilevel"]), pebble, time_ratio("bilevel"),
                "env steps/s", "pebble", "x pebble's time per step (target <= 1.5)"),
            Row(f"mrn end to end ({label}; a meta-step every 400 steps, as the cpu preset)", median(rates["mrn"]),
                pebble, time_ratio("mrn"), "env steps/s", "pebble", "x pebble's time per step")]


def throughput_rows(scale: Scale, compile_: bool, workdir: Path) -> list[Row]:
    """SAC env steps/s against SB3: walker 2x256/b256 and 2x1024/b1024."""
    return [sac_throughput(WALKER, hidden, 2, batch, steps, scale.rounds, compile_, workdir)
            for (hidden, batch), steps in ((scale.small, scale.sac_steps), (scale.big, scale.big_steps))]


def env_rate(env, steps: int, rng: torch.Generator) -> float:
    """Env steps/s of `env` alone: uniform random actions, a reset whenever an episode ends."""
    low, high = env.action_space.low, env.action_space.high
    actions = (torch.rand((steps, len(low)), generator=rng).numpy() * (high - low) + low).astype(low.dtype)
    env.reset(seed=0)
    start = time.perf_counter()
    for action in actions:
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            env.reset()
    return steps / (time.perf_counter() - start)


def env_step_row(scale: Scale) -> Row:
    """Door-open's env step against walker's, alternating in rounds (what a door run pays before learning)."""
    from pref_brl.envs import make_env

    envs = {name: make_env(name, seed=0) for name in (DOOR[0], WALKER[0])}
    rng = torch.Generator().manual_seed(0)
    steps = 10 * scale.door_steps
    rates: dict[str, list[float]] = {name: [] for name in envs}
    for _ in range(scale.rounds):
        for name, env in envs.items():
            rates[name].append(env_rate(env, steps, rng))
    door, walker = rates[DOOR[0]], rates[WALKER[0]]
    return Row(f"door-open env step alone (uniform random actions, resets included, {steps} steps a round)",
               median(door), median(walker), paired(door, walker), "env steps/s", "walker_walk's env step",
               "x walker's rate")


def door_rows(scale: Scale, compile_: bool, workdir: Path) -> list[Row]:
    """The Meta-World agent (3x256, batch 512) on door-open against SB3, and its env step against walker's."""
    return [sac_throughput(DOOR, 256, 3, 512, scale.door_steps, scale.rounds, compile_, workdir),
            env_step_row(scale)]


def clip_rows(scale: Scale) -> list[Row]:
    """A labelling round's clips (--teacher human) against each clip rendered alone with default settings."""
    from pref_brl.experiments.bench_clips import clip_times

    label, ours, peer = clip_times(scale.clip_queries, max(1, scale.rounds // 3))
    return [Row(label, median(ours), median(peer), paired(peer, ours), "s", "each clip alone, default render "
                "settings", "x")]


SECTIONS = ("sac", "update", "door", "reward", "bonus", "relabel", "knn", "e2e", "clips")


def run(scale: Scale, only: tuple[str, ...] = SECTIONS, compile_: bool = True) -> list[Row]:
    """Every selected section's rows, the matmul peak first (it is sampled again inside the rows)."""
    peak = Peak(scale.matmul)
    for _ in range(scale.rounds):
        peak.sample()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="pref-brl-bench-") as tmp:
        workdir = Path(tmp)
        sections: dict[str, Callable[[], list[Row]]] = {
            "sac": lambda: throughput_rows(scale, compile_, workdir),
            "update": lambda: update_rows(scale, peak),
            "door": lambda: door_rows(scale, compile_, workdir),
            "reward": lambda: reward_rows(scale, peak),
            "bonus": lambda: bonus_rows(scale, compile_),
            "relabel": lambda: relabel_rows(scale, peak),
            "knn": lambda: knn_rows(scale),
            "e2e": lambda: e2e_rows(scale, compile_, workdir),
            "clips": lambda: clip_rows(scale),
        }
        for name in only:
            start = time.perf_counter()
            rows += sections[name]()
            print(f"[{name}: {time.perf_counter() - start:.0f} s]", file=sys.stderr, flush=True)
    return limit_rows(peak) + rows


# ---------------------------------------------------------------------------------------- output
def _num(x: float) -> str:
    if x != x:
        return "—"
    return f"{x:.3g}" if abs(x) < 999.5 else f"{x:,.0f}"


def render(rows: list[Row]) -> str:
    """The rows as a Markdown table: component | ours | peer or limit | ratio."""
    lines = ["| component | ours | peer or limit | ratio |", "| --- | --- | --- | --- |"]
    for r in rows:
        peer = f"{_num(r.peer)} {r.unit} ({r.peer_name})" if r.peer_name else "—"
        ratio = "—" if r.ratio != r.ratio else (
            f"{100 * r.ratio:.0f}% {r.ratio_name}" if r.ratio_name == "of peak" else f"{r.ratio:.2f} {r.ratio_name}")
        lines.append(f"| {r.component} | {_num(r.ours)} {r.unit} | {peer} | {ratio} |")
    return "\n".join(lines)


def render_warmup() -> str:
    """Compile warm-up of every graph this process ran, and the inductor cache's hits and misses."""
    from torch._dynamo.utils import counters

    lines = ["| compiled update graph (first call) | seconds |", "| --- | --- |"]
    for variant, seconds in fast_update._WARMUP.items():
        k, extra, batch_shape, critic_shapes, _ = variant
        width = critic_shapes[1][-1] if len(critic_shapes) > 1 else critic_shapes[0][-1]
        flags = ("" if k.learn_temperature else ", frozen temperature") + (", extra actor term" if extra else "")
        flags += "" if k.update_actor else ", critic only"
        lines.append(f"| {len(critic_shapes) - 1}x{width}, batch {batch_shape[0]}, obs {batch_shape[1]}{flags} "
                     f"| {seconds:.1f} |")
    cache = counters["inductor"]
    lines.append(f"\ninductor FX-graph cache: {cache['fxgraph_cache_hit']} hits, {cache['fxgraph_cache_miss']} "
                 f"misses (misses compile from scratch; the first run on a machine is the slow one)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="pref-brl-bench", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short rounds: about a minute (warm cache)")
    parser.add_argument("--json", help="also write the rows (and warm-up) as JSON here")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads for everything; 0 (default): every core on an idle machine, 1 when "
                             "other processes already keep the cores busy (load average >= cores)")
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help=f"comma-separated sections to run, of: {', '.join(SECTIONS)}")
    parser.add_argument("--no-compile", action="store_true",
                        help="our agents take the plain update path (the compiled-vs-plain rows still run)")
    args = parser.parse_args(argv)
    only = tuple(s.strip() for s in args.only.split(",") if s.strip())
    unknown = [s for s in only if s not in SECTIONS]
    if unknown or not only:
        parser.error(f"unknown section(s) {', '.join(unknown) or '(none given)'}; known: {', '.join(SECTIONS)}")
    if not 0 <= args.threads <= MAX_THREADS:
        parser.error(f"--threads must be in [0, {MAX_THREADS}] (0: automatic), got {args.threads}")
    problem = args.json and output_file_problem(args.json, "--json")
    if problem:
        parser.error(problem)
    cores = os.cpu_count() or 1
    load = os.getloadavg()[0]
    threads = args.threads or (1 if load >= cores else cores)
    torch.set_num_threads(threads)
    scale = QUICK if args.quick else FULL
    start = time.perf_counter()
    rows = run(scale, only, compile_=not args.no_compile)
    print(render(rows))
    print()
    print(render_warmup())
    print(f"\n{'quick' if args.quick else 'full'} run, {threads} thread(s), "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, load average {load:.1f} on {cores} cores at the "
          f"start, {time.perf_counter() - start:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": [asdict(r) for r in rows], "threads": threads,
                                         "quick": args.quick, "warmup_s": fast_update.warmup_seconds()},
                                        indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
