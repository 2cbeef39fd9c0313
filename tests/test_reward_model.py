import copy
import io
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pref_brl.preferences import PreferenceBuffer, SegmentPairs
from pref_brl.reward_model import RewardEnsemble

OBS, ACT, H = 4, 2, 5


def small(seed: int = 0, **kw) -> RewardEnsemble:
    kw = {"hidden": 32, **kw}
    return RewardEnsemble(OBS, ACT, seed=seed, **kw)


def loop_forward(ens: RewardEnsemble, sa: torch.Tensor) -> torch.Tensor:
    """Reference: each member as a plain MLP, one at a time."""
    out = []
    for m in range(ens.n_members):
        h = sa
        n_layers = len(ens.weights)
        for i, (w, b) in enumerate(zip(ens.weights, ens.biases, strict=True)):
            h = h @ w[m] + b[m, 0]
            if i < n_layers - 1:
                h = torch.where(h > 0, h, 0.01 * h)
        out.append(torch.tanh(h[:, 0]))
    return torch.stack(out)


def toy_preferences(n: int, seed: int = 0, equal_frac: float = 0.0) -> PreferenceBuffer:
    """Pairs labelled by a hidden linear reward r(s, a) = w·s: separable by construction."""
    g = torch.Generator().manual_seed(seed)
    w = torch.tensor([1.0, -1.0, 0.5, 0.0])
    obs0, obs1 = torch.randn(n, H, OBS, generator=g), torch.randn(n, H, OBS, generator=g)
    act0, act1 = torch.randn(n, H, ACT, generator=g), torch.randn(n, H, ACT, generator=g)
    rew0, rew1 = obs0 @ w, obs1 @ w
    labels = (rew1.sum(1) > rew0.sum(1)).float()
    labels[: int(equal_frac * n)] = 0.5
    buf = PreferenceBuffer()
    buf.add(SegmentPairs(obs0, act0, rew0, obs1, act1, rew1), labels)
    return buf


def test_shapes_range_and_broadcast():
    ens = small()
    sa = torch.randn(7, OBS + ACT)
    r = ens.member_rewards(sa)
    assert r.shape == (3, 7) and bool((r.abs() < 1).all())
    torch.testing.assert_close(r, ens.member_rewards(sa.expand(3, 7, OBS + ACT).contiguous()))
    assert ens.segment_returns(torch.randn(2, H, OBS + ACT)).shape == (3, 2)
    assert ens.segment_returns(torch.randn(3, 2, H, OBS + ACT)).shape == (3, 2)
    with pytest.raises(ValueError):
        ens.member_rewards(torch.randn(2, 7, OBS + ACT))


def test_architecture_and_init():
    ens = RewardEnsemble(OBS, ACT)  # paper sizes: 3 hidden layers of 256
    assert [tuple(w.shape) for w in ens.weights] == [(3, 6, 256), (3, 256, 256), (3, 256, 256), (3, 256, 1)]
    assert [tuple(b.shape) for b in ens.biases] == [(3, 1, 256), (3, 1, 256), (3, 1, 256), (3, 1, 1)]
    w = ens.weights[1].detach()
    bound = 1 / math.sqrt(256)
    assert float(w.abs().max()) <= bound
    assert float(w.std()) == pytest.approx(bound / math.sqrt(3), rel=0.02)  # uniform(-b, b), like nn.Linear
    assert not torch.equal(w[0], w[1]) and not torch.equal(w[1], w[2])  # members differ
    again = RewardEnsemble(OBS, ACT)
    assert all(torch.equal(a, b) for a, b in zip(ens.parameters(), again.parameters(), strict=True))
    other_seed = RewardEnsemble(OBS, ACT, seed=1)
    assert not torch.equal(other_seed.weights[0], ens.weights[0])


