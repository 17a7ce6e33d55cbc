"""Objectives (METHOD.md, "Objectives") against hand computations on tiny batches.

Expected values are computed with plain ``math`` from explicit numbers, never with
torch's own KL or cross-entropy, so a wrong direction, reduction or temperature
factor in timm_gkt.objectives shows up as a wrong number.
"""
import math

import pytest
import torch

from timm_gkt.transfer.objectives import (
    cross_entropy, kl_div_loss, kldp_loss, max_probability, parallel_kldp_loss, partitioned_targets, route_among,
    route_to_teacher, true_class_probability, xekl_loss,
)


def softmax(row, temperature=1.0):
    exps = [math.exp(v / temperature) for v in row]
    total = sum(exps)
    return [e / total for e in exps]


def kl(target_row, student_row, temperature=1.0):
    """KL(σ(target/T) ‖ σ(student/T)) for one sample."""
    p, q = softmax(target_row, temperature), softmax(student_row, temperature)
    return sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q))


def batch_kl(target_rows, student_rows, temperature=1.0):
    """T² · batchmean KL, the definition in METHOD.md."""
    per_sample = [kl(t, s, temperature) for t, s in zip(target_rows, student_rows)]
    return temperature ** 2 * sum(per_sample) / len(per_sample)


def tensor(rows):
    return torch.tensor(rows, dtype=torch.float32)


STUDENT = [[1.0, 2.0, 0.0], [0.0, 0.0, 0.0], [-1.0, 0.5, 2.0]]
TEACHER = [[2.0, 0.0, 1.0], [1.0, 3.0, -1.0], [0.0, 0.0, 4.0]]
LABELS = [0, 1, 2]


# --- KL-Dist -------------------------------------------------------------------------------------

def test_kl_div_matches_hand_computation_at_unit_temperature():
    expected = batch_kl(TEACHER, STUDENT)
    # a sanity anchor: the second student row is uniform, so its KL is log 3 - H(σ(teacher))
    p = softmax(TEACHER[1])
    assert kl(TEACHER[1], STUDENT[1]) == pytest.approx(math.log(3) + sum(pi * math.log(pi) for pi in p))
    assert kl_div_loss(tensor(STUDENT), tensor(TEACHER)).item() == pytest.approx(expected, rel=1e-5)


def test_kl_div_direction_is_target_to_student():
    forward = batch_kl(TEACHER, STUDENT)
    reverse = batch_kl(STUDENT, TEACHER)
    assert abs(forward - reverse) > 1e-2  # the example distinguishes the two directions
    assert kl_div_loss(tensor(STUDENT), tensor(TEACHER)).item() == pytest.approx(forward, rel=1e-5)


@pytest.mark.parametrize('temperature', [2.0, 0.5, 4.0])
def test_kl_div_scales_logits_by_temperature_and_multiplies_by_t_squared(temperature):
    expected = batch_kl(TEACHER, STUDENT, temperature)
    without_t2 = expected / temperature ** 2
    got = kl_div_loss(tensor(STUDENT), tensor(TEACHER), temperature=temperature).item()
    assert got == pytest.approx(expected, rel=1e-5)
    assert got != pytest.approx(without_t2, rel=1e-3)


def test_kl_div_is_zero_for_identical_and_shifted_logits():
    z = tensor(TEACHER)
    assert kl_div_loss(z, z).item() == pytest.approx(0.0, abs=1e-6)
    # softmax ignores a per-sample shift, so the loss must too
    assert kl_div_loss(z + 7.0, z).item() == pytest.approx(0.0, abs=1e-5)


def test_kl_div_is_finite_for_extreme_logits():
    student = tensor([[1000.0, -1000.0, 0.0]])
    teacher = tensor([[-1000.0, 1000.0, 0.0]])
    loss = kl_div_loss(student, teacher)
    assert torch.isfinite(loss)
    # target is (almost) one-hot on class 1: KL ≈ -log σ_1(student) = 2000
    assert loss.item() == pytest.approx(2000.0, rel=1e-4)


