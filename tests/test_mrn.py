"""Method `mrn` (Meta-Reward-Net): the hypergradient against central differences of a hand-written one-step
unroll, gradient reach and isolation, outer_weight 0 ≡ pebble, a smoke run with exact resume, settings, and
the sweep and plot treating it as a method of its own."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from pref_brl.agents.networks import StackedMLP
from pref_brl.agents.replay import Batch
from pref_brl.config import IGNORED_FIELDS, MRN_FIELDS, preset_config
from pref_brl.feedback import PreferenceLearner
from pref_brl.mrn import MRNLearner, outer_loss
from pref_brl.reward_model import RewardEnsemble
from pref_brl.trainer import Trainer
from pref_brl.validate import ConfigError, validate
from tests.conftest import advance, scalars_without_time
from tests.test_trainer import final_params, run_until_killed

# 50-step episodes; rounds at steps 100, 200 and 300 (4 labels each, budget 12); a meta-step every 25 steps
# in between: 8 meta-steps, at the updates of steps 100, 125, ..., 275. Checkpoints at 100, 200, 300.
MRN_TINY = dict(method="mrn", steps=400, max_episode_steps=50, num_seed_steps=50, num_unsup_steps=50,
                num_interact=100, eval_frequency=200, checkpoint_frequency=100, log_frequency=50, meta_every=25,
                max_feedback=12, reward_batch=4)


def mrn_cfg(tiny, name: str = "mrn", **kw):
    return tiny(name, **{**MRN_TINY, **kw})


def params(module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def same(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def opt_tensors(opt) -> list[torch.Tensor]:
    return [t.clone() for state in opt.state_dict()["state"].values() for t in state.values() if torch.is_tensor(t)]


def agent_state(agent) -> list[torch.Tensor]:
    return params(agent.actor) + params(agent.critic) + params(agent.critic_target) + [agent.log_alpha.detach().clone()]


# ---------------------------------------------------------------------------------------------- the gradient
def hand_written_outer_loss(critic: StackedMLP, ensemble: RewardEnsemble, batch: Batch, next_value, gamma: float,
                            first0, first1, labels, meta_lr: float) -> torch.Tensor:
    """The same quantity written out by hand: an explicit twin-critic MLP, one SGD step on its TD loss, and
    the Bradley–Terry cross-entropy −[y log σ(d) + (1 − y) log σ(−d)] of both heads' first-step Q values."""
    weights = [w.detach().clone().requires_grad_() for w in critic.weights]
    biases = [b.detach().clone().requires_grad_() for b in critic.biases]

    def q(ws, bs, x):
        h = x.unsqueeze(0).expand(2, -1, -1)
        for i, (w, b) in enumerate(zip(ws, bs)):
            h = h @ w + b
            if i < len(ws) - 1:
                h = torch.relu(h)
        return h[..., 0]  # [2, N]

    with torch.enable_grad():
        reward = ensemble.member_rewards(torch.cat([batch.obs, batch.act], -1)).mean(0)
        target = reward + gamma * batch.not_done[:, 0] * next_value[:, 0]
        td = ((q(weights, biases, torch.cat([batch.obs, batch.act], -1)) - target) ** 2).mean(1).sum()
        grads = torch.autograd.grad(td, weights + biases, create_graph=True)
        n = len(weights)
        new_w = [w - meta_lr * g for w, g in zip(weights, grads[:n])]
        new_b = [b - meta_lr * g for b, g in zip(biases, grads[n:])]
        d = q(new_w, new_b, first1) - q(new_w, new_b, first0)
        ce = -(labels * F.logsigmoid(d) + (1 - labels) * F.logsigmoid(-d))
        return ce.mean(1).sum()