def test_mean_reward_equals_member_loop_and_chunking():
    ens = small(n_layers=3)
    obs, act = torch.randn(103, OBS), torch.randn(103, ACT)
    expected = loop_forward(ens, torch.cat([obs, act], 1)).mean(0)
    torch.testing.assert_close(ens.mean_reward(obs, act), expected)
    torch.testing.assert_close(ens.mean_reward(obs, act, chunk=10), expected)
    mean, std = ens.mean_std_reward(obs, act, chunk=17)
    torch.testing.assert_close(std, loop_forward(ens, torch.cat([obs, act], 1)).std(0, correction=0))
    assert not ens.mean_reward(obs, act).requires_grad


def test_segment_returns_and_pair_logits():
    ens = small()
    sa0, sa1 = torch.randn(6, H, OBS + ACT), torch.randn(6, H, OBS + ACT)
    ret0 = loop_forward(ens, sa0.reshape(-1, OBS + ACT)).reshape(3, 6, H).sum(-1)
    ret1 = loop_forward(ens, sa1.reshape(-1, OBS + ACT)).reshape(3, 6, H).sum(-1)
    torch.testing.assert_close(ens.segment_returns(sa0), ret0)
    torch.testing.assert_close(ens.pair_logits(sa0, sa1), ret1 - ret0)  # positive => sigma^1 preferred


def test_pair_loss_hard_and_soft_targets():
    logits = torch.tensor([[-2.0, 0.0, 3.0], [1.0, -1.0, 0.5]], requires_grad=True)
    hard = RewardEnsemble.pair_loss(logits, torch.tensor([1.0, 0.0, 0.0]))
    sign = torch.tensor([1.0, -1.0, -1.0])  # label 1 => -log P(sigma^1), label 0 => -log P(sigma^0)
    expected = -F.logsigmoid(sign * logits)
    torch.testing.assert_close(hard, expected)
    soft = RewardEnsemble.pair_loss(logits, torch.full((3,), 0.5))
    x = logits.detach()
    torch.testing.assert_close(soft, 0.5 * (F.softplus(x) + F.softplus(-x)))
    # the "equal" target is minimised at P = 0.5: its gradient there is zero and elsewhere points to 0
    (g,) = torch.autograd.grad(soft.sum(), logits)
    assert g[0, 1] == 0 and g[0, 0] < 0 and g[0, 2] > 0


def test_training_learns_separable_preferences():
    buf = toy_preferences(300)
    ens = small(lr=1e-3)
    rng = np.random.default_rng(0)
    before = ens.accuracy(buf)
    metrics = ens.train_round(buf, max_epochs=60, rng=rng, batch_size=32, stop_accuracy=0.95)
    assert set(metrics) == {"reward/loss", "reward/accuracy", "reward/epochs", "reward/ce_grad_norm"}
    assert metrics["reward/accuracy"] > 0.95 and metrics["reward/epochs"] < 60  # early stop happened
    assert ens.accuracy(buf) > 0.9 > 0.7 > before
    assert math.isfinite(metrics["reward/loss"]) and metrics["reward/ce_grad_norm"] > 0
    assert ens.accuracy(toy_preferences(500, seed=1)) > 0.8  # it learnt the reward, not the pairs


def test_equal_labels_are_excluded_from_accuracy_but_trained_on():
    buf = toy_preferences(64, equal_frac=0.25)
    ens = small()
    metrics = ens.train_round(buf, max_epochs=1, rng=np.random.default_rng(0))
    logits = ens.pair_logits(buf.sa0, buf.sa1)
    assert 0 <= metrics["reward/accuracy"] <= 1
    all_equal = PreferenceBuffer()
    all_equal.add(SegmentPairs(torch.randn(4, H, OBS), torch.randn(4, H, ACT), torch.zeros(4, H),
                               torch.randn(4, H, OBS), torch.randn(4, H, ACT), torch.zeros(4, H)),
                  torch.full((4,), 0.5))
    m = ens.train_round(all_equal, max_epochs=3, rng=np.random.default_rng(0))
    assert math.isnan(m["reward/accuracy"]) and m["reward/epochs"] == 3
    assert not torch.equal(logits, ens.pair_logits(buf.sa0, buf.sa1))


