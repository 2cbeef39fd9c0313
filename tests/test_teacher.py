import math

import numpy as np
import pytest
import torch

from pref_brl.teacher import TEACHER_PRESETS, ScriptedTeacher, TeacherConfig, teacher_from_name

H = 10


def teacher(rng_seed: int = 0, **kw) -> ScriptedTeacher:
    return ScriptedTeacher(TeacherConfig(**kw), np.random.default_rng(rng_seed))


def constant_segments(ret0: list[float], ret1: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, H] reward segments whose sums are exactly ret0 / ret1 (all reward at the middle step)."""
    r0, r1 = torch.zeros(len(ret0), H), torch.zeros(len(ret1), H)
    r0[:, H // 2] = torch.tensor(ret0)
    r1[:, H // 2] = torch.tensor(ret1)
    return r0, r1


def test_presets_match_spec_table():
    inf = math.inf
    expected = {  # beta, gamma, eps_mistake, eps_skip, eps_equal
        "oracle": (inf, 1.0, 0.0, 0.0, 0.0),
        "mistake": (inf, 1.0, 0.1, 0.0, 0.0),
        "noisy": (1.0, 1.0, 0.0, 0.0, 0.0),
        "skip": (inf, 1.0, 0.0, 0.1, 0.0),
        "myopic": (inf, 0.9, 0.0, 0.0, 0.0),
        "equal": (inf, 1.0, 0.0, 0.0, 0.1),
    }
    assert set(TEACHER_PRESETS) == set(expected)
    for name, values in expected.items():
        c = teacher_from_name(name)
        assert (c.beta, c.gamma, c.eps_mistake, c.eps_skip, c.eps_equal) == values


def test_unknown_preset_lists_known_ones():
    with pytest.raises(ValueError, match="oracle, mistake, noisy, skip, myopic, equal"):
        teacher_from_name("perfect")


@pytest.mark.parametrize("bad", [dict(beta=-1.0), dict(gamma=0.0), dict(gamma=1.5), dict(eps_mistake=2.0)])
def test_config_validation(bad):
    with pytest.raises(ValueError):
        TeacherConfig(**bad)


def test_oracle_prefers_larger_sum_and_label_convention():
    r0, r1 = constant_segments([1.0, 5.0, 3.0, -2.0], [2.0, 4.0, 3.0, -1.0])
    # make the per-step profile non-trivial: the sum, not any single step, decides
    r1[0] = torch.tensor([2.0] + [0.0] * (H - 1))
    keep, labels = teacher().label(r0, r1, mean_episode_return=100.0, episode_length=1000)
    assert keep.dtype == torch.bool and bool(keep.all())
    assert labels.dtype == torch.float32
    # 1 => sigma^1 preferred; a tie goes to sigma^0 (label 0)
    assert labels.tolist() == [1.0, 0.0, 0.0, 1.0]


def test_myopic_weights_late_steps():
    gamma = 0.9
    r0 = torch.zeros(1, H)
    r1 = torch.zeros(1, H)
    r0[0, 0] = 1.0  # early reward: weight gamma^(H-1)
    r1[0, -1] = 0.5  # late reward: weight 1
    assert teacher().label(r0, r1, 0.0, 1000)[1].item() == 0.0  # undiscounted: sigma^0 wins
    assert teacher(gamma=gamma).label(r0, r1, 0.0, 1000)[1].item() == 1.0  # myopic: sigma^1 wins
    # exact weights gamma^(H-1-t) on random segments
    g = torch.Generator().manual_seed(0)
    r0, r1 = torch.randn(500, H, generator=g), torch.randn(500, H, generator=g)
    w = torch.tensor([gamma ** (H - 1 - t) for t in range(H)])
    expected = ((r1 * w).sum(1) > (r0 * w).sum(1)).float()
    labels = teacher(gamma=gamma).label(r0, r1, 0.0, 1000)[1]
    assert torch.equal(labels, expected)
    assert not torch.equal(labels, (r1.sum(1) > r0.sum(1)).float())  # the weighting mattered


def test_mistake_rate_matches_epsilon():
    n = 20000
    r0, r1 = constant_segments([0.0] * n, [1.0] * n)  # truth: all 1
    labels = teacher(eps_mistake=0.1).label(r0, r1, 0.0, 1000)[1]
    rate = float((labels == 0).float().mean())
    assert abs(rate - 0.1) < 0.01  # ~4.7 standard errors
    assert set(labels.unique().tolist()) == {0.0, 1.0}


def test_noisy_label_rate_matches_sigmoid():
    n = 20000
    for beta, gap in [(1.0, 0.0), (1.0, 1.0), (1.0, -2.0), (0.5, 3.0)]:
        r0, r1 = constant_segments([0.0] * n, [gap] * n)
        labels = teacher(beta=beta).label(r0, r1, 0.0, 1000)[1]
        p = 1.0 / (1.0 + math.exp(-beta * gap))
        assert abs(float(labels.mean()) - p) < 0.015, (beta, gap)


def test_thresholds_apply_epsilon_once():
    t = teacher(eps_skip=0.1, eps_equal=0.2)
    skip, equal = t.thresholds(mean_episode_return=200.0, segment=50, episode_length=1000)
    assert skip == pytest.approx(0.1 * 200 * 50 / 1000) and equal == pytest.approx(0.2 * 200 * 50 / 1000)


def test_skip_threshold():
    # threshold = 0.1 * 250 * H / 1000 = 0.25 (exact in binary, like the returns below)
    r0, r1 = constant_segments([0.125, 0.125, 0.5, -1.0, 0.25], [0.1875, 0.3125, -1.0, -2.0, 0.25])
    keep, labels = teacher(eps_skip=0.1).label(r0, r1, mean_episode_return=250.0, episode_length=1000)
    assert keep.tolist() == [False, True, True, False, False]  # max(R0, R1) <= threshold is skipped
    assert labels[keep].tolist() == [1.0, 0.0]
    assert bool(torch.isnan(labels[~keep]).all())
    # without eps_skip nothing is skipped, however poor the segments
    assert bool(teacher().label(r0, r1, 100.0, 1000)[0].all())
    # a threshold <= 0 (mean return 0 or below, e.g. at the first round) keeps every query, as B-Pref does
    assert bool(teacher(eps_skip=0.1).label(r0, r1, 0.0, 1000)[0].all())
    assert bool(teacher(eps_skip=0.1).label(r0, r1, -50.0, 1000)[0].all())


def test_equal_threshold_applied_last_and_on_undiscounted_sums():
    # threshold = 0.1 * 250 * H / 1000 = 0.25
    r0, r1 = constant_segments([1.0, 1.0, 1.0, 1.0], [1.125, 1.1875, 1.25, 0.5])
    t = teacher(eps_equal=0.1, eps_mistake=1.0)  # every label flipped, equal ones still 0.5
    labels = t.label(r0, r1, mean_episode_return=250.0, episode_length=1000)[1]
    assert labels.tolist() == [0.5, 0.5, 0.0, 1.0]
    # equal mask uses the undiscounted sums even for a myopic teacher
    r0 = torch.zeros(1, H)
    r1 = torch.zeros(1, H)
    r0[0, 0], r1[0, -1] = 1.0, 1.1  # equal when undiscounted, clearly different when discounted
    assert teacher(eps_equal=0.1, gamma=0.5).label(r0, r1, 250.0, 1000)[1].item() == 0.5
    assert teacher(gamma=0.5).label(r0, r1, 250.0, 1000)[1].item() == 1.0


def test_state_dict_restores_random_stream():
    r0, r1 = constant_segments([0.0] * 50, [0.3] * 50)
    t = teacher(rng_seed=3, beta=1.0, eps_mistake=0.2)
    t.label(r0, r1, 0.0, 1000)
    state = t.state_dict()
    first = t.label(r0, r1, 0.0, 1000)[1]
    other = teacher(rng_seed=99, beta=1.0, eps_mistake=0.2)
    other.load_state_dict(state)
    assert torch.equal(other.label(r0, r1, 0.0, 1000)[1], first)
