"""The learned reward: an ensemble of MLPs trained with the Bradley–Terry loss (PEBBLE, Lee et al., ICML 2021).

All members are held as *stacked* parameters (weights [M, in, out], biases [M, 1, out]) and evaluated
with one ``torch.baddbmm`` per layer, so the whole ensemble is a single batched forward. Members are
nevertheless independent: member m's output depends only on member m's slices of the parameters, and the
training loss is a sum over members. One Adam optimiser over the stacked tensors is exactly equivalent to
one Adam per member (Adam is element-wise).

Label convention: 1 ⇒ σ¹ preferred, 0 ⇒ σ⁰ preferred, 0.5 ⇒ equal; P(σ¹ ≻ σ⁰) = sigmoid(pair_logits).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pref_brl.agents.networks import dense_act, onednn_eligible

if TYPE_CHECKING:
    from pref_brl.preferences import PreferenceBuffer

__all__ = ["ExtraLoss", "RewardEnsemble", "hard_label_accuracy"]

CPU_CHUNK = 4096
"""rows per ensemble forward without gradients on CPU (cache-sized; see _reduce)"""
GPU_CHUNK = 65536

ExtraLoss = Callable[["RewardEnsemble"], Tensor]
"""``extra_loss(ensemble) -> Tensor[M]``: one additional loss value per member (e.g. the bilevel penalty)."""


class RewardEnsemble(nn.Module):
    """Ensemble of ``n_members`` reward MLPs r_φm(s, a) ∈ (-1, 1) with their own Adam optimiser.

    Architecture per member: ``n_layers`` hidden layers of ``hidden`` units with LeakyReLU (slope 0.01),
    a linear output and tanh. Each member is initialised like ``torch.nn.Linear`` (uniform ±1/√fan_in for
    weights and biases), independently, from a CPU ``torch.Generator`` seeded with ``seed`` -- so the
    initial weights do not depend on the device.

    Checkpointing: ``state_dict()`` is the ordinary module state (parameters only). Use
    :meth:`full_state` / :meth:`load_full_state` to save and restore parameters *and* optimiser together.
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        n_members: int = 3,
        hidden: int = 256,
        n_layers: int = 3,
        lr: float = 3e-4,
        device: torch.device | str = "cpu",
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        if n_members < 1 or n_layers < 0 or hidden < 1:
            raise ValueError(f"bad ensemble shape: members={n_members}, layers={n_layers}, hidden={hidden}")
        self.obs_dim, self.act_dim, self.n_members = obs_dim, act_dim, n_members
        sizes = [obs_dim + act_dim] + [hidden] * n_layers + [1]
        gen = torch.Generator().manual_seed(seed)
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
            bound = 1.0 / math.sqrt(fan_in)
            w = (torch.rand(n_members, fan_in, fan_out, generator=gen, dtype=torch.float64) * 2 - 1) * bound
            b = (torch.rand(n_members, 1, fan_out, generator=gen, dtype=torch.float64) * 2 - 1) * bound
            self.weights.append(nn.Parameter(w.to(device=device, dtype=dtype)))
            self.biases.append(nn.Parameter(b.to(device=device, dtype=dtype)))
        self.optimizer = torch.optim.Adam(self.parameters(), lr=lr)

    @property
    def device(self) -> torch.device:
        return self.weights[0].device

    @property
    def dtype(self) -> torch.dtype:
        return self.weights[0].dtype

    # ------------------------------------------------------------------ forward
    def member_rewards(self, sa: Tensor) -> Tensor:
        """Per-member reward of each row: [M, N, D] -> [M, N]; a [N, D] input goes to every member.

        Large float32 CPU inputs run each member as a chain of fused oneDNN product + bias + activation
        calls (`agents.networks.dense_act`); others run all members at once with batched matmuls.
        """
        if not (sa.dim() == 2 or (sa.dim() == 3 and sa.shape[0] == self.n_members)):
            raise ValueError(
                f"member_rewards expects [N, D] or [{self.n_members}, N, D], got {tuple(sa.shape)}"
            )
        if onednn_eligible(sa, sa.shape[-2]):
            return torch.tanh(torch.stack([self._member_chain(m, x) for m, x in enumerate(
                [sa] * self.n_members if sa.dim() == 2 else sa.unbind(0))])).squeeze(-1)
        if sa.dim() == 2:
            # First layer as one broadcast matmul: [N, D] @ [M, D, H] -> [M, N, H].
            h = torch.matmul(sa, self.weights[0]).add_(self.biases[0])
        else:
            h = torch.baddbmm(self.biases[0], sa, self.weights[0])
        inplace = not torch.is_grad_enabled()  # relabel: one activation buffer fewer per layer
        for w, b in zip(self.weights[1:], self.biases[1:], strict=True):
            h = torch.baddbmm(b, F.leaky_relu(h, inplace=inplace), w)
        return torch.tanh(h).squeeze(-1)

    def _member_chain(self, m: int, h: Tensor) -> Tensor:
        """Member m's pre-tanh output [N, 1] of rows h [N, D]."""
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = dense_act(h, w[m], b[m], "leaky_relu" if i < last else "none")
        return h

    @torch.no_grad()
    def mean_reward(self, obs: Tensor, act: Tensor, chunk: int | None = None) -> Tensor:
        """Ensemble-mean reward [N] of ``concat(obs, act)``, in chunks, without gradients.

        Inputs may live on any device; each chunk is moved to the ensemble's device and the result is
        returned on ``obs``'s device (so relabelling a replay buffer needs no extra copies).
        """
        return self._reduce(obs, act, chunk, with_std=False)[0]

    @torch.no_grad()
    def mean_std_reward(self, obs: Tensor, act: Tensor, chunk: int | None = None) -> tuple[Tensor, Tensor]:
        """Ensemble mean and (population) std across members of the per-step reward, each [N]."""
        mean, std = self._reduce(obs, act, chunk, with_std=True)
        assert std is not None
        return mean, std

    def _reduce(self, obs: Tensor, act: Tensor, chunk: int | None, with_std: bool) -> tuple[Tensor, Tensor | None]:
        # On CPU, chunks of a few thousand rows keep each layer's activations in cache (1M rows: ~2x
        # faster than 65536-row chunks); a GPU wants large ones.
        chunk = chunk or (CPU_CHUNK if self.device.type == "cpu" else GPU_CHUNK)
        n = obs.shape[0]
        mean = torch.empty(n, dtype=self.dtype, device=obs.device)
        std = torch.empty(n, dtype=self.dtype, device=obs.device) if with_std else None
        for i in range(0, n, chunk):
            sa = torch.cat([obs[i : i + chunk], act[i : i + chunk]], dim=-1)
            r = self.member_rewards(sa.to(self.device, self.dtype, non_blocking=True))
            if std is None:
                mean[i : i + chunk] = r.mean(0)
                continue
            std_i, mean_i = torch.std_mean(r, dim=0, correction=0)
            mean[i : i + chunk] = mean_i
            std[i : i + chunk] = std_i
        return mean, std

    def segment_returns(self, sa: Tensor) -> Tensor:
        """Undiscounted segment returns [M, B] of ``sa`` [B, H, D] (shared) or [M, B, H, D] (per member)."""
        *lead, b, h, d = sa.shape
        flat = sa.reshape(*lead, b * h, d)
        return self.member_rewards(flat).reshape(self.n_members, b, h).sum(-1)

    def pair_logits(self, sa0: Tensor, sa1: Tensor) -> Tensor:
        """Bradley–Terry logits [M, B] = return(σ¹) − return(σ⁰); P(σ¹ ≻ σ⁰) = sigmoid(logit)."""
        b = sa0.shape[-3]
        returns = self.segment_returns(torch.cat([sa0, sa1], dim=-3))
        return returns[:, b:] - returns[:, :b]

    @staticmethod
    def pair_loss(logits: Tensor, targets: Tensor) -> Tensor:
        """Element-wise cross-entropy [M, B] for targets [B] in [0, 1] (hard 0/1, equal 0.5, or margins)."""
        return F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype).expand_as(logits),
                                                  reduction="none")

    # ------------------------------------------------------------------ training
    def train_round(
        self,
        prefs: PreferenceBuffer,
        max_epochs: int,
        rng: np.random.Generator,
        batch_size: int = 128,
        stop_accuracy: float = 0.97,
        extra_loss: ExtraLoss | None = None,
    ) -> dict[str, float]:
        """Train every member on all labels in ``prefs`` for up to ``max_epochs`` epochs.

        Each epoch, each member draws its own permutation of all N pairs (from ``rng``) and takes
        ⌈N / batch_size⌉ Adam steps on the mean cross-entropy of its minibatch. ``extra_loss(self)``, when
        given, returns one value per member that is added to that member's loss at every step.

        Training stops early once the epoch's training accuracy (mean over members, measured on the
        minibatches before each step, as in B-Pref) exceeds ``stop_accuracy``. Accuracy counts only hard
        labels (≠ 0.5): a pair is correct when sign(logit) agrees with the label; "equal" labels are
        excluded. If every label is "equal" the accuracy is NaN and no early stop happens.

        Returns ``reward/loss`` (last epoch's mean CE over members and pairs), ``reward/accuracy`` (last
        epoch), ``reward/epochs`` and ``reward/ce_grad_norm`` (norm of the CE gradient over all ensemble
        parameters at the last step); with ``extra_loss`` also ``reward/extra_loss`` (last epoch's mean of
        the per-member extra loss) and ``reward/extra_grad_norm`` (its gradient norm at the last step).
        """
        n = len(prefs)
        if n == 0:
            raise ValueError("train_round needs at least one labelled pair")
        if max_epochs < 1 or batch_size < 1:
            raise ValueError(f"need max_epochs >= 1 and batch_size >= 1, got {max_epochs} and {batch_size}")
        sa0, sa1 = prefs.sa0.to(self.device, self.dtype), prefs.sa1.to(self.device, self.dtype)
        labels = prefs.labels.to(self.device, self.dtype)
        metrics: dict[str, float] = {}
        for epoch in range(1, max_epochs + 1):
            order = torch.as_tensor(rng.permuted(np.tile(np.arange(n), (self.n_members, 1)), axis=1),
                                    device=self.device)
            sums = torch.zeros(4, dtype=torch.float64, device=self.device)  # ce, extra, correct, hard
            for start in range(0, n, batch_size):
                idx = order[:, start : start + batch_size]
                step = self._train_step(sa0[idx], sa1[idx], labels[idx], extra_loss)
                sums += step["sums"]
            metrics = self._epoch_metrics(sums, n, epoch, step, extra_loss is not None)
            if metrics["reward/accuracy"] > stop_accuracy:
                break
        return metrics

    def train_steps(
        self,
        prefs: PreferenceBuffer,
        steps: int,
        rng: np.random.Generator,
        batch_size: int = 128,
        extra_loss: ExtraLoss | None = None,
    ) -> dict[str, float]:
        """Exactly ``steps`` Adam steps of every member, each on its own minibatch of ``batch_size`` labelled
        pairs drawn without replacement from all of ``prefs`` (from ``rng``), with ``extra_loss`` added as in
        :meth:`train_round`. No early stop. Returns the same keys as :meth:`train_round`, over these steps
        (``reward/epochs`` is then the number of steps)."""
        n = len(prefs)
        if n == 0 or steps < 1:
            raise ValueError(f"train_steps needs labelled pairs and steps >= 1, got {n} pairs and {steps} steps")
        sa0, sa1 = prefs.sa0.to(self.device, self.dtype), prefs.sa1.to(self.device, self.dtype)
        labels = prefs.labels.to(self.device, self.dtype)
        size = min(batch_size, n)
        sums = torch.zeros(4, dtype=torch.float64, device=self.device)
        for _ in range(steps):
            idx = torch.as_tensor(np.stack([rng.choice(n, size, replace=False) for _ in range(self.n_members)]),
                                  device=self.device)
            step = self._train_step(sa0[idx], sa1[idx], labels[idx], extra_loss)
            sums += step["sums"]
        return self._epoch_metrics(sums, size * steps, steps, step, extra_loss is not None)

    def _train_step(
        self, sa0: Tensor, sa1: Tensor, targets: Tensor, extra_loss: ExtraLoss | None
    ) -> dict[str, Tensor]:
        """One Adam step on per-member minibatches sa0/sa1 [M, b, H, D], targets [M, b].

        The CE and extra-loss gradients are taken separately (two autograd calls over disjoint graphs,
        the same work as one backward of their sum) so that both norms can be reported.
        """
        params = list(self.parameters())
        logits = self.pair_logits(sa0, sa1)
        ce = self.pair_loss(logits, targets)
        grads = _grads(ce.mean(1).sum(), params)
        out = {"ce_grad_norm": _global_norm(grads), "extra_grad_norm": torch.zeros((), device=self.device)}
        extra_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        if extra_loss is not None:
            extra = extra_loss(self)
            if extra.shape != (self.n_members,):
                raise ValueError(f"extra_loss must return shape ({self.n_members},), got {list(extra.shape)}")
            extra_grads = _grads(extra.sum(), params)
            out["extra_grad_norm"] = _global_norm(extra_grads)
            grads = [g + e for g, e in zip(grads, extra_grads, strict=True)]
            extra_sum = extra.detach().double().mean() * targets.shape[1]
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            hard = targets != 0.5
            correct = ((logits > 0) == (targets > 0.5)) & hard
            per_member = torch.stack([ce.sum(), correct.sum(), hard.sum()]).double() / self.n_members
            out["sums"] = torch.stack([per_member[0], extra_sum, per_member[1], per_member[2]])
        return out

    @staticmethod
    def _epoch_metrics(
        sums: Tensor, n: int, epoch: int, last_step: dict[str, Tensor], has_extra: bool
    ) -> dict[str, float]:
        ce, extra, correct, hard = sums.tolist()
        metrics = {
            "reward/loss": ce / n,
            "reward/accuracy": correct / hard if hard > 0 else float("nan"),
            "reward/epochs": float(epoch),
            "reward/ce_grad_norm": float(last_step["ce_grad_norm"]),
        }
        if has_extra:
            metrics["reward/extra_loss"] = extra / n
            metrics["reward/extra_grad_norm"] = float(last_step["extra_grad_norm"])
        return metrics

    @torch.no_grad()
    def accuracy(self, prefs: PreferenceBuffer, chunk: int = 1024) -> float:
        """Ensemble-mean accuracy on the hard labels of ``prefs`` (no training); NaN if none are hard."""
        logits = torch.cat([
            self.pair_logits(prefs.sa0[i : i + chunk].to(self.device, self.dtype),
                             prefs.sa1[i : i + chunk].to(self.device, self.dtype))
            for i in range(0, len(prefs), chunk)
        ], dim=1)
        return hard_label_accuracy(logits, prefs.labels.to(self.device))

    # ------------------------------------------------------------------ checkpoints
    def full_state(self) -> dict[str, Any]:
        """Parameters and optimiser state together (what a checkpoint needs)."""
        return {"model": self.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_full_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`full_state` saved."""
        self.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])


def hard_label_accuracy(logits: Tensor, labels: Tensor) -> float:
    """Mean over members of the fraction of hard labels (≠ 0.5) whose sign the logits [M, B] predict."""
    hard = labels != 0.5
    if not bool(hard.any()):
        return float("nan")
    correct = (logits[:, hard] > 0) == (labels[hard] > 0.5)
    return float(correct.double().mean())


def _grads(loss: Tensor, params: list[nn.Parameter]) -> list[Tensor]:
    """d loss / d params, with zeros for parameters the loss does not reach."""
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params, strict=True)]


def _global_norm(tensors: list[Tensor]) -> Tensor:
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t) for t in tensors])).detach()