# --- cross-entropy and XE-KL ---------------------------------------------------------------------

def test_cross_entropy_with_class_ids_is_mean_negative_log_true_class_probability():
    expected = -sum(math.log(softmax(row)[y]) for row, y in zip(STUDENT, LABELS)) / 3
    got = cross_entropy(tensor(STUDENT), torch.tensor(LABELS))
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_cross_entropy_with_soft_targets_is_mean_expected_negative_log_probability():
    soft = [[0.5, 0.5, 0.0], [0.0, 0.2, 0.8], [1.0, 0.0, 0.0]]
    expected = -sum(
        sum(yj * math.log(qj) for yj, qj in zip(y, softmax(row)))
        for row, y in zip(STUDENT, soft)
    ) / 3
    got = cross_entropy(tensor(STUDENT), tensor(soft))
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_cross_entropy_one_hot_soft_targets_equal_class_ids():
    one_hot = torch.nn.functional.one_hot(torch.tensor(LABELS), 3).float()
    assert cross_entropy(tensor(STUDENT), one_hot).item() == pytest.approx(
        cross_entropy(tensor(STUDENT), torch.tensor(LABELS)).item(), rel=1e-6)


def test_cross_entropy_is_on_logits_not_on_softmax_outputs():
    # the published code applied CE to softmax outputs; that gives another number
    on_probs = -sum(math.log(softmax(softmax(row))[y]) for row, y in zip(STUDENT, LABELS)) / 3
    got = cross_entropy(tensor(STUDENT), torch.tensor(LABELS)).item()
    assert got != pytest.approx(on_probs, rel=1e-2)


@pytest.mark.parametrize('xe_weight,temperature', [(0.3, 1.0), (0.5, 2.0), (0.0, 1.0), (1.0, 1.0)])
def test_xekl_is_weighted_sum_of_kl_and_cross_entropy(xe_weight, temperature):
    kl_expected = batch_kl(TEACHER, STUDENT, temperature)
    ce_expected = -sum(math.log(softmax(row)[y]) for row, y in zip(STUDENT, LABELS)) / 3
    loss, kl_part, ce_part = xekl_loss(tensor(STUDENT), tensor(TEACHER), torch.tensor(LABELS),
                                       xe_weight=xe_weight, temperature=temperature)
    assert kl_part.item() == pytest.approx(kl_expected, rel=1e-5)
    assert ce_part.item() == pytest.approx(ce_expected, rel=1e-5)
    assert loss.item() == pytest.approx((1 - xe_weight) * kl_expected + xe_weight * ce_expected, rel=1e-5)


def test_xekl_default_is_paper_lambda_point_seven_on_kl():
    kl_expected = batch_kl(TEACHER, STUDENT)
    ce_expected = -sum(math.log(softmax(row)[y]) for row, y in zip(STUDENT, LABELS)) / 3
    loss, _, _ = xekl_loss(tensor(STUDENT), tensor(TEACHER), torch.tensor(LABELS))
    assert loss.item() == pytest.approx(0.7 * kl_expected + 0.3 * ce_expected, rel=1e-5)


# --- KL+DP routing -------------------------------------------------------------------------------

