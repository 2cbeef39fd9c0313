"""The compiled functional SAC update (agents.fast_update) against the plain autograd + torch.optim path.

Shapes match the tiny trainer configuration (obs 24, act 6, one hidden layer of 16, batch 16) so that one
compiled graph serves most tests; its products take both routes (oneDNN for the hidden layer, aten for the
output heads). Compilation costs seconds with a warm inductor cache, up to a minute cold.
"""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from pref_brl.agents import fast_update, networks
from pref_brl.agents.networks import dense_act, matmul, onednn_eligible
from pref_brl.agents.replay import Batch
from pref_brl.agents.sac import SAC, SACConfig
from pref_brl.trainer import Trainer
from tests.conftest import scalars_without_time
from tests.test_trainer import final_params, run_until_killed

OBS, ACT, BATCH = 24, 6, 16
CFG = SACConfig(hidden_dim=16, hidden_depth=1)
TOL = dict(rtol=1e-4, atol=1e-6)


def make_batch(seed: int) -> Batch:
    g = torch.Generator().manual_seed(seed)
    return Batch(torch.randn(BATCH, OBS, generator=g), torch.rand(BATCH, ACT, generator=g) * 2 - 1,
                 torch.randn(BATCH, 1, generator=g), torch.randn(BATCH, OBS, generator=g),
                 (torch.rand(BATCH, 1, generator=g) > 0.1).float())


def pair(cfg: SACConfig = CFG, seed: int = 3) -> tuple[SAC, SAC]:
    """The same agent twice: plain path and compiled path."""
    return SAC(OBS, ACT, cfg, seed=seed), SAC(OBS, ACT, dataclasses.replace(cfg, compile=True), seed=seed)


def flat_state(agent: SAC) -> dict[str, torch.Tensor]:
    """Every floating tensor of the agent's state (networks, targets, temperature, Adam moments, steps)."""
    out: dict[str, torch.Tensor] = {}

    def walk(x, path: str) -> None:
        if isinstance(x, dict):
            for k, v in x.items():
                walk(v, f"{path}/{k}")
        elif isinstance(x, (list, tuple)):
            for i, v in enumerate(x):
                walk(v, f"{path}[{i}]")
        elif torch.is_tensor(x) and x.is_floating_point():
            out[path] = x

    state = agent.state_dict()
    walk({k: v for k, v in state.items() if "generator" not in k}, "")
    return out


def assert_states_close(a: SAC, b: SAC, **tol) -> None:
    sa, sb = flat_state(a), flat_state(b)
    assert sa.keys() == sb.keys()
    for key in sa:
        torch.testing.assert_close(sb[key], sa[key], msg=lambda m, key=key: f"{key}: {m}", **(tol or TOL))


def test_one_update_equals_the_plain_reference() -> None:
    plain, fast = pair()
    batch = make_batch(0)
    m_plain, m_fast = plain.update(batch), fast.update(batch)
    assert m_plain.keys() == m_fast.keys()
    for key in m_plain:
        torch.testing.assert_close(m_fast[key], m_plain[key], **TOL)
    # After one Adam step exp_avg = (1 - β1)·grad: the gradients themselves agree.
    for p_plain, p_fast in zip([*plain.actor.parameters(), *plain.critic.parameters()],
                               [*fast.actor.parameters(), *fast.critic.parameters()]):
        opt_p = plain.actor_opt if p_plain in set(plain.actor.parameters()) else plain.critic_opt
        opt_f = fast.actor_opt if p_fast in set(fast.actor.parameters()) else fast.critic_opt
        torch.testing.assert_close(opt_f.state[p_fast]["exp_avg"] / 0.1, opt_p.state[p_plain]["exp_avg"] / 0.1,
                                   **TOL)
    assert_states_close(plain, fast)
    assert torch.equal(plain.generator.get_state(), fast.generator.get_state())  # same random draws


def test_uncompiled_functional_step_is_the_same_function() -> None:
    """The graph's body run eagerly gives the compiled result: compilation changes no maths."""
    agent = SAC(OBS, ACT, dataclasses.replace(CFG, compile=True), seed=5)
    eager = copy.deepcopy(agent)
    batch = make_batch(1)
    agent.update(batch)
    compiled, fast_update._compiled_step = fast_update._compiled_step, fast_update.sac_step
    try:
        eager.update(batch)
    finally:
        fast_update._compiled_step = compiled
    assert_states_close(eager, agent)


def test_several_updates_track_the_plain_path() -> None:
    plain, fast = pair()
    for i in range(5):
        plain.update(make_batch(i))
        fast.update(make_batch(i))
    assert_states_close(plain, fast, rtol=1e-3, atol=1e-5)


def test_penalised_agent_shape_frozen_temperature_and_extra_term() -> None:
    """Agent B of the bilevel method: no temperature step, an extra actor-loss term."""
    plain, fast = pair()
    for agent in (plain, fast):
        agent.learn_temperature = False
    obs = make_batch(9).obs

    def extra(agent: SAC):
        return lambda: 0.3 * agent.actor(obs)[0].pow(2).mean()

    batch = make_batch(2)
    m_plain, m_fast = plain.update(batch, extra(plain)), fast.update(batch, extra(fast))
    for key in m_plain:
        torch.testing.assert_close(m_fast[key], m_plain[key], **TOL)
    assert_states_close(plain, fast)
    assert len(fast.alpha_opt.state) == 0 and float(fast.log_alpha) == float(plain.log_alpha)


