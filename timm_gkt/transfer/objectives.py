"""Transfer objectives as pure tensor functions (METHOD.md, "Objectives").

Logits are ``[B, C]``; ``target`` is either class ids ``[B]`` or soft targets ``[B, C]``
(mixup/cutmix). Nothing here loops over samples.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def kl_div_loss(student_logits: torch.Tensor, target_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """``T² · batchmean KL(σ(z_target/T) ‖ σ(z_s/T))``, log-softmax on both sides for numerical safety.

    The T² factor keeps gradient magnitudes comparable across temperatures (Hinton et al.).
    """
    t = float(temperature)
    log_p_student = F.log_softmax(student_logits.float() / t, dim=-1)
    # targets are fixed points: no gradient may reach a teacher or the frozen student through them
    log_p_target = F.log_softmax(target_logits.detach().float() / t, dim=-1)
    return F.kl_div(log_p_student, log_p_target, reduction='batchmean', log_target=True) * (t * t)


def cross_entropy(student_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on logits for class ids or soft targets.

    On *logits*: the published code applied CE to softmax outputs, which flattens the
    gradient; METHOD.md says not to copy that.
    """
    logits = student_logits.float()
    if target.dim() == 1:
        return F.cross_entropy(logits, target)
    return torch.sum(-target * F.log_softmax(logits, dim=-1), dim=-1).mean()