def tiny_problem():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(3)
    obs, act, b, p = 3, 2, 6, 4
    critic = StackedMLP(2, obs + act, 5, 1, 1, generator=g).double()
    ensemble = RewardEnsemble(obs, act, n_members=2, hidden=4, n_layers=1, seed=1, dtype=torch.float64)
    batch = Batch(torch.randn(b, obs, generator=g, dtype=torch.float64),
                  torch.rand(b, act, generator=g, dtype=torch.float64) * 2 - 1, torch.zeros(b, 1, dtype=torch.float64),
                  torch.randn(b, obs, generator=g, dtype=torch.float64),
                  torch.tensor([[1.0], [1.0], [0.0], [1.0], [1.0], [1.0]], dtype=torch.float64))
    next_value = torch.randn(b, 1, generator=g, dtype=torch.float64)
    first0, first1 = (torch.randn(p, obs + act, generator=g, dtype=torch.float64) for _ in range(2))
    labels = torch.tensor([1.0, 0.0, 0.5, 1.0], dtype=torch.float64)
    return critic, ensemble, (batch, next_value, 0.9, first0, first1, labels, 0.3)


def test_hypergradient_matches_central_differences_of_the_one_step_unroll() -> None:
    critic, ensemble, args = tiny_problem()
    weight = 0.1
    loss = outer_loss(critic, ensemble, *args)
    reference = hand_written_outer_loss(critic, ensemble, *args)
    torch.testing.assert_close(loss, reference, rtol=1e-12, atol=1e-12)
    grads = torch.autograd.grad(weight * loss, list(ensemble.parameters()))
    eps = 1e-6
    for p, grad in zip(ensemble.parameters(), grads, strict=True):
        numeric = torch.zeros_like(p)
        flat, out = p.data.view(-1), numeric.view(-1)
        for i in range(flat.numel()):
            keep = flat[i].item()
            flat[i] = keep + eps
            up = hand_written_outer_loss(critic, ensemble, *args).item()
            flat[i] = keep - eps
            down = hand_written_outer_loss(critic, ensemble, *args).item()
            flat[i] = keep
            out[i] = weight * (up - down) / (2 * eps)
        torch.testing.assert_close(grad, numeric, rtol=1e-5, atol=1e-9)
        assert (grad != 0).all()
    assert all(p.grad is None for p in critic.parameters())  # the inner step never touches the critic


def at_first_round(tiny, **kw) -> Trainer:
    """A trainer just after its first feedback round (step 100), before the meta-step due at that step."""
    trainer = Trainer(mrn_cfg(tiny, **kw), progress=False)
    advance(trainer, lambda: trainer.learner.rounds >= 1)
    return trainer


def test_meta_step_reaches_every_reward_parameter_of_every_member_and_only_the_reward(tiny) -> None:
    trainer = at_first_round(tiny, ensemble_size=3)
    learner, agent = trainer.learner, trainer.agents["A"]
    assert isinstance(learner, MRNLearner)
    grads, loss = learner.hypergradient()
    assert math.isfinite(float(loss))
    for g in grads:
        for m in range(learner.ensemble.n_members):
            assert (g[m] != 0).all(), "a reward parameter of a member got no hypergradient"

    before_a, before_stream = agent_state(agent), trainer.sample_generator.get_state()
    critic_opt = opt_tensors(agent.critic_opt)
    critic_grads = [None if p.grad is None else p.grad.clone() for p in agent.critic.parameters()]
    before_reward = params(learner.ensemble)
    metrics = learner.meta_step()
    assert {"mrn/outer_loss", "mrn/grad_norm", "mrn/meta_steps"} <= set(metrics)
    assert float(metrics["mrn/grad_norm"]) > 0 and learner.meta_steps == 1
    assert all(not torch.equal(a, b) for a, b in zip(before_reward, params(learner.ensemble)))
    assert same(before_a, agent_state(agent))
    assert all((g is None and p.grad is None) or torch.equal(g, p.grad)
               for g, p in zip(critic_grads, agent.critic.parameters(), strict=True))
    assert torch.equal(before_stream, trainer.sample_generator.get_state())  # A's minibatch stream untouched
    assert same(critic_opt, opt_tensors(agent.critic_opt))
    stored = trainer.replay.reward[: trainer.replay.size, 0]
    relabelled = learner.ensemble.mean_reward(trainer.replay.obs[: trainer.replay.size],
                                              trainer.replay.act[: trainer.replay.size])
    assert torch.equal(stored, relabelled)

    # the SAC losses give the reward model no gradient, and an update off the meta schedule leaves it alone
    batch = learner.sample_batch(trainer.step)
    sac = agent.critic_loss(batch) + agent.actor_loss(batch.obs)[0]
    assert all(g is None for g in torch.autograd.grad(sac, list(learner.ensemble.parameters()), allow_unused=True))
    reward = params(learner.ensemble)
    step = next(s for s in range(trainer.step, trainer.step + 100) if s % trainer.cfg.meta_every)
    learner.update_agents(step)
    assert same(reward, params(learner.ensemble)) and learner.meta_steps == 1


