"""The tabular lab (docs/tabular.md): exact bilevel maths on small MDPs and the methods of the papers cited there.

Modules: ``mdp`` (soft value/policy iteration, occupancies, Eq. 11 and 12), ``rewards`` (reward maps),
``upper`` / ``torch_loss`` (upper losses), ``problem`` (F and its exact adjoint hypergradient), ``proxy``
(the penalty proxy, Eq. 9–10), ``sampling`` (Monte-Carlo estimators with common random numbers),
``penalty_method`` / ``sobirl`` / ``regularized_ac`` / ``partial`` and the table ``methods.METHODS``,
``resync`` (the twin of the deep bilevel method) and ``resync_study`` (its bias tables), ``lambda_terms``
(the λ-term's estimators, exact and sampled) and ``estimator_study`` (their bias and signal tables),
``benchmarks`` and ``report`` (plots; imports matplotlib), and ``standard`` (the same penalty solver on plain
differentiable f(x, y), g(x, y), in torch). Only numpy-light names are re-exported here.
"""

from pref_brl.tabular.benchmarks import BENCHMARKS
from pref_brl.tabular.common import MethodConfig, Trace
from pref_brl.tabular.methods import METHODS, run_method, run_reference
from pref_brl.tabular.problem import BilevelProblem, hypergradient, hyperobjective

__all__ = [
    "BENCHMARKS",
    "METHODS",
    "BilevelProblem",
    "MethodConfig",
    "Trace",
    "hyperobjective",
    "hypergradient",
    "run_method",
    "run_reference",
]