def test_same_seed_same_numbers_and_resume_is_exact() -> None:
    a = SAC(OBS, ACT, dataclasses.replace(CFG, compile=True), seed=7)
    b = SAC(OBS, ACT, dataclasses.replace(CFG, compile=True), seed=7)
    for i in range(3):
        a.update(make_batch(i))
        b.update(make_batch(i))
    assert all(torch.equal(x, y) for x, y in zip(flat_state(a).values(), flat_state(b).values()))
    resumed = SAC(OBS, ACT, dataclasses.replace(CFG, compile=True), seed=99)
    resumed.load_state_dict(copy.deepcopy(a.state_dict()))
    for i in range(3, 5):
        a.update(make_batch(i))
        resumed.update(make_batch(i))
    assert all(torch.equal(x, y) for x, y in zip(flat_state(a).values(), flat_state(resumed).values()))


def test_checkpoints_move_between_paths() -> None:
    """One state format: a compiled agent's state continues on the plain path and vice versa."""
    plain, fast = pair()
    fast.update(make_batch(0))
    plain.load_state_dict(copy.deepcopy(fast.state_dict()))
    plain.update(make_batch(1))
    fast.update(make_batch(1))
    assert_states_close(plain, fast)
    plain.reset_critic()  # PEBBLE's fresh critic optimiser: the compiled path starts its moments anew
    fast.reset_critic()
    plain.update(make_batch(2))
    fast.update(make_batch(2))
    assert_states_close(plain, fast, rtol=1e-3, atol=1e-5)


@pytest.mark.slow
def test_critic_only_updates_match() -> None:
    cfg = dataclasses.replace(CFG, actor_update_every=2)
    plain, fast = pair(cfg)
    for i in range(3):
        m_plain, m_fast = plain.update(make_batch(i)), fast.update(make_batch(i))
        assert m_plain.keys() == m_fast.keys()
    assert_states_close(plain, fast)


def test_trainer_with_compile_is_deterministic_and_resumes_exactly(tiny) -> None:
    """Same config twice -> identical scalars; kill at 750 and resume -> identical to the straight run."""
    a, b, killed = (tiny(name, compile=True) for name in ("a", "b", "killed"))
    Trainer(a, progress=False).train()
    Trainer(b, progress=False).train()
    assert scalars_without_time(a.run_dir) == scalars_without_time(b.run_dir)
    run_until_killed(killed, kill_at=750)  # last checkpoint: the episode boundary at step 600
    Trainer(killed, progress=False).train()
    assert scalars_without_time(killed.run_dir) == scalars_without_time(a.run_dir)
    assert all(torch.equal(x, y) for x, y in zip(final_params(killed), final_params(a)))
    assert fast_update.warmup_seconds() > 0


@pytest.mark.parametrize("activation", ["none", "relu", "leaky_relu"])
def test_onednn_layers_match_aten_values_and_gradients(activation: str) -> None:
    """networks.matmul / dense_act (oneDNN on CPU) against aten's autograd, forward and backward."""
    g = torch.Generator().manual_seed(4)
    x, w, b = (torch.randn(*shape, generator=g, requires_grad=True) for shape in ((64, 40), (40, 32), (1, 32)))
    act = {"none": lambda h: h, "relu": torch.relu, "leaky_relu": torch.nn.functional.leaky_relu}[activation]
    reference = act(x @ w + b)
    grads_ref = torch.autograd.grad(reference.pow(2).sum(), (x, w, b))
    for out in (dense_act(x, w, b, activation), act(matmul(x, w) + b)):
        assert onednn_eligible(x, 64, 40, 32) == networks.ONEDNN  # the oneDNN route is the one tested here
        torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-5)
        for got, want in zip(torch.autograd.grad(out.pow(2).sum(), (x, w, b)), grads_ref):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        torch.testing.assert_close(dense_act(x, w, b, activation), reference, rtol=1e-5, atol=1e-5)


def test_reward_ensemble_member_chains_match_the_stacked_forward(monkeypatch) -> None:
    """The oneDNN per-member chains of RewardEnsemble equal its batched-matmul path, values and gradients."""
    from pref_brl import reward_model

    ens = reward_model.RewardEnsemble(OBS, ACT, 3, 32, 2)
    sa = torch.randn(3, 100, OBS + ACT)

    def forward_and_grads() -> list[torch.Tensor]:
        out = ens.member_rewards(sa)
        return [out.detach(), *torch.autograd.grad(out.sin().sum(), list(ens.parameters()))]

    chains = forward_and_grads()
    with torch.no_grad():
        relabel = ens.mean_reward(sa[0, :, :OBS], sa[0, :, OBS:])
    monkeypatch.setattr(reward_model, "onednn_eligible", lambda *args: False)
    for got, want in zip(chains, forward_and_grads()):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(relabel, ens.mean_reward(sa[0, :, :OBS], sa[0, :, OBS:]), rtol=1e-4, atol=1e-5)
