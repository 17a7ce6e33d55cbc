"""Transfer metrics from one pass of predictions (METHOD.md, "Metrics").

Inputs are per-sample predictions or correctness (bool tensors ``[N]``) over the
evaluation split; rates are returned in percent.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch

from ..report.stats import below_chance_p_value, mcnemar_p_value

TRANSFER_RATE_SHARES = (2, 5, 20, 50, 100)


def correctness(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return pred == target


def percent(mask: torch.Tensor) -> float:
    return 100.0 * mask.double().mean().item() if mask.numel() else 0.0


def positive_flips(teacher_correct: torch.Tensor, student_correct: torch.Tensor) -> torch.Tensor:
    """Complementary knowledge: samples the teacher gets right and the student wrong."""
    return teacher_correct & ~student_correct


def negative_flips(teacher_correct: torch.Tensor, student_correct: torch.Tensor) -> torch.Tensor:
    """Samples the student gets right and the teacher wrong."""
    return ~teacher_correct & student_correct


def knowledge_gain(before_correct: torch.Tensor, after_correct: torch.Tensor) -> torch.Tensor:
    return ~before_correct & after_correct


def knowledge_loss(before_correct: torch.Tensor, after_correct: torch.Tensor) -> torch.Tensor:
    return before_correct & ~after_correct


def far_below_chance(correct: torch.Tensor, num_classes: int, p_value: float = 1e-3) -> bool:
    """Right on less than half the share that guessing gets, and too rarely for chance (one-sided binomial
    ``p < p_value``): the mark of a class-order mismatch, not of a weak model."""
    n, k = correct.numel(), int(correct.sum())
    if n == 0 or num_classes < 2 or k >= 0.5 * n / num_classes:
        return False
    return below_chance_p_value(k, n, 1.0 / num_classes) < p_value


def per_class_counts(mask: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    return torch.bincount(target[mask].long(), minlength=num_classes)


def per_class_rate(mask: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Share of each class's samples inside ``mask``, in percent (0 for empty classes)."""
    sizes = torch.bincount(target.long(), minlength=num_classes).clamp(min=1)
    return 100.0 * per_class_counts(mask, target, num_classes).float() / sizes.float()


def expertise_classes(pos_flips: torch.Tensor, target: torch.Tensor, num_classes: int, share: float) -> torch.Tensor:
    """The fewest classes, taken in order of per-class complementary knowledge, holding ``share``% of all positive flips."""
    counts = per_class_counts(pos_flips, target, num_classes)
    total = int(counts.sum())
    if total == 0:
        return torch.zeros(0, dtype=torch.long)
    order = torch.argsort(per_class_rate(pos_flips, target, num_classes), descending=True, stable=True)
    cumulative = torch.cumsum(counts[order], 0)
    needed = share / 100.0 * total
    k = int(torch.searchsorted(cumulative.double(), torch.tensor(needed - 1e-9, dtype=torch.double))) + 1
    return order[:min(k, num_classes)]


def flip_entropy(pos_flips: torch.Tensor, target: torch.Tensor, num_classes: int) -> float:
    """Entropy (nats) of the per-class positive-flip distribution; low means a specialist teacher."""
    rates = per_class_rate(pos_flips, target, num_classes)
    total = rates.sum()
    if total <= 0:
        return 0.0
    p = rates / total
    p = p[p > 0]
    return float(-(p * p.log()).sum())


def transfer_rates(
        before_correct: torch.Tensor,
        after_correct: torch.Tensor,
        teacher_correct: torch.Tensor,
        target: torch.Tensor,
        num_classes: int,
        shares: Sequence[float] = TRANSFER_RATE_SHARES,
) -> dict[str, float | None]:
    """For each top-X% class set: share of those classes' positive-flip samples the student now gets right."""
    pos = positive_flips(teacher_correct, before_correct)
    out: dict[str, float | None] = {}
    for share in shares:
        classes = expertise_classes(pos, target, num_classes, share)
        in_top = torch.isin(target, classes) & pos
        out[f'top{share:g}'] = percent(after_correct[in_top]) if in_top.any() else None
    return out


def complementary_knowledge(
        teacher_pred: torch.Tensor,
        student_pred: torch.Tensor,
        target: torch.Tensor,
        num_classes: int,
        label_names: Sequence[str] | None = None,
        top_k: int = 3,
) -> dict:
    """What the scan reports for one teacher against one student."""
    ct, cs = correctness(teacher_pred, target), correctness(student_pred, target)
    pos = positive_flips(ct, cs)
    rates = per_class_rate(pos, target, num_classes)
    order = torch.argsort(rates, descending=True, stable=True)[:top_k]
    names = list(label_names) if label_names else [str(i) for i in range(num_classes)]
    return {
        'teacher_top1': percent(ct),
        'student_top1': percent(cs),
        'rho_pos': percent(pos),
        'rho_neg': percent(negative_flips(ct, cs)),
        'flip_entropy': flip_entropy(pos, target, num_classes),
        'per_class_pos_flips': [round(float(r), 3) for r in rates],
        'top_classes': [{'class': names[i], 'pos_flip_rate': round(float(rates[i]), 2)} for i in order.tolist()],
    }


def transfer_metrics(
        before_pred: torch.Tensor,
        after_pred: torch.Tensor,
        teacher_preds: Mapping[str, torch.Tensor],
        target: torch.Tensor,
        num_classes: int,
) -> dict:
    """Δtransf, gain/loss, McNemar p, and per teacher ρpos/ρneg before/after, their deltas and transfer rates."""
    c0, c1 = correctness(before_pred, target), correctness(after_pred, target)
    gain, loss = knowledge_gain(c0, c1), knowledge_loss(c0, c1)
    out = {
        'top1_before': percent(c0),
        'top1_after': percent(c1),
        'transfer_delta': percent(c1) - percent(c0),
        'knowledge_gain': percent(gain),
        'knowledge_loss': percent(loss),
        'gains': int(gain.sum()),
        'losses': int(loss.sum()),
        'p_value': mcnemar_p_value(int(gain.sum()), int(loss.sum())),
        'teachers': {},
    }
    for name, pred in teacher_preds.items():
        ct = correctness(pred, target)
        pos0, pos1 = percent(positive_flips(ct, c0)), percent(positive_flips(ct, c1))
        neg0, neg1 = percent(negative_flips(ct, c0)), percent(negative_flips(ct, c1))
        out['teachers'][name] = {
            'top1': percent(ct),
            'rho_pos': pos0,
            'rho_neg': neg0,
            'rho_pos_after': pos1,
            'rho_neg_after': neg1,
            'pos_flips_delta': pos1 - pos0,
            'neg_flips_delta': neg1 - neg0,
            'transfer_rates': transfer_rates(c0, c1, ct, target, num_classes),
            'per_class_pos_flips_before': [round(float(r), 3) for r in
                                           per_class_rate(positive_flips(ct, c0), target, num_classes)],
            'per_class_pos_flips_after': [round(float(r), 3) for r in
                                          per_class_rate(positive_flips(ct, c1), target, num_classes)],
        }
    return out