def test_meta_step_is_the_ensembles_adam_step_on_the_hypergradient(tiny) -> None:
    """φ moves by exactly one step of the ensemble's own Adam (its moments carried over from the cross-entropy
    updates) on the hypergradient: a hypergradient computed and then lost before the step would still move φ
    through the moments, and only this comparison sees it."""
    trainer = at_first_round(tiny)
    learner = trainer.learner
    reference = copy.deepcopy(learner.ensemble)  # parameters and optimiser state, the moments included
    assert any(reference.optimizer.state.values())
    stream = learner.meta_generator.get_state()
    grads, _ = learner.hypergradient()
    learner.meta_generator.set_state(stream)  # the meta-step draws the same minibatch again
    learner.meta_step()
    for p, g in zip(reference.parameters(), grads, strict=True):
        p.grad = g.clone()
    reference.optimizer.step()
    for want, got in zip(reference.parameters(), learner.ensemble.parameters(), strict=True):
        torch.testing.assert_close(got, want, atol=0, rtol=0)


def test_zero_outer_weight_reproduces_pebble_bit_for_bit(tiny) -> None:
    pebble = mrn_cfg(tiny, "pebble", method="pebble", steps=300)
    mrn = mrn_cfg(tiny, "mrn0", outer_weight=0.0, steps=300)
    Trainer(pebble, progress=False).train()
    trainer = Trainer(mrn, progress=False)
    trainer.train()
    assert type(trainer.learner) is PreferenceLearner
    assert scalars_without_time(pebble.run_dir) == scalars_without_time(mrn.run_dir)
    assert same(final_params(pebble), final_params(mrn))
    assert same(*(torch.load(f"{c.run_dir}/checkpoint.pt", weights_only=False)["learner"]["ensemble"]["model"]
                  .values() for c in (pebble, mrn)))


def test_mrn_smoke_crosses_every_phase_and_resumes_exactly_after_a_kill(tiny) -> None:
    straight, killed = mrn_cfg(tiny, "straight"), mrn_cfg(tiny, "killed")
    trainer = Trainer(straight, progress=False)
    trainer.train()
    learner = trainer.learner
    assert learner.meta_steps == 8 and learner.total == 12 and learner.rounds == 3
    first0, first1, labels = learner.outer_pairs()  # the first (s, a) of the last `reward_batch` labelled pairs
    recent = slice(len(learner.prefs) - 4, len(learner.prefs))
    assert len(learner.prefs) > 4 and torch.equal(first0, learner.prefs.sa0[recent, 0])
    assert torch.equal(first1, learner.prefs.sa1[recent, 0]) and torch.equal(labels, learner.prefs.labels[recent])
    records = scalars_without_time(straight.run_dir)
    keys = set().union(*records)
    assert {"explore/state_entropy", "feedback/total", "reward/accuracy", "mrn/outer_loss", "mrn/grad_norm",
            "mrn/meta_steps", "eval/mean_reward", "train/critic_loss"} <= keys
    assert max(r.get("mrn/meta_steps", 0) for r in records) == 8
    run_until_killed(killed, kill_at=250)  # the last checkpoint is at 200, between meta-steps
    Trainer(killed, progress=False).train()
    assert scalars_without_time(killed.run_dir) == records
    assert same(final_params(killed), final_params(straight))
    s, k = (torch.load(f"{c.run_dir}/checkpoint.pt", weights_only=False)["learner"] for c in (straight, killed))
    assert same(s["ensemble"]["model"].values(), k["ensemble"]["model"].values())
    assert torch.equal(s["mrn"]["generator"], k["mrn"]["generator"]) and s["mrn"]["meta_steps"] == 8


