"""The bilevel penalty update for deep preference RL (docs/bilevel.md): pure functions of tensors.

Sign convention: the reward loss of member m is
    CE_m(φ_m) + λ [ mean_{τ∈T_A} R^γ_{φ_m}(τ) − mean_{τ∈T_B} R^γ_{φ_m}(τ) ],   λ = (1−γ) λ̃,
so a descent step raises r_φ where the penalised agent B goes and lowers it where the plain agent A goes.
Gradients flow only through the reward networks: trajectories are fixed data.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from pref_brl.preferences import Episode
from pref_brl.reward_model import RewardEnsemble


def stack_episodes(episodes: Sequence[Episode], device: str | torch.device = "cpu") -> tuple[Tensor, Tensor]:
    """(concat(obs, act) [N_ep, T, D], valid mask [N_ep, T]) for episodes of possibly unequal length."""
    length = max(len(e) for e in episodes)
    dim = episodes[0].obs.shape[1] + episodes[0].act.shape[1]
    sa = np.zeros((len(episodes), length, dim), dtype=np.float32)
    mask = np.zeros((len(episodes), length), dtype=np.float32)
    for i, ep in enumerate(episodes):
        sa[i, : len(ep)] = np.concatenate([ep.obs, ep.act], axis=1)
        mask[i, : len(ep)] = 1.0
    return torch.as_tensor(sa, device=device), torch.as_tensor(mask, device=device)


def discount_weights(length: int, gamma: float, device: str | torch.device = "cpu") -> Tensor:
    """γ^t for t = 0..length-1."""
    return gamma ** torch.arange(length, dtype=torch.float32, device=device)


def discounted_returns(ensemble: RewardEnsemble, sa: Tensor, mask: Tensor, gamma: float) -> Tensor:
    """R^γ_{φ_m}(τ) = Σ_t γ^t r_{φ_m}(s_t, a_t) for every member and episode: [M, N_ep]."""
    n_ep, length, dim = sa.shape
    rewards = ensemble.member_rewards(sa.reshape(n_ep * length, dim)).reshape(-1, n_ep, length)
    weights = discount_weights(length, gamma, sa.device) * mask
    return (rewards * weights).sum(-1)


def penalty_term(ensemble: RewardEnsemble, sa_a: Tensor, mask_a: Tensor, sa_b: Tensor, mask_b: Tensor,
                 lam: float, gamma: float) -> Tensor:
    """λ [mean R^γ over A's episodes − mean R^γ over B's episodes] per member: [M].

    Its φ-gradient is λ (∇_φ J(φ, θ) − ∇_φ J(φ, θ_λ)) estimated from the paired rollouts (Gaur et al.,
    "On the Sample Complexity Bounds of Bilevel Reinforcement Learning", Eq. 11 and 13),
    i.e. λ (∇_φ g(φ, θ_λ) − ∇_φ g(φ, θ*)) with g = −J.
    """
    r_a = discounted_returns(ensemble, sa_a, mask_a, gamma).mean(-1)
    r_b = discounted_returns(ensemble, sa_b, mask_b, gamma).mean(-1)
    return lam * (r_a - r_b)


def shared_states_term(ensemble: RewardEnsemble, obs: Tensor, act_a: Tensor, act_b: Tensor, lam: float,
                       gamma: float) -> Tensor:
    """Cheaper, biased estimator: λ (1−γ)^{-1} E_{s∼replay}[r_φ(s, a_A) − r_φ(s, a_B)] per member: [M].

    It replaces both agents' discounted state distributions by one (recent replay states), so it only
    sees how the two policies differ in their actions, not where they lead.
    """
    r_a = ensemble.member_rewards(torch.cat([obs, act_a], dim=-1)).mean(-1)
    r_b = ensemble.member_rewards(torch.cat([obs, act_b], dim=-1)).mean(-1)
    return lam / (1.0 - gamma) * (r_a - r_b)


def per_decision_weights(log_ratios: Tensor, mask: Tensor, window: int = 0, clip: float = 0.0) -> Tensor:
    """W_t = Π_k min(ρ_k, c) over the last `window` decisions k ≤ t (0: all since the episode's start).

    `log_ratios` [N, T] are log π_B(a_k|s_k) − log π_A(a_k|s_k) at the stored actions, `mask` [N, T] marks
    the steps that exist; `clip` c ≥ 1 caps each ratio (0: no cap). The weights are data: the caller computes
    the log-ratios without a graph, so that no gradient reaches the policies. A weight is capped at e^20
    (`LOG_WEIGHT_MAX`) so that a product over stored actions in the far tail of π_A cannot overflow.
    """
    log_ratios = log_ratios * mask
    if clip > 0:
        log_ratios = log_ratios.clamp(max=math.log(clip))
    sums = log_ratios.cumsum(-1)
    if 0 < window < sums.shape[-1]:
        sums = torch.cat([sums[:, :window], sums[:, window:] - sums[:, :-window]], dim=-1)
    return sums.clamp(max=LOG_WEIGHT_MAX).exp()


LOG_WEIGHT_MAX = 20.0
"""Largest log per-decision weight (as for Ψ_f's ratios): a float32 product of 100 ratios overflows easily."""


def likelihood_ratio_term(ensemble: RewardEnsemble, sa: Tensor, mask: Tensor, weights: Tensor, lam: float,
                          gamma: float) -> Tensor:
    """λ mean over A's episodes of Σ_t γ^t (1 − W_t) r_{φ_m}(s_t, a_t) per member: [M].

    With per-decision importance weights W_t of B against A (`per_decision_weights`) on A's own episodes,
    E_A[Σ_t γ^t W_t r_t] = E_B[Σ_t γ^t r_t] (Precup, Sutton and Singh, "Eligibility Traces for Off-Policy
    Policy Evaluation", ICML 2000), so the φ-gradient estimates λ (∇_φ J(φ, θ_A) − ∇_φ J(φ, θ_B)) without
    any episode of B. A window or a clip trades bias for variance (docs/tabular.md measures both).
    """
    n_ep, length, dim = sa.shape
    rewards = ensemble.member_rewards(sa.reshape(n_ep * length, dim)).reshape(-1, n_ep, length)
    coefficients = discount_weights(length, gamma, sa.device) * mask * (1.0 - weights)
    return lam * (rewards * coefficients).sum(-1).mean(-1)


def sobirl_term(ensemble: RewardEnsemble, sa: Tensor, sa_alt: Tensor, pair_losses: Tensor,
                alpha: float) -> Tensor:
    """SoBiRL's model-free implicit term (Yang, Gao, Yuan, "SoBiRL", AISTATS 2025) per member: [M].

    mean_i ℓ_i · α^{-1} Σ_{t∈σ_i⁰∪σ_i¹} (r_φ(s_t, a_t) − E_{a′∼π}[r_φ(s_t, a′)]), with the one-step reward
    standing in for the soft Q-function (a myopic, biased approximation of ∇_φ log π*).
    `sa` [P, 2H, D] are the labelled pairs' steps, `sa_alt` [K, P, 2H, D] the same states with K actions
    drawn from the policy, `pair_losses` [M, P] the detached per-member pair losses ℓ_i.
    """
    m = ensemble.n_members
    p, steps, dim = sa.shape
    r = ensemble.member_rewards(sa.reshape(-1, dim)).reshape(m, p, steps)
    k = sa_alt.shape[0]
    r_alt = ensemble.member_rewards(sa_alt.reshape(-1, dim)).reshape(m, k, p, steps).mean(1)
    advantage = (r - r_alt).sum(-1)  # [M, P]
    return (pair_losses.detach() * advantage).mean(-1) / alpha


def upper_score_surrogate(log_probs: Tensor, pair_losses: Tensor, steps_per_pair: int,
                          old_log_probs: Tensor | None = None, clip: float = 0.2,
                          dual_clip: float = 3.0) -> Tensor:
    """Ψ_f, the score-function surrogate of the upper loss f(θ) = E_{pairs ∼ π_θ}[ℓ], per pair i with
    c_i = ℓ_i − ℓ̄ (the detached losses `pair_losses` [P], centred):

    * without `old_log_probs`: mean_i c_i Σ_t log π_θ(a_t|s_t) (its gradient is the score-function estimate
      of ∇_θ f; unbounded below on fixed stored actions);
    * with `old_log_probs` (log π_A at the same steps): PPO's two-sided clipped form (Schulman et al.,
      "Proximal Policy Optimization Algorithms", 2017, written for minimisation)
      mean_i Σ_t max(c_i ρ_t, c_i clip(ρ_t, 1 − ε, 1 + ε)),  ρ_t = π_θ/π_A.
      Its gradient at π_θ = π_A equals the unclipped one; a step stops being pushed once its ratio has
      moved past 1 ± ε in the direction its c_i asks for, whatever the sign of c_i. A step whose ratio has
      grown past `dual_clip` against its c_i > 0 is capped there too (dual-clip PPO, Ye et al., "Mastering
      Complex Control in MOBA Games with Deep Reinforcement Learning", AAAI 2020): stored actions in the far
      tail of π_A have ratios that one optimiser step can multiply by e^20, and their c_i ρ gradient would
      swamp every other term.

    `log_probs` [P, K] are taken at K sampled steps of each pair's `steps_per_pair` = 2H steps; the sum is
    then estimated unbiasedly as (2H / K) Σ_sampled.
    """
    centred = (pair_losses.detach() - pair_losses.detach().mean()).unsqueeze(-1)
    scale = steps_per_pair / log_probs.shape[1]
    if old_log_probs is None:
        return (centred * log_probs).sum(-1).mean() * scale
    ratio = (log_probs - old_log_probs.detach()).clamp(max=20.0).exp()
    per_step = torch.maximum(centred * ratio, centred * ratio.clamp(1.0 - clip, 1.0 + clip))
    per_step = torch.where(centred > 0, torch.minimum(per_step, centred * dual_clip), per_step)
    return per_step.sum(-1).mean() * scale


def penalty_snr(ensemble: RewardEnsemble, sa_a: Tensor, mask_a: Tensor, sa_b: Tensor, mask_b: Tensor,
                gamma: float) -> float:
    """Signal-to-noise ratio of the λ-term's gradient estimate from E paired rollouts.

    g_j = ∇_φ [R^γ_φ(τ_A^j) − R^γ_φ(τ_B^j)] over all ensemble parameters, one per pair; returns
    ‖mean_j g_j‖ / sqrt(tr Cov(g) / E), the size of the mean against its standard error (λ cancels).
    NaN with fewer than two pairs.
    """
    def pair(j: int) -> Tensor:
        return (discounted_returns(ensemble, sa_a[j : j + 1], mask_a[j : j + 1], gamma)
                - discounted_returns(ensemble, sa_b[j : j + 1], mask_b[j : j + 1], gamma)).sum()

    return unit_snr(ensemble, pair, sa_a.shape[0])


def unit_snr(ensemble: RewardEnsemble, unit: Callable[[int], Tensor], n: int) -> float:
    """‖mean_j g_j‖ / sqrt(tr Cov(g) / n) of g_j = ∇_φ unit(j), j < n, over all ensemble parameters.

    A unit is one independent draw of the λ-term's estimate (a pair, a branch, an episode); NaN with fewer
    than two units or when every unit's gradient is zero, `SNR_CAP` when the units agree exactly (a zero
    standard error under a non-zero mean: the ratio is unbounded, and a log holds only finite values).
    """
    if n < 2:
        return float("nan")
    params = [p for p in ensemble.parameters() if p.requires_grad]
    rows = []
    for j in range(n):
        grads = torch.autograd.grad(unit(j), params, allow_unused=True)
        rows.append(torch.cat([torch.zeros(p.numel()) if g is None else g.reshape(-1).cpu()
                               for g, p in zip(grads, params, strict=True)]))
    g = torch.stack(rows).double()
    mean = g.mean(0)
    standard_error = ((g - mean).pow(2).sum() / (n * (n - 1))).sqrt()
    if standard_error == 0:
        return float("nan") if mean.norm() == 0 else SNR_CAP
    return min(float(mean.norm() / standard_error), SNR_CAP)


SNR_CAP = 1e6
"""The largest SNR `unit_snr` reports: units that agree to float precision (no measurable noise)."""


def gaussian_kl(mu_p: Tensor, log_std_p: Tensor, mu_q: Tensor, log_std_q: Tensor) -> Tensor:
    """KL(N_p ‖ N_q) of diagonal Gaussians, summed over the last axis.

    tanh is a bijection, so this is also the KL of the two tanh-squashed policies.
    """
    var_p, var_q = (2 * log_std_p).exp(), (2 * log_std_q).exp()
    kl = log_std_q - log_std_p + (var_p + (mu_p - mu_q).pow(2)) / (2 * var_q) - 0.5
    return kl.sum(-1)
