"""Training loops that `pref-brl-bench` times in blocks: ours (the Trainer's hot path), Stable-Baselines3's
SAC with the same networks (an installed peer, used through its public API), and whole `pebble`/`bilevel`/
`mrn` runs on a short schedule that crosses every phase."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from pref_brl.agents import fast_update
from pref_brl.config import TrainConfig, preset_config
from pref_brl.trainer import Trainer

NEVER = 10**9  # a period that never comes due


class OurSAC:
    """Method `sac` through our Trainer: act, env step, store, one update per step (no logging or evals)."""

    def __init__(self, env: str, hidden: int, depth: int, batch: int, learning_starts: int, compile_: bool,
                 workdir: Path) -> None:
        run_dir = tempfile.mkdtemp(prefix="sac-", dir=workdir)
        cfg = preset_config("cpu", env, method="sac", run_dir=run_dir, hidden_dim=hidden, hidden_depth=depth,
                            batch_size=batch, num_seed_steps=learning_starts, steps=NEVER,
                            replay_capacity=100_000, eval_frequency=NEVER, checkpoint_frequency=NEVER,
                            log_frequency=NEVER, compile=compile_)
        self.trainer = Trainer(cfg, progress=False)
        before = fast_update.warmup_seconds()
        self.advance(learning_starts + 1)  # seed steps and the first update (compiles it)
        self.warmup = fast_update.warmup_seconds() - before

    def advance(self, steps: int) -> float:
        """Run `steps` env steps; returns env steps/s."""
        tr = self.trainer
        start = time.perf_counter()
        for _ in range(steps):
            tr.env_step()
        return steps / (time.perf_counter() - start)

    def close(self) -> None:
        self.trainer.close()


class SB3SAC:
    """Stable-Baselines3's SAC on our env adapter: ReLU nets of the same widths, one gradient step per step."""

    def __init__(self, env: str, hidden: int, depth: int, batch: int, learning_starts: int,
                 lr: float = 5e-4) -> None:
        from stable_baselines3 import SAC
        from stable_baselines3.common.callbacks import BaseCallback

        from pref_brl.envs import make_env

        class Clock(BaseCallback):
            def __init__(self) -> None:
                super().__init__()
                self.times: list[float] = []

            def _on_step(self) -> bool:
                self.times.append(time.perf_counter())
                return True

        self.clock_type = Clock
        self.model = SAC("MlpPolicy", make_env(env, 0), learning_rate=lr, buffer_size=100_000,
                         learning_starts=learning_starts, batch_size=batch, train_freq=1, gradient_steps=1,
                         policy_kwargs=dict(net_arch=[hidden] * depth, activation_fn=torch.nn.ReLU),
                         device="cpu", seed=0, verbose=0)
        self.model.learn(learning_starts + 1)

    def advance(self, steps: int) -> float:
        """Run `steps` more env steps; env steps/s between the first and the last step (setup excluded)."""
        clock = self.clock_type()
        self.model.learn(max(steps, 2), reset_num_timesteps=False, callback=clock)
        return (len(clock.times) - 1) / (clock.times[-1] - clock.times[0])


def e2e_config(method: str, steps: int, run_dir: str, compile_: bool) -> TrainConfig:
    """walker_walk, cpu preset networks (2x256, batch 256), 100-step episodes; three feedback rounds:
    after 150 seed and 150 exploration steps, then two more, so that agent B (bilevel) runs for most of
    the run. `mrn` keeps the walker cpu preset's meta_every (400 env steps), so its meta-steps cost what they
    cost per env step in that preset (each relabels this short run's small buffer, though). Training scalars
    (time/fps among them) are logged every 100 steps."""
    interact = (steps - 300) // 200 * 100  # whole episodes, so that B's paired episode ends before a round
    return preset_config("cpu", "walker_walk", method=method, run_dir=run_dir, steps=steps, num_seed_steps=150,
                         num_unsup_steps=150, num_interact=interact, max_feedback=30, reward_batch=10,
                         max_episode_steps=100, paired_episodes=2, heldout_pairs=0, pair_horizon=25,
                         b_updates=max(1, 1000 * interact // 8000),  # the walker preset's B updates per env step
                         eval_frequency=NEVER, num_eval_episodes=1,
                         checkpoint_frequency=NEVER, log_frequency=100, compile=compile_)


def e2e_rate(method: str, steps: int, workdir: Path, compile_: bool) -> tuple[float, float]:
    """(env steps/s after the first feedback round, compile warm-up seconds of the run).

    The rate is read off the run's own `time/fps` log windows that start after the first round (later
    rounds, B's updates and the final evaluation included), minus the compile warm-up inside them.
    """
    from pref_brl.logger import read_scalars
    from pref_brl.validate import validate

    cfg = e2e_config(method, steps, tempfile.mkdtemp(prefix=f"{method}-", dir=workdir), compile_)
    validate(cfg)
    before = fast_update.warmup_seconds()
    Trainer(cfg, progress=False).train()
    windows = [r for r in read_scalars(Path(cfg.run_dir)) if "time/fps" in r]
    warmup = [r.get("time/compile_s", 0.0) for r in windows]
    steady = [(r, w - w_prev) for r, w, w_prev in zip(windows[1:], warmup[1:], warmup)
              if r["step"] - cfg.log_frequency >= cfg.feedback_starts]
    seconds = sum(cfg.log_frequency / r["time/fps"] - extra for r, extra in steady)
    return len(steady) * cfg.log_frequency / seconds, fast_update.warmup_seconds() - before
