"""What a run found, in numbers and words: results.json, the verdict, the before/after table, what may be
published, and the statistics of many runs. No torch: the Hub side and the studies read it.

- :mod:`.results`: results.json, :func:`verdict` ("improved" only at McNemar p < 0.05), the table;
- :mod:`.public`: model, data and path names as a pushed repository may show them;
- :mod:`.stats`: McNemar's exact test, Wilson and bootstrap intervals, rank correlation (scipy).

Layer rule: report imports models.spec and nothing torch-side.
"""
from .public import public_args, public_dataset_ref, public_model_ref, public_path, public_results
from .results import (
    Verdict, before_after_rows, build_results, format_table, num, pct, pvalue_text, signed, transfer_delta, verdict,
    verdict_of, write_results,
)
from .stats import SIGNIFICANCE, bootstrap_mean_ci, mcnemar_p_value, mean, spearman, wilson_interval

__all__ = ['SIGNIFICANCE', 'Verdict', 'before_after_rows', 'bootstrap_mean_ci', 'build_results', 'format_table',
           'mcnemar_p_value', 'mean', 'num', 'pct', 'public_args', 'public_dataset_ref', 'public_model_ref',
           'public_path', 'public_results', 'pvalue_text', 'signed', 'spearman', 'transfer_delta', 'verdict',
           'verdict_of', 'wilson_interval', 'write_results']
