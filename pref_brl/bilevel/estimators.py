"""The λ-term's estimators of the bilevel learner, behind one name-keyed table (docs/bilevel.md).

Each strategy takes the learner (its ensemble, actors, episode store and replay) and the round's fitted A/B
pairs, and returns an `Estimate`: a per-member closure whose φ-gradient is the estimate (None: no λ-term this
round), the estimate's signal-to-noise ratio over its independent units (`bilevel/penalty_snr`; NaN below two
units) and the number of those units (`bilevel/penalty_units`). The tabular twin
measures the bias and signal of each (docs/tabular.md, section "Estimators of the λ-term").
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from torch import Tensor

from pref_brl.bilevel.penalty import (
    discount_weights,
    likelihood_ratio_term,
    penalty_snr,
    penalty_term,
    per_decision_weights,
    shared_states_term,
    stack_episodes,
    unit_snr,
)
from pref_brl.preferences import Episode

if TYPE_CHECKING:
    from pref_brl.config import TrainConfig
    from pref_brl.preferences import EpisodeStore
    from pref_brl.reward_model import RewardEnsemble

Pairs = list[tuple[Episode, Episode]]


class Learner(Protocol):
    """What an estimator reads of the bilevel learner (`pref_brl.bilevel.learner.BilevelLearner`)."""

    cfg: TrainConfig
    ensemble: RewardEnsemble
    lam: float
    store: EpisodeStore

    def log_ratios(self, sa: Tensor) -> Tensor:
        """log π_B(a|s) − log π_A(a|s) at stored steps, without a graph."""
        ...

    def shared_states(self) -> tuple[Tensor, Tensor, Tensor]:
        """Recent replay states and one action of A and of B at each under shared noise."""
        ...


class Estimate(NamedTuple):
    """One round's λ-term: the per-member closure (None: no λ-term), its SNR, its number of units and the
    estimator's own diagnostics (logged under bilevel/)."""

    closure: Any
    snr: float
    units: int
    metrics: dict[str, float] = {}


def paired_estimate(learner: Learner, fit: Pairs) -> Estimate:
    """`paired-rollouts`: λ [mean R^γ(A's halves) − mean R^γ(B's halves)]; SNR per pair."""
    if not fit:
        return Estimate(None, float("nan"), 0)
    cfg = learner.cfg
    sa_a, m_a = stack_episodes([a for a, _ in fit], cfg.device)
    sa_b, m_b = stack_episodes([b for _, b in fit], cfg.device)
    snr = penalty_snr(learner.ensemble, sa_a, m_a, sa_b, m_b, cfg.discount)
    return Estimate(lambda ens: penalty_term(ens, sa_a, m_a, sa_b, m_b, learner.lam, cfg.discount), snr, len(fit))


def shared_states_estimate(learner: Learner, fit: Pairs) -> Estimate:
    """`shared-states`: λ (1 − γ)^{-1} mean [r(s, a_A) − r(s, a_B)] at recent replay states; no SNR (its
    states are one correlated batch, not independent units), so `--snr-min` refuses it."""
    obs, act_a, act_b = learner.shared_states()
    return Estimate(lambda ens: shared_states_term(ens, obs, act_a, act_b, learner.lam, learner.cfg.discount),
                    float("nan"), len(obs))


def likelihood_ratio_estimate(learner: Learner, fit: Pairs) -> Estimate:
    """`likelihood-ratio`: A's `lr_episodes` most recent episodes, weights W_t of B against A's anchor.

    The episodes were played by A before the re-sync (an earlier A than the anchor); the weights treat
    them as the anchor's, an approximation whose cost the tabular twin measures (docs/tabular.md).
    SNR per episode.
    """
    cfg = learner.cfg
    episodes = learner.store.recent("A", cfg.lr_episodes)
    if not episodes:
        return Estimate(None, float("nan"), 0)
    sa, mask = stack_episodes(episodes, cfg.device)
    weights = per_decision_weights(learner.log_ratios(sa), mask, cfg.lr_window, cfg.lr_clip)
    coefficients = discount_weights(sa.shape[1], cfg.discount, sa.device) * mask * (1.0 - weights)

    def episode(j: int) -> Tensor:
        rewards = learner.ensemble.member_rewards(sa[j])  # [M, T]
        return (rewards * coefficients[j]).sum()

    snr = unit_snr(learner.ensemble, episode, len(episodes))
    # E[W_t] = 1 at every step when the episodes are π_A's: a mean far below 1 says the sample misses the
    # weights' heavy tail (or the episodes are not π_A's), and the SNR over them is not to be trusted
    weight_mean = float((weights * mask).sum() / mask.sum())
    return Estimate(lambda ens: likelihood_ratio_term(ens, sa, mask, weights, learner.lam, cfg.discount), snr,
                    len(episodes), {"bilevel/lr_weight_mean": weight_mean,
                                    "bilevel/lr_weight_max": float(weights.max())})


ESTIMATORS = {
    "paired-rollouts": paired_estimate,
    "branch": paired_estimate,  # the same pairs, started from snapshots instead of resets
    "shared-states": shared_states_estimate,
    "likelihood-ratio": likelihood_ratio_estimate,
}
"""The λ-term's estimators: name -> (learner, the round's fitted pairs) -> `Estimate`."""
ROLLOUT_ESTIMATORS = frozenset({"paired-rollouts", "branch"})
"""Estimators that need A/B rollouts collected after B's solve (the others update at once)."""