def test_each_member_gets_its_own_permutation():
    buf = toy_preferences(40)
    ens = small()
    seen: list[torch.Tensor] = []
    original = ens._train_step

    def spy(sa0, sa1, targets, extra):
        seen.append(sa0[:, :, 0, 0].clone())
        return original(sa0, sa1, targets, extra)

    ens._train_step = spy  # type: ignore[method-assign]
    ens.train_round(buf, max_epochs=1, rng=np.random.default_rng(0), batch_size=16, stop_accuracy=2.0)
    order = torch.cat(seen, dim=1)  # [M, N]: first feature of each visited pair
    assert [s.shape[1] for s in seen] == [16, 16, 8]
    for m in range(3):  # every member visits every pair exactly once
        assert torch.equal(order[m].sort().values, buf.sa0[:, 0, 0].sort().values)
    assert not torch.equal(order[0], order[1])


def test_extra_loss_reaches_only_its_member():
    buf = toy_preferences(32)
    base = small()
    probe = torch.randn(16, OBS + ACT)
    for m in range(3):
        plain, pushed = copy.deepcopy(base), copy.deepcopy(base)

        def extra(ens: RewardEnsemble, m: int = m) -> torch.Tensor:
            r = ens.member_rewards(probe)  # [M, N]
            return -10.0 * r[m].mean() * F.one_hot(torch.tensor(m), 3).float()

        plain.train_round(buf, max_epochs=2, rng=np.random.default_rng(1), stop_accuracy=2.0)
        metrics = pushed.train_round(buf, max_epochs=2, rng=np.random.default_rng(1), stop_accuracy=2.0,
                                     extra_loss=extra)
        assert metrics["reward/extra_grad_norm"] > 0 and metrics["reward/extra_loss"] != 0
        for p_plain, p_pushed in zip(plain.parameters(), pushed.parameters(), strict=True):
            for k in range(3):
                same = torch.equal(p_plain[k], p_pushed[k])
                assert same == (k != m), f"extra loss of member {m} changed member {k}: {not same}"
        # and it pushed member m's reward up where asked
        assert plain.member_rewards(probe)[m].mean() < pushed.member_rewards(probe)[m].mean()


def test_extra_loss_shape_is_checked():
    ens = small()
    with pytest.raises(ValueError, match="extra_loss must return shape"):
        ens.train_round(toy_preferences(8), 1, np.random.default_rng(0), extra_loss=lambda e: torch.zeros(()))


def test_full_state_roundtrip_resumes_exactly():
    buf = toy_preferences(50)
    a = small()
    a.train_round(buf, 2, np.random.default_rng(0), batch_size=16, stop_accuracy=2.0)
    bytes_ = io.BytesIO()
    torch.save(a.full_state(), bytes_)
    bytes_.seek(0)
    b = small(seed=123)
    b.load_full_state(torch.load(bytes_, weights_only=True))
    assert len(b.optimizer.state) == len(list(b.parameters()))
    a.train_round(buf, 2, np.random.default_rng(7), batch_size=16, stop_accuracy=2.0)
    b.train_round(buf, 2, np.random.default_rng(7), batch_size=16, stop_accuracy=2.0)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


def test_float64_ensemble():
    ens = small(dtype=torch.float64)
    r = ens.mean_reward(torch.randn(5, OBS), torch.randn(5, ACT))
    assert r.dtype == torch.float64
    metrics = ens.train_round(toy_preferences(16), 1, np.random.default_rng(0))
    assert math.isfinite(metrics["reward/loss"])


@pytest.mark.gpu
def test_cuda_matches_cpu():
    cpu, gpu = small(), small(device="cuda")
    obs, act = torch.randn(50, OBS), torch.randn(50, ACT)
    torch.testing.assert_close(gpu.mean_reward(obs, act), cpu.mean_reward(obs, act), rtol=1e-4, atol=1e-5)
    assert gpu.mean_reward(obs.cuda(), act.cuda()).device.type == "cuda"
    metrics = gpu.train_round(toy_preferences(40), 2, np.random.default_rng(0))
    assert math.isfinite(metrics["reward/loss"])