def xekl_loss(
        student_logits: torch.Tensor,
        teacher_logits: torch.Tensor,
        target: torch.Tensor,
        xe_weight: float = 0.3,
        temperature: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """XE-KL: ``(1 - xe_weight)·KL_T + xe_weight·CE``; the paper's λ = 1 - xe_weight = 0.7.

    Returns (loss, kl part, ce part) so both parts can be logged.
    """
    kl = kl_div_loss(student_logits, teacher_logits, temperature)
    ce = cross_entropy(student_logits, target)
    return (1.0 - xe_weight) * kl + xe_weight * ce, kl, ce


def true_class_probability(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``σ_y(z)`` per sample; with soft targets the expectation ``Σ_j y_j σ_j(z)``."""
    probs = F.softmax(logits.float(), dim=-1)
    if target.dim() == 1:
        return probs.gather(1, target.long().unsqueeze(1)).squeeze(1)
    return (probs * target.float()).sum(dim=-1)


def max_probability(logits: torch.Tensor) -> torch.Tensor:
    """``max_j σ_j(z)`` per sample: the confidence used when no labels are available."""
    return F.softmax(logits.float(), dim=-1).amax(dim=-1)


def route_to_teacher(
        teacher_logits: torch.Tensor,
        frozen_student_logits: torch.Tensor,
        target: torch.Tensor | None = None,
        calibration: tuple[float, float] = (1.0, 1.0),
) -> torch.Tensor:
    """Data partitioning mask: True where the teacher is the target for that sample.

    Supervised (``target`` given): teacher iff its true-class probability is strictly
    higher than the frozen student's. Unsupervised (``target=None``): teacher iff its
    maximum probability is strictly higher. Ties keep the frozen student: when in doubt,
    keep what the student knew. ``calibration`` = (T_teacher, T_frozen_student): the
    probabilities compared are σ(z / T) of each model (1, 1: the paper's raw probabilities).
    """
    t_teacher, t_student = calibration
    teacher_logits = teacher_logits.float() / t_teacher
    frozen_student_logits = frozen_student_logits.float() / t_student
    if target is None:
        return max_probability(teacher_logits) > max_probability(frozen_student_logits)
    return true_class_probability(teacher_logits, target) > true_class_probability(frozen_student_logits, target)


def partitioned_targets(
        teacher_logits: torch.Tensor,
        frozen_student_logits: torch.Tensor,
        mask: torch.Tensor,
) -> torch.Tensor:
    """Per-sample target logits: teacher where ``mask``, frozen student elsewhere."""
    return torch.where(mask.unsqueeze(-1), teacher_logits.float(), frozen_student_logits.float())


def kldp_loss(
        student_logits: torch.Tensor,
        teacher_logits: torch.Tensor,
        frozen_student_logits: torch.Tensor,
        target: torch.Tensor | None = None,
        temperature: float = 1.0,
        calibration: tuple[float, float] = (1.0, 1.0),
) -> tuple[torch.Tensor, torch.Tensor]:
    """KL+DP: ``KL_T(σ(where(mask, z_t, z_st)) ‖ σ(z_s))``, no CE term. Returns (loss, routing mask).

    ``calibration`` changes only which model each sample is routed to; the targets stay the uncalibrated logits.
    """
    mask = route_to_teacher(teacher_logits, frozen_student_logits, target, calibration)
    targets = partitioned_targets(teacher_logits, frozen_student_logits, mask)
    return kl_div_loss(student_logits, targets, temperature), mask


def hard_labels(target: torch.Tensor) -> torch.Tensor:
    """Class ids; soft targets (mixup) by their largest class."""
    return target.argmax(dim=-1) if target.dim() > 1 else target


def per_sample_kl(student_logits: torch.Tensor, target_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """``T² · KL(σ(z_target/T) ‖ σ(z_s/T))`` per sample ``[B]``; its mean is :func:`kl_div_loss`."""
    t = float(temperature)
    log_p_student = F.log_softmax(student_logits.float() / t, dim=-1)
    log_p_target = F.log_softmax(target_logits.detach().float() / t, dim=-1)
    return (log_p_target.exp() * (log_p_target - log_p_student)).sum(dim=-1) * (t * t)


def per_sample_cross_entropy(student_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on logits per sample ``[B]``, for class ids or soft targets; its mean is :func:`cross_entropy`."""
    log_p = F.log_softmax(student_logits.float(), dim=-1)
    if target.dim() == 1:
        return -log_p.gather(1, target.long().unsqueeze(1)).squeeze(1)
    return torch.sum(-target.float() * log_p, dim=-1)


def route_three_way(
        teacher_logits: torch.Tensor,
        frozen_student_logits: torch.Tensor,
        target: torch.Tensor,
        calibration: tuple[float, float] = (1.0, 1.0),
) -> torch.Tensor:
    """Three-way routing (METHOD.md, extensions): 0 = frozen student, 1 = teacher, 2 = the label, per sample.

    The teacher where it is more confident in the true class than the frozen student and right; the frozen student
    where it is the more confident one and right; the label where the chosen model is wrong, so that a student never
    keeps a mistake of its own (or learns the teacher's) where the label says otherwise.
    """
    mask = route_to_teacher(teacher_logits, frozen_student_logits, target, calibration)
    label = hard_labels(target)
    chosen_right = torch.where(mask, teacher_logits.argmax(dim=-1) == label,
                               frozen_student_logits.argmax(dim=-1) == label)
    return torch.where(chosen_right, mask.long(), torch.full_like(label, 2, dtype=torch.long))


def three_way_loss(
        student_logits: torch.Tensor,
        teacher_logits: torch.Tensor,
        frozen_student_logits: torch.Tensor,
        target: torch.Tensor,
        temperature: float = 1.0,
        calibration: tuple[float, float] = (1.0, 1.0),
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean over the batch of KL to the routed model's logits, or CE on the label where neither is right.

    Returns (loss, source per sample: 0 frozen student, 1 teacher, 2 label).
    """
    source = route_three_way(teacher_logits, frozen_student_logits, target, calibration)
    targets = partitioned_targets(teacher_logits, frozen_student_logits, source == 1)
    per_sample = torch.where(source == 2, per_sample_cross_entropy(student_logits, target),
                             per_sample_kl(student_logits, targets, temperature))
    return per_sample.mean(), source


def soft_routing_loss(
        student_logits: torch.Tensor,
        teacher_logits: torch.Tensor,
        frozen_student_logits: torch.Tensor,
        target: torch.Tensor,
        temperature: float = 1.0,
        calibration: tuple[float, float] = (1.0, 1.0),
) -> tuple[torch.Tensor, torch.Tensor]:
    """KL to a per-sample mixture ``w·σ(z_t/T) + (1 − w)·σ(z_st/T)``, ``w = p_t / (p_t + p_st)`` with ``p`` the
    (calibrated) true-class probabilities: the more confident model in the truth weighs more, neither is all.

    Returns (loss, the teacher's weight per sample).
    """
    t_teacher, t_student = calibration
    p_t = true_class_probability(teacher_logits.float() / t_teacher, target)
    p_st = true_class_probability(frozen_student_logits.float() / t_student, target)
    weight = (p_t / (p_t + p_st).clamp_min(1e-12)).detach()
    t = float(temperature)
    mixture = (weight.unsqueeze(-1) * F.softmax(teacher_logits.detach().float() / t, dim=-1)
               + (1 - weight).unsqueeze(-1) * F.softmax(frozen_student_logits.detach().float() / t, dim=-1))
    log_p_student = F.log_softmax(student_logits.float() / t, dim=-1)
    log_mixture = mixture.clamp_min(1e-30).log()
    loss = (mixture * (log_mixture - log_p_student)).sum(dim=-1).mean() * (t * t)
    return loss, weight


def fit_temperature(logits: torch.Tensor, target: torch.Tensor, bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """The temperature T minimising the mean negative log-likelihood of ``target`` under σ(logits / T).

    One scalar, fitted on held-aside images (temperature scaling, Guo et al. 2017): it rescales a model's
    confidence without changing its predictions. Searched on log T, where the NLL is smooth and well scaled.
    """
    from scipy.optimize import minimize_scalar
    logits, target = logits.detach().double(), target.long()

    def nll(log_t: float) -> float:
        return F.cross_entropy(logits / math.exp(log_t), target).item()
    best = minimize_scalar(nll, bounds=(math.log(bounds[0]), math.log(bounds[1])), method='bounded',
                           options={'xatol': 1e-6})
    return float(math.exp(best.x))


def flip_routing_counts(teacher_logits: torch.Tensor, frozen_student_logits: torch.Tensor,
                        target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """How routing treats the batch's flips: ``[positive flips, of them routed to the teacher,
    negative flips, of them routed to the teacher]``.

    A positive flip is a sample the teacher classifies correctly and the frozen student does not; a
    negative flip the reverse (METHOD.md). Soft targets (mixup) count by their largest class.
    """
    label = target.argmax(dim=-1) if target.dim() > 1 else target
    teacher_right = teacher_logits.argmax(dim=-1) == label
    student_right = frozen_student_logits.argmax(dim=-1) == label
    positive, negative = teacher_right & ~student_right, student_right & ~teacher_right
    return torch.stack([positive.sum(), (positive & mask).sum(), negative.sum(), (negative & mask).sum()])


def route_among(candidate_logits: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """Parallel multi-teacher routing: index of the most suitable candidate per sample.

    ``candidate_logits`` is ``[K+1, B, C]`` with the frozen student at index 0 and the
    teachers after it. Supervised: highest true-class probability; unsupervised: highest
    maximum probability. ``argmax`` takes the first maximum, so ties keep the frozen student.
    """
    if target is None:
        scores = F.softmax(candidate_logits.float(), dim=-1).amax(dim=-1)
    else:
        probs = F.softmax(candidate_logits.float(), dim=-1)
        if target.dim() == 1:
            index = target.long().view(1, -1, 1).expand(probs.shape[0], -1, 1)
            scores = probs.gather(2, index).squeeze(2)
        else:
            scores = (probs * target.float().unsqueeze(0)).sum(dim=-1)
    return scores.argmax(dim=0)


def parallel_kldp_loss(
        student_logits: torch.Tensor,
        candidate_logits: torch.Tensor,
        target: torch.Tensor | None = None,
        temperature: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """KL towards, per sample, the candidate chosen by :func:`route_among`. Returns (loss, chosen index)."""
    choice = route_among(candidate_logits, target)
    batch = torch.arange(candidate_logits.shape[1], device=candidate_logits.device)
    targets = candidate_logits.float()[choice, batch]
    return kl_div_loss(student_logits, targets, temperature), choice