# Hand-made routing batch, labels [0, 1, 1, 2]:
#   0: teacher puts more mass on the true class            -> teacher (both variants)
#   1: teacher confidently wrong, student mildly right     -> frozen (supervised), teacher (unsupervised)
#   2: teacher mildly right, frozen student confidently wrong -> teacher (supervised), frozen (unsupervised)
#   3: identical logits (a tie)                            -> frozen student in both variants
ROUTE_TEACHER = [[2.0, 0.0, 0.0], [5.0, 0.0, 0.0], [0.0, 1.0, 0.9], [0.3, 0.1, 1.5]]
ROUTE_FROZEN = [[0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [4.0, 0.5, 0.0], [0.3, 0.1, 1.5]]
ROUTE_LABELS = [0, 1, 1, 2]


def test_route_batch_is_what_the_comments_say():
    """Guards the hand-made example itself, with plain math."""
    tcp_t = [softmax(r)[y] for r, y in zip(ROUTE_TEACHER, ROUTE_LABELS)]
    tcp_s = [softmax(r)[y] for r, y in zip(ROUTE_FROZEN, ROUTE_LABELS)]
    assert [t > s for t, s in zip(tcp_t, tcp_s)] == [True, False, True, False]
    max_t = [max(softmax(r)) for r in ROUTE_TEACHER]
    max_s = [max(softmax(r)) for r in ROUTE_FROZEN]
    assert [t > s for t, s in zip(max_t, max_s)] == [True, True, False, False]


def test_true_class_and_max_probability_match_hand_values():
    tcp = true_class_probability(tensor(ROUTE_TEACHER), torch.tensor(ROUTE_LABELS))
    assert tcp.tolist() == pytest.approx([softmax(r)[y] for r, y in zip(ROUTE_TEACHER, ROUTE_LABELS)], rel=1e-5)
    assert max_probability(tensor(ROUTE_FROZEN)).tolist() == pytest.approx(
        [max(softmax(r)) for r in ROUTE_FROZEN], rel=1e-5)


def test_supervised_routing_prefers_higher_true_class_probability():
    mask = route_to_teacher(tensor(ROUTE_TEACHER), tensor(ROUTE_FROZEN), torch.tensor(ROUTE_LABELS))
    assert mask.dtype == torch.bool
    assert mask.tolist() == [True, False, True, False]


def test_unsupervised_routing_prefers_higher_max_probability():
    mask = route_to_teacher(tensor(ROUTE_TEACHER), tensor(ROUTE_FROZEN), None)
    assert mask.tolist() == [True, True, False, False]


def test_routing_ties_keep_the_frozen_student():
    z = tensor(ROUTE_TEACHER)
    labels = torch.tensor(ROUTE_LABELS)
    assert not route_to_teacher(z, z.clone(), labels).any()
    assert not route_to_teacher(z, z.clone(), None).any()


def test_soft_target_routing_uses_expected_true_class_probability():
    # target half class 0, half class 1. The teacher splits its mass over both classes
    # (expectation ≈ 0.5); the frozen student is confident in class 0 (expectation ≈ 0.477).
    # Routing by the argmax label (class 0) would wrongly keep the frozen student.
    teacher = [[2.0, 2.0, -10.0]]
    frozen = [[3.0, 0.0, 0.0]]
    soft = [[0.5, 0.5, 0.0]]
    expected_t = sum(y * p for y, p in zip(soft[0], softmax(teacher[0])))
    expected_s = sum(y * p for y, p in zip(soft[0], softmax(frozen[0])))
    assert expected_t > expected_s and softmax(frozen[0])[0] > softmax(teacher[0])[0]

    assert true_class_probability(tensor(teacher), tensor(soft)).item() == pytest.approx(expected_t, rel=1e-5)
    assert true_class_probability(tensor(frozen), tensor(soft)).item() == pytest.approx(expected_s, rel=1e-5)
    assert route_to_teacher(tensor(teacher), tensor(frozen), tensor(soft)).tolist() == [True]
    assert route_to_teacher(tensor(teacher), tensor(frozen), torch.tensor([0])).tolist() == [False]


def test_partitioned_targets_pick_teacher_rows_where_masked():
    teacher, frozen = tensor(ROUTE_TEACHER), tensor(ROUTE_FROZEN)
    mask = torch.tensor([True, False, True, False])
    targets = partitioned_targets(teacher, frozen, mask)
    assert torch.equal(targets, torch.stack([teacher[0], frozen[1], teacher[2], frozen[3]]))


@pytest.mark.parametrize('supervised', [True, False])
@pytest.mark.parametrize('temperature', [1.0, 2.0])
def test_kldp_loss_is_kl_to_hand_picked_per_sample_targets(supervised, temperature):
    student = [[0.5, -0.5, 1.0], [1.0, 1.0, 0.0], [0.0, 2.0, -1.0], [-1.0, 0.0, 0.5]]
    labels = torch.tensor(ROUTE_LABELS) if supervised else None
    chosen = [True, False, True, False] if supervised else [True, True, False, False]
    target_rows = [t if c else f for t, f, c in zip(ROUTE_TEACHER, ROUTE_FROZEN, chosen)]

    loss, mask = kldp_loss(tensor(student), tensor(ROUTE_TEACHER), tensor(ROUTE_FROZEN), labels,
                           temperature=temperature)
    assert mask.tolist() == chosen
    assert loss.item() == pytest.approx(batch_kl(target_rows, student, temperature), rel=1e-5)
    # and it is neither plain distillation nor plain self-distillation
    assert loss.item() != pytest.approx(batch_kl(ROUTE_TEACHER, student, temperature), rel=1e-3)
    assert loss.item() != pytest.approx(batch_kl(ROUTE_FROZEN, student, temperature), rel=1e-3)


def test_kldp_loss_has_no_cross_entropy_term():
    # a student equal to the frozen student on frozen-routed rows and to the teacher on
    # teacher-routed rows has zero loss, whatever the labels say
    teacher, frozen = tensor(ROUTE_TEACHER), tensor(ROUTE_FROZEN)
    student = partitioned_targets(teacher, frozen, torch.tensor([True, False, True, False]))
    loss, _ = kldp_loss(student, teacher, frozen, torch.tensor(ROUTE_LABELS))
    assert loss.item() == pytest.approx(0.0, abs=1e-6)


def test_kldp_student_gradient_is_softmax_difference_over_batch():
    """d/dz_s of batchmean KL(p ‖ σ(z_s)) is (σ(z_s) - p) / B: checked with hand numbers."""
    student_rows = [[0.5, -0.5, 1.0], [1.0, 1.0, 0.0], [0.0, 2.0, -1.0], [-1.0, 0.0, 0.5]]
    student = tensor(student_rows).requires_grad_(True)
    loss, mask = kldp_loss(student, tensor(ROUTE_TEACHER), tensor(ROUTE_FROZEN), torch.tensor(ROUTE_LABELS))
    loss.backward()
    target_rows = [t if c else f for t, f, c in zip(ROUTE_TEACHER, ROUTE_FROZEN, mask.tolist())]
    for grad_row, s_row, t_row in zip(student.grad.tolist(), student_rows, target_rows):
        expected = [(q - p) / 4 for q, p in zip(softmax(s_row), softmax(t_row))]
        assert grad_row == pytest.approx(expected, abs=1e-6)


def test_gradient_flows_only_to_student_logits():
    student = tensor([[0.5, -0.5, 1.0], [1.0, 1.0, 0.0], [0.0, 2.0, -1.0], [-1.0, 0.0, 0.5]]).requires_grad_(True)
    teacher = tensor(ROUTE_TEACHER).requires_grad_(True)
    frozen = tensor(ROUTE_FROZEN).requires_grad_(True)
    loss, _ = kldp_loss(student, teacher, frozen, torch.tensor(ROUTE_LABELS))
    loss.backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None or torch.count_nonzero(teacher.grad) == 0
    assert frozen.grad is None or torch.count_nonzero(frozen.grad) == 0


# --- parallel multi-teacher ----------------------------------------------------------------------

# Candidates [frozen student, teacher 1, teacher 2] on 6 samples, labels [0, 1, 2, 0, 1, 0]:
#   0: teacher 2 highest true-class probability            -> 2
#   1: teacher 1 highest                                     -> 1
#   2: frozen student highest                                -> 0
#   3: teachers tie, both above the frozen student           -> 1 (the first of the tie)
#   4: all three identical                                   -> 0 (ties keep the frozen student)
#   5: teacher 2 confidently wrong: supervised -> 0, unsupervised -> 2
CANDIDATES = [
    [[0.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 3.0], [0.0, 0.0, 0.0], [1.0, 0.5, 0.0], [1.0, 0.0, 0.0]],
    [[2.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 1.0], [2.0, 0.0, 0.0], [1.0, 0.5, 0.0], [0.0, 0.0, 0.0]],
    [[3.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 2.0], [2.0, 0.0, 0.0], [1.0, 0.5, 0.0], [0.0, 4.0, 0.0]],
]
PARALLEL_LABELS = [0, 1, 2, 0, 1, 0]
SUPERVISED_CHOICE = [2, 1, 0, 1, 0, 0]
UNSUPERVISED_CHOICE = [2, 1, 0, 1, 0, 2]


def test_parallel_example_is_what_the_comments_say():
    def first_argmax(values):
        return max(range(len(values)), key=lambda k: (values[k], -k))
    sup = [first_argmax([softmax(CANDIDATES[k][i])[y] for k in range(3)]) for i, y in enumerate(PARALLEL_LABELS)]
    unsup = [first_argmax([max(softmax(CANDIDATES[k][i])) for k in range(3)]) for i in range(6)]
    assert sup == SUPERVISED_CHOICE
    assert unsup == UNSUPERVISED_CHOICE


def test_route_among_picks_highest_true_class_probability_and_ties_keep_frozen_student():
    choice = route_among(tensor(CANDIDATES), torch.tensor(PARALLEL_LABELS))
    assert choice.tolist() == SUPERVISED_CHOICE


def test_route_among_unsupervised_picks_highest_max_probability():
    assert route_among(tensor(CANDIDATES), None).tolist() == UNSUPERVISED_CHOICE


def test_route_among_with_soft_targets_uses_expected_probability():
    soft = torch.nn.functional.one_hot(torch.tensor(PARALLEL_LABELS), 3).float()
    assert route_among(tensor(CANDIDATES), soft).tolist() == SUPERVISED_CHOICE


@pytest.mark.parametrize('supervised', [True, False])
def test_parallel_kldp_loss_is_kl_to_the_chosen_candidate(supervised):
    student = [[0.5, -0.5, 1.0], [1.0, 1.0, 0.0], [0.0, 2.0, -1.0], [-1.0, 0.0, 0.5], [0.2, 0.2, 0.2],
               [0.0, 1.0, 2.0]]
    labels = torch.tensor(PARALLEL_LABELS) if supervised else None
    expected_choice = SUPERVISED_CHOICE if supervised else UNSUPERVISED_CHOICE
    target_rows = [CANDIDATES[k][i] for i, k in enumerate(expected_choice)]
    loss, choice = parallel_kldp_loss(tensor(student), tensor(CANDIDATES), labels)
    assert choice.tolist() == expected_choice
    assert loss.item() == pytest.approx(batch_kl(target_rows, student), rel=1e-5)


def test_parallel_kldp_with_one_teacher_equals_kldp():
    student = tensor([[0.5, -0.5, 1.0], [1.0, 1.0, 0.0], [0.0, 2.0, -1.0], [-1.0, 0.0, 0.5]])
    labels = torch.tensor(ROUTE_LABELS)
    candidates = torch.stack([tensor(ROUTE_FROZEN), tensor(ROUTE_TEACHER)])
    parallel, choice = parallel_kldp_loss(student, candidates, labels, temperature=2.0)
    single, mask = kldp_loss(student, tensor(ROUTE_TEACHER), tensor(ROUTE_FROZEN), labels, temperature=2.0)
    assert torch.equal(choice == 1, mask)
    assert parallel.item() == pytest.approx(single.item(), rel=1e-6)


def test_parallel_kldp_gradient_reaches_only_the_student():
    student = tensor([[0.5, -0.5, 1.0], [1.0, 1.0, 0.0], [0.0, 2.0, -1.0], [-1.0, 0.0, 0.5], [0.2, 0.2, 0.2],
                      [0.0, 1.0, 2.0]]).requires_grad_(True)
    loss, choice = parallel_kldp_loss(student, tensor(CANDIDATES), torch.tensor(PARALLEL_LABELS))
    (grad,) = torch.autograd.grad(loss, student)
    for i, k in enumerate(choice.tolist()):
        expected = [(q - p) / 6 for q, p in zip(softmax(student[i].tolist()), softmax(CANDIDATES[k][i]))]
        assert grad[i].tolist() == pytest.approx(expected, abs=1e-6)


def test_flip_routing_counts_on_a_hand_made_batch():
    import torch.nn.functional as F

    from timm_gkt.transfer.objectives import flip_routing_counts
    # labels 0,1,2,0,1; teacher predicts 0,1,1,1,1; frozen student predicts 1,1,2,0,0
    target = torch.tensor([0, 1, 2, 0, 1])
    teacher = F.one_hot(torch.tensor([0, 1, 1, 1, 1]), 3).float() * 5
    frozen = F.one_hot(torch.tensor([1, 1, 2, 0, 0]), 3).float() * 5
    # positive flips (teacher right, student wrong): samples 0 and 4; negative flips: samples 2 and 3
    mask = torch.tensor([True, False, False, True, True])
    assert flip_routing_counts(teacher, frozen, target, mask).tolist() == [2, 2, 2, 1]
    # a soft (mixup) target counts by its largest class
    soft = F.one_hot(target, 3).float() * 0.8 + 0.1 / 1.5
    assert flip_routing_counts(teacher, frozen, soft, ~mask).tolist() == [2, 0, 2, 1]


# --- this project's extensions (METHOD.md, "Extensions under study") ---------------------------------------------

def ce_by_hand(row, label):
    return -math.log(softmax(row)[label])


def test_kldp_with_labels_is_weighted_kldp_plus_cross_entropy_on_a_three_sample_batch():
    """(1 − λ)·KL+DP + λ·CE, computed by hand: routing picks the teacher for samples 1 and 2 only."""
    from timm_gkt.transfer.tasks import KLDPTask
    frozen = [[3.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
    # true-class probabilities: teacher vs frozen student per sample: 0.665 < 0.909 (student), 0.867 > 0.107
    # (teacher), 0.936 > 0.576 (teacher)
    routed = [frozen[0], TEACHER[1], TEACHER[2]]
    lam = 0.3
    expected = (1 - lam) * batch_kl(routed, STUDENT) + lam * sum(ce_by_hand(s, y) for s, y in zip(STUDENT, LABELS)) / 3
    assert [true_class_probability(tensor(TEACHER), torch.tensor(LABELS))[i].item() >
            true_class_probability(tensor(frozen), torch.tensor(LABELS))[i].item() for i in range(3)] == \
        [False, True, True]

    class Fixed(torch.nn.Module):
        def __init__(self, rows, trainable=False):
            super().__init__()
            self.rows = torch.nn.Parameter(tensor(rows), requires_grad=trainable)

        def forward(self, x):
            return self.rows * 1.0

    task = KLDPTask(Fixed(STUDENT, trainable=True), Fixed(TEACHER), Fixed(frozen), xe_weight=lam)
    out = task(torch.zeros(3, 1), torch.tensor(LABELS))
    assert out['loss'].item() == pytest.approx(expected, rel=1e-5)
    assert out['routed_share'].item() == pytest.approx(2 / 3)
    paper = KLDPTask(Fixed(STUDENT, trainable=True), Fixed(TEACHER), Fixed(frozen))(torch.zeros(3, 1),
                                                                                    torch.tensor(LABELS))
    assert paper['loss'].item() == pytest.approx(batch_kl(routed, STUDENT), rel=1e-5)  # λ = 0 is the paper's


def test_three_way_routing_on_a_hand_made_batch():
    """Sample 0: the frozen student is more confident and right -> frozen student; sample 1: the teacher is more
    confident and right -> teacher; sample 2: the teacher is more confident in the truth but predicts another
    class -> the label."""
    from timm_gkt.transfer.objectives import route_three_way, three_way_loss
    teacher = [[1.0, 0.0, 0.0], [0.0, 3.0, 0.0], [2.5, 0.0, 2.0]]
    frozen = [[3.0, 0.0, 0.0], [2.0, 0.0, 0.0], [3.0, 0.0, 0.0]]
    labels = torch.tensor([0, 1, 2])
    source = route_three_way(tensor(teacher), tensor(frozen), labels)
    assert source.tolist() == [0, 1, 2]
    loss, _ = three_way_loss(tensor(STUDENT), tensor(teacher), tensor(frozen), labels, temperature=2.0)
    per_sample = [4 * kl(frozen[0], STUDENT[0], 2.0), 4 * kl(teacher[1], STUDENT[1], 2.0), ce_by_hand(STUDENT[2], 2)]
    assert loss.item() == pytest.approx(sum(per_sample) / 3, rel=1e-5)


def test_calibrated_routing_flips_a_decision_on_a_hand_made_batch():
    """Raw probabilities route sample 0 to the (overconfident) teacher; at the calibrated temperatures the
    frozen student's true-class probability is the higher one, so the sample stays with it."""
    teacher = [[4.0, 0.0, 0.0], [0.0, 4.0, 0.0]]
    frozen = [[1.5, 0.0, 0.0], [0.0, 0.5, 0.0]]
    labels = torch.tensor([0, 1])
    raw = route_to_teacher(tensor(teacher), tensor(frozen), labels)
    calibrated = route_to_teacher(tensor(teacher), tensor(frozen), labels, calibration=(4.0, 0.5))
    # by hand, sample 0: raw p_t = e^4/(e^4+2) = 0.965 > p_st = e^1.5/(e^1.5+2) = 0.691; calibrated
    # p_t = e/(e+2) = 0.576 < p_st = e^3/(e^3+2) = 0.909. Sample 1: raw 0.965 > e^0.5/(e^0.5+2) = 0.452;
    # calibrated both are e/(e+2) = 0.576, a tie
    assert softmax([1.0, 0.0, 0.0])[0] == pytest.approx(0.5761, abs=1e-4)
    assert raw.tolist() == [True, True]
    assert calibrated.tolist() == [False, False]  # sample 1 is a tie after calibration: ties keep the student


def test_soft_routing_mixes_both_distributions_by_true_class_probability():
    from timm_gkt.transfer.objectives import soft_routing_loss
    labels = torch.tensor(LABELS)
    frozen = [[3.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
    loss, weight = soft_routing_loss(tensor(STUDENT), tensor(TEACHER), tensor(frozen), labels)
    expected, weights = 0.0, []
    for t, f, s, y in zip(TEACHER, frozen, STUDENT, LABELS):
        w = softmax(t)[y] / (softmax(t)[y] + softmax(f)[y])
        weights.append(w)
        q = [w * a + (1 - w) * b for a, b in zip(softmax(t), softmax(f))]
        expected += sum(qi * (math.log(qi) - math.log(si)) for qi, si in zip(q, softmax(s))) / 3
    assert weight.tolist() == pytest.approx(weights, rel=1e-5)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_temperature_fitting_recovers_a_known_temperature():
    """Labels drawn from σ(z / 1.7): the fitted temperature is 1.7 within 2 %."""
    from timm_gkt.transfer.objectives import fit_temperature
    g = torch.Generator().manual_seed(0)
    logits = 3.0 * torch.randn(40000, 10, generator=g)
    labels = torch.multinomial(torch.softmax(logits / 1.7, dim=-1), 1, generator=g).squeeze(1)
    assert fit_temperature(logits, labels) == pytest.approx(1.7, rel=0.02)
    assert fit_temperature(logits * 2.0, labels) == pytest.approx(3.4, rel=0.02)  # T scales with the logits
