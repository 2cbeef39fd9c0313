"""pref-brl-bench helpers: FLOP counting against torch's FLOP counter, and a tiny run of the table."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from pref_brl.agents.replay import Batch
from pref_brl.agents.sac import SAC, SACConfig
from pref_brl.experiments import bench
from pref_brl.reward_model import RewardEnsemble


@pytest.mark.parametrize("hidden, depth, batch", [(8, 1, 4), (12, 2, 6), (10, 3, 5)])
def test_sac_update_flops_match_torch_counter(hidden: int, depth: int, batch: int) -> None:
    obs, act = 5, 3
    agent = SAC(obs, act, SACConfig(hidden_dim=hidden, hidden_depth=depth))  # the plain path: aten products
    g = torch.Generator().manual_seed(0)
    data = Batch(torch.randn(batch, obs, generator=g), torch.rand(batch, act, generator=g),
                 torch.randn(batch, 1, generator=g), torch.randn(batch, obs, generator=g), torch.ones(batch, 1))
    with FlopCounterMode(display=False) as counter:
        agent.update(data)
    assert counter.get_total_flops() == bench.sac_update_flops(obs, act, hidden, depth, batch)


def test_paper_scale_update_is_about_35_gflop() -> None:
    assert bench.sac_update_flops(24, 6, 1024, 2, 1024) == pytest.approx(35.27e9, rel=1e-3)
    assert bench.sac_update_flops(24, 6, 256, 2, 256) == pytest.approx(0.593e9, rel=1e-3)


def test_reward_step_and_relabel_flops_match_torch_counter() -> None:
    obs, act, hidden, members, pairs, segment = 4, 2, 8, 3, 3, 2  # below the oneDNN sizes: aten products
    ens = RewardEnsemble(obs, act, members, hidden, 2)
    g = torch.Generator().manual_seed(0)
    sa0, sa1 = (torch.randn(members, pairs, segment, obs + act, generator=g) for _ in range(2))
    with FlopCounterMode(display=False) as counter:
        ens._train_step(sa0, sa1, torch.ones(members, pairs), None)
    assert counter.get_total_flops() == bench.reward_step_flops(obs + act, hidden, 2, members, pairs, segment)
    with FlopCounterMode(display=False) as counter:
        ens.mean_reward(torch.randn(7, obs), torch.randn(7, act))
    assert counter.get_total_flops() == bench.relabel_flops(obs + act, hidden, 2, members, 7)


def test_paired_ratio_is_the_median_of_round_ratios() -> None:
    assert bench.paired([2.0, 9.0, 3.0], [1.0, 3.0, 3.0]) == 2.0


TINY = bench.Scale(rounds=1, sac_steps=3, big_steps=2, door_steps=2, updates=1, reward_steps=1, relabel=5000,
                   knn=(32, 300), e2e_steps=500, matmul=64, small=(16, 32), big=(16, 32))


def test_tiny_table_renders_every_row(capsys) -> None:
    rows = bench.run(TINY, only=("sac", "bonus", "relabel", "knn"), compile_=False)
    table = bench.render(rows)
    lines = table.splitlines()
    assert lines[0] == "| component | ours | peer or limit | ratio |"
    assert len(lines) == 2 + len(rows) == 2 + 1 + 2 + 1 + 1 + 1
    assert "SB3 SAC, same nets" in table and "of peak" in table and "an ensemble pass per batch" in table
    assert all(r.ours > 0 and r.peer > 0 and r.ratio > 0 for r in rows)


def test_clip_section_times_a_round_against_the_plain_renderer(monkeypatch) -> None:
    from pref_brl.experiments import bench_clips
    from tests.test_human import can_render

    if not can_render():
        pytest.skip("MuJoCo cannot render here (MUJOCO_GL=osmesa and libosmesa6, or egl)")
    monkeypatch.setattr(bench_clips, "EPISODES", 2)
    monkeypatch.setattr(bench_clips, "EPISODE_STEPS", 40)
    monkeypatch.setattr(bench_clips, "SEGMENT", 5)
    [row] = bench.clip_rows(bench.Scale(rounds=1, sac_steps=1, big_steps=1, door_steps=1, updates=1, reward_steps=1,
                                        relabel=1, knn=(1, 1), e2e_steps=1, matmul=1, clip_queries=2))
    assert row.unit == "s" and row.ours > 0 and row.peer > 0 and row.ratio == pytest.approx(row.peer / row.ours)
    assert "2 pairs = 4 clips of 5 frames" in row.component


def test_help_and_bad_section(capsys) -> None:
    with pytest.raises(SystemExit) as exit_help:
        bench.main(["--help"])
    assert exit_help.value.code == 0 and "--quick" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        bench.main(["--only", "warp-drive"])
    assert "unknown section" in capsys.readouterr().err


def test_env_step_row_pairs_door_opens_env_against_walkers() -> None:
    row = bench.env_step_row(bench.Scale(rounds=2, sac_steps=1, big_steps=1, door_steps=3, updates=1,
                                         reward_steps=1, relabel=1, knn=(1, 1), e2e_steps=1, matmul=8))
    assert row.ours > 0 and row.peer > 0 and row.ratio > 0 and row.peer_name == "walker_walk's env step"
    assert "30 steps a round" in row.component
