"""Which teachers, from a scanned pool (``--teachers auto``): rank the candidates by the predicted KL+DP gain, or by
ρpos where no predictor is fitted, keep at most K of those expected to help, and say why for every candidate.

Pure: it takes a scan (:func:`~timm_gkt.evaluation.scans.scan_models`'s dict, measured on the selection split) and
returns the choice as a dict for results.json. The run carves the selection split, scans and orders the chosen
teachers (:mod:`timm_gkt.cli.selection`). No torch import.
"""
from __future__ import annotations

from .predictor import Predictor, annotate_scan

BY_PREDICTION = 'predicted gain'
BY_RHO_POS = 'ρpos'


def ranking_value(teacher: dict, ranked_by: str) -> float:
    return teacher['predicted_delta'] if ranked_by == BY_PREDICTION else teacher['rho_pos']


def value_text(value: float, ranked_by: str) -> str:
    return f'{value:+.2f} points' if ranked_by == BY_PREDICTION else f'{value:.2f}%'


def rank_teachers(scan: dict, predictor: Predictor | None, max_teachers: int) -> dict:
    """The choice: every candidate ranked (ties keep the pool's order) with its scan numbers and its reason, and
    the chosen specs.

    A candidate is chosen when its ranking value is above 0 (a predicted gain, or some complementary knowledge)
    and it is among the first ``max_teachers``. When no candidate is above 0 the first one is still chosen, and
    said so: the run then measures what that teacher does, rather than ending without a result.
    """
    annotate_scan(scan, predictor, max_sequence=max_teachers)
    ranked_by = BY_PREDICTION if predictor is not None else BY_RHO_POS
    ranked = sorted(scan['teachers'], key=lambda t: -ranking_value(t, ranked_by))
    helpful = [t for t in ranked if ranking_value(t, ranked_by) > 0]
    chosen = helpful[:max_teachers] or ranked[:1]
    candidates = []
    for rank, t in enumerate(ranked, start=1):
        candidates.append({
            'spec': t['spec'], 'name': t['name'], 'rank': rank, 'top1': t['teacher_top1'], 'rho_pos': t['rho_pos'],
            'rho_neg': t['rho_neg'], 'flip_entropy': t['flip_entropy'], 'top_classes': t['top_classes'],
            'predicted_delta': t.get('predicted_delta'), 'predicted_interval': t.get('predicted_interval'),
            'chosen': t in chosen, 'reason': _reason(t, rank, len(ranked), t in chosen, ranked_by, max_teachers),
        })
    return {'ranked_by': ranked_by, 'predictor': scan.get('predictor'), 'student_top1': scan['student_top1'],
            'selection_images': scan['eval_samples'], 'candidates': candidates,
            'chosen': [t['spec'] for t in chosen], 'none_above_zero': not helpful}


def _reason(teacher: dict, rank: int, of: int, chosen: bool, ranked_by: str, max_teachers: int) -> str:
    value = ranking_value(teacher, ranked_by)
    shown = f'{ranked_by} {value_text(value, ranked_by)}'
    if chosen and value > 0:
        return f'chosen: rank {rank} of {of} by {shown}'
    if chosen:
        return f'chosen although its {shown} is not above 0: no candidate is, and the run needs a teacher'
    if value <= 0:
        return f'left out: {shown} is not above 0'
    return f'left out: rank {rank} of {of}, after the --max-teachers {max_teachers} chosen'
