"""Evaluation: one pass of predictions per split, the paper's metrics on them, scans and the gain predictor.

- :mod:`.predictions`: every model through its own eval transform, in one pass (Accelerate-aware);
- :mod:`.metrics`: Δtransf, flips, ρpos/ρneg, transfer rates, as pure functions of predictions;
- :mod:`.scans`: where to find complementary knowledge; :mod:`.predictor`: the predicted KL+DP gain.

Layer rule: evaluation imports models, data and report, never transfer, cache, hub or cli.
"""
from .._lazy import lazy_names, names_of

_LAZY = names_of({
    '.predictions': ('predict', 'top1'),
    '.metrics': ('complementary_knowledge', 'correctness', 'knowledge_gain', 'knowledge_loss', 'negative_flips', 'percent',
                 'positive_flips', 'transfer_metrics'),
    '.scans': ('format_matrix', 'format_scan', 'pairwise_matrix', 'scan'),
    '.predictor': ('COEFFICIENTS', 'FEATURES', 'Predictor', 'annotate_scan', 'fit', 'format_prediction',
                   'leave_one_student_out', 'pair_features'),
})
__getattr__ = lazy_names(__name__, _LAZY)
__all__ = list(_LAZY)
