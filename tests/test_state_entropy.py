import numpy as np
import pytest
import torch

from pref_brl.agents.state_entropy import RunningMoments, StateEntropy, knn_distance


def brute_force_knn(batch: np.ndarray, stored: np.ndarray, k: int) -> np.ndarray:
    dist = np.sqrt(((batch[:, None, :] - stored[None, :, :]) ** 2).sum(-1))
    return np.sort(dist, axis=1)[:, k]  # index k = (k+1)-th smallest, the zero self-distance included


def test_knn_matches_brute_force_and_ignores_chunking():
    g = torch.Generator().manual_seed(0)
    stored = torch.randn(300, 5, generator=g)
    batch = stored[torch.randperm(300, generator=g)[:40]]
    expected = brute_force_knn(batch.double().numpy(), stored.double().numpy(), k=5)
    for chunk in (1, 3, 7, 64, 300, 10_000):
        got = knn_distance(batch, stored, k=5, chunk=chunk)
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-4, err_msg=f"chunk={chunk}")


def test_knn_excludes_the_state_itself():
    stored = torch.tensor([[0.0], [1.0], [3.0], [6.0]])
    # from 0: neighbours at 1, 3, 6 -> k=1 is 1, k=3 is 6 (the state itself never counts)
    np.testing.assert_allclose(knn_distance(stored[:1], stored, k=1).numpy(), [1.0])
    np.testing.assert_allclose(knn_distance(stored[:1], stored, k=3).numpy(), [6.0])
    with pytest.raises(ValueError, match="at least 5 stored states"):
        knn_distance(stored[:1], stored, k=4)


def test_running_moments_match_numpy_over_all_batches():
    rng = np.random.default_rng(0)
    batches = [rng.normal(3.0, 2.0, size=(n, 3)) for n in (1, 5, 1, 100, 17)]
    moments = RunningMoments(shape=(3,))
    for i, b in enumerate(batches):
        moments.update(torch.from_numpy(b))
        seen = np.concatenate(batches[: i + 1])
        np.testing.assert_allclose(moments.mean.numpy(), seen.mean(0), rtol=1e-12)
        np.testing.assert_allclose(moments.var.numpy(), seen.var(0), rtol=1e-10, atol=1e-12)
    assert moments.count == 124
    scalar = RunningMoments()
    for b in batches:
        scalar.update(torch.from_numpy(b[:, 0]).float())
    np.testing.assert_allclose(float(scalar.std), np.concatenate(batches)[:, 0].std(), rtol=1e-6)


def test_running_moments_state_dict_roundtrip():
    m = RunningMoments()
    m.update(torch.tensor([1.0, 2.0, 4.0]))
    other = RunningMoments()
    other.load_state_dict(m.state_dict())
    m.update(torch.tensor([8.0]))
    other.update(torch.tensor([8.0]))
    assert other.count == 4 and float(other.mean) == float(m.mean) == 3.75
    assert float(other.var) == float(m.var)


def test_intrinsic_reward_is_knn_over_running_std():
    g = torch.Generator().manual_seed(1)
    stored = torch.randn(200, 4, generator=g)
    se = StateEntropy(k=5, chunk=32)
    assert se.metrics() == {}
    raw_all = []
    for start in (0, 50, 100):
        batch = stored[start : start + 50]
        raw = knn_distance(batch, stored, k=5)
        raw_all.append(raw)
        reward = se.intrinsic_reward(batch, stored)
        std = torch.cat(raw_all).double().std(correction=0)  # moments include this batch, mean not removed
        torch.testing.assert_close(reward.double(), raw.double() / std, rtol=1e-5, atol=0)
        assert se.metrics()["explore/state_entropy"] == pytest.approx(float(raw.mean()), rel=1e-6)
    restored = StateEntropy()
    restored.load_state_dict(se.state_dict())
    batch = stored[150:]
    torch.testing.assert_close(restored.intrinsic_reward(batch, stored), se.intrinsic_reward(batch, stored))


def test_single_state_first_batch_is_not_divided_by_zero():
    stored = torch.arange(10.0)[:, None]
    reward = StateEntropy(k=2).intrinsic_reward(stored[:1], stored)
    assert torch.isfinite(reward).all() and float(reward) == 2.0


@pytest.mark.gpu
def test_cuda_knn_matches_cpu():
    stored = torch.randn(500, 6)
    se_cpu, se_gpu = StateEntropy(chunk=128), StateEntropy(chunk=128)
    expected = se_cpu.intrinsic_reward(stored[:64], stored)
    got = se_gpu.intrinsic_reward(stored[:64].cuda(), stored.cuda())
    torch.testing.assert_close(got.cpu(), expected, rtol=1e-4, atol=1e-5)


def test_pebble_explores_with_the_fifth_nearest_neighbour(tiny) -> None:
    """PEBBLE's exploration reward is the distance to the k = 5th nearest stored state (B-Pref), not the 1st."""
    from pref_brl.trainer import Trainer

    trainer = Trainer(tiny("knn", method="pebble", steps=400), progress=False)
    learner = trainer.learner
    obs = torch.randn(64, 3)
    reward = learner.entropy.intrinsic_reward(obs[:8], obs)
    distances = torch.cdist(obs[:8], obs).sort(dim=1).values  # column 0 is the state itself
    expected = distances[:, 5] / learner.entropy.moments.std
    torch.testing.assert_close(reward.reshape(-1), expected.reshape(-1))
    trainer.close()