# ---------------------------------------------------------------------------------------------- settings
def test_presets_keep_the_official_meta_steps_per_feedback_interval() -> None:
    for preset, env, every, lr in (("cpu", "walker_walk", 400, 5e-4), ("paper", "walker_walk", 1000, 5e-4),
                                   ("cpu", "metaworld_door-open-v3", 5000, 3e-4),
                                   ("paper", "metaworld_door-open-v3", 10_000, 3e-4)):
        cfg = preset_config(preset, env, method="mrn")
        assert (cfg.meta_every, cfg.meta_lr, cfg.outer_weight) == (every, lr, 0.1)
        assert cfg.meta_lr == cfg.lr  # the official inner step uses the critic's learning rate
    walker, door = 20_000 / 1000, 5000 / 10_000  # the official meta-steps per feedback interval
    assert preset_config("cpu", "walker_walk").num_interact / 400 == walker
    assert preset_config("cpu", "metaworld_door-open-v3").num_interact / 5000 == door
    assert IGNORED_FIELDS["mrn"] >= {"penalty_weight", "b_updates", "sobirl_warmup"}
    for method in ("sac", "pebble", "bilevel", "sobirl"):
        assert MRN_FIELDS <= IGNORED_FIELDS[method]
    assert not MRN_FIELDS & IGNORED_FIELDS["mrn"]


@pytest.mark.parametrize("change, flag", [({"meta_every": 0}, "--meta-every"),
                                          ({"outer_weight": -0.1}, "--outer-weight"),
                                          ({"outer_weight": float("nan")}, "--outer-weight"),
                                          ({"meta_lr": 0.0}, "--meta-lr")])
def test_bad_mrn_settings_fail_in_one_line_naming_the_flag(tiny, change, flag) -> None:
    with pytest.raises(ConfigError, match=flag) as err:
        validate(mrn_cfg(tiny, **change))
    assert "\n" not in str(err.value)
    validate(mrn_cfg(tiny, method="pebble", **change))  # methods that do not read the field do not check it


# ---------------------------------------------------------------------------------------------- sweep and plot
def test_sweep_accepts_mrn_and_splits_only_its_runs_by_its_fields(tmp_path: Path, capsys) -> None:
    from pref_brl.experiments.sweep import main
    from pref_brl.study import Grid, expand

    grid = Grid(name="study", root=str(tmp_path), preset="cpu", envs=("walker_walk",),
                methods=("pebble", "mrn"), budgets=(100,), teachers=("oracle",), seeds=(0,),
                overrides=(("outer_weight", (0.1, 0.5)), ("penalty_weight", (1.0, 2.0))))
    labels = [r.label for r in expand(grid)]
    assert labels == ["walker_walk/pebble/budget100/oracle/seed0",
                      "walker_walk/mrn+outer_weight=0.1/budget100/oracle/seed0",
                      "walker_walk/mrn+outer_weight=0.5/budget100/oracle/seed0"]
    assert main(["--root", str(tmp_path), "--methods", "mrn", "--budgets", "100", "--dry-run"]) == 0
    assert "new      walker_walk/mrn/budget100/oracle/seed0" in capsys.readouterr().out


def test_plot_groups_mrn_as_its_own_method(tmp_path: Path) -> None:
    from pref_brl.results import final_table, load
    from tests.test_plot import make_run

    for seed in range(3):
        make_run(tmp_path, "pebble", seed, [(100, 1.0 + seed)])
        make_run(tmp_path, "mrn", seed, [(100, 5.0 + seed)])
    runs, metrics = load([tmp_path])
    rows = final_table(runs, metrics, "mean", compare=(("mrn", "pebble"),), reps=100)
    assert [(r.group.label, r.point) for r in rows] == [("pebble", 2.0), ("mrn", 6.0)]
    assert rows[1].poi["mrn > pebble"][0] == 1.0


def test_help_documents_the_mrn_flags(capsys) -> None:
    from pref_brl.experiments.train import main

    with pytest.raises(SystemExit) as exit_help:
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert exit_help.value.code == 0 and "mrn" in text
    for flag in ("--meta-every", "--outer-weight", "--meta-lr"):
        assert flag in text
    assert "env steps between meta-steps" in text and "0 makes mrn train exactly like pebble" in text
