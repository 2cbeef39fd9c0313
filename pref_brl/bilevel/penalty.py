"""The bilevel penalty update for deep preference RL (SPEC §4-5): pure functions of tensors.

Sign convention: the reward loss of member m is
    CE_m(φ_m) + λ [ mean_{τ∈T_A} R^γ_{φ_m}(τ) − mean_{τ∈T_B} R^γ_{φ_m}(τ) ],   λ = (1−γ) λ̃,
so a descent step raises r_φ where the penalised agent B goes and lowers it where the plain agent A goes.
Gradients flow only through the reward networks: trajectories are fixed data.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

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

    Its φ-gradient is λ (∇_φ J(φ, θ) − ∇_φ J(φ, θ_λ)) estimated from the paired rollouts (seed Eq. 11, 13),
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


def sobirl_term(ensemble: RewardEnsemble, sa: Tensor, sa_alt: Tensor, pair_losses: Tensor,
                alpha: float) -> Tensor:
    """SoBiRL's model-free implicit term (seed 003, SPEC §5.5) per member: [M].

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
                          old_log_probs: Tensor | None = None, clip: float = 0.2) -> Tensor:
    """Ψ_f: mean_i (ℓ_i − ℓ̄) · Σ_{t∈σ_i⁰∪σ_i¹} log π_θλ(a_t|s_t) (score-function surrogate of f).

    `log_probs` [P, K] are log π at K sampled steps of each pair (K may be fewer than the pair's
    `steps_per_pair` = 2H steps: the sum is then estimated unbiasedly as (2H / K) Σ_sampled);
    `pair_losses` [P] are the detached current losses ℓ_i. Its θ-gradient is an estimate of ∇_θ f.

    Minimised on fixed stored actions, Σ log π is unbounded below (log π at an action of a badly-modelled
    pair can be driven to −∞, and Adam does so whatever the scale). With `old_log_probs` (log π when the
    losses were computed), each step enters as the probability ratio ρ = π/π_old, capped at 1 + clip
    (PPO's surrogate): ∇ρ = ∇ log π at π = π_old, so the gradient there is unchanged, but the objective is
    bounded, pushing away from an action fades as ρ → 0, and pulling towards one stops at 1 + clip.
    """
    centred = pair_losses.detach() - pair_losses.detach().mean()
    scale = steps_per_pair / log_probs.shape[1]
    if old_log_probs is not None:
        log_ratio = (log_probs - old_log_probs.detach()).clamp(-20.0, math.log1p(clip))
        log_probs = log_ratio.exp()
    return (centred * log_probs.sum(-1) * scale).mean()


def gaussian_kl(mu_p: Tensor, log_std_p: Tensor, mu_q: Tensor, log_std_q: Tensor) -> Tensor:
    """KL(N_p ‖ N_q) of diagonal Gaussians, summed over the last axis.

    tanh is a bijection, so this is also the KL of the two tanh-squashed policies.
    """
    var_p, var_q = (2 * log_std_p).exp(), (2 * log_std_q).exp()
    kl = log_std_q - log_std_p + (var_p + (mu_p - mu_q).pow(2)) / (2 * var_q) - 0.5
    return kl.sum(-1)
