"""Transfer metrics (METHOD.md, "Metrics") on a hand-made 10-sample, 3-class example.

    index      0 1 2 3 4 5 6 7 8 9
    label      0 0 0 1 1 1 2 2 2 2      class sizes 3, 3, 4
    teacher    1 1 1 1 0 0 1 0 1 0      (1 = correct)
    student s0 0 0 1 1 1 0 0 1 1 0
    student s1 1 0 1 1 0 0 1 1 1 0

By hand:
    positive flips t & ~s0  = {0, 1, 6}  -> 30 %, per class 2/3, 0/3, 1/4
    negative flips ~t & s0  = {4, 7}     -> 20 %
    after transfer: positive {1} -> 10 %, negative {7} -> 10 %
    gain ~s0 & s1 = {0, 6} -> 20 %, loss s0 & ~s1 = {4} -> 10 %
    acc s0 50 %, s1 60 %, teacher 60 %  ->  Δtransf = 10 = 20 - 10
"""
import math

import pytest
import torch

from timm_gkt.evaluation.metrics import (
    complementary_knowledge, correctness, expertise_classes, flip_entropy, knowledge_gain, knowledge_loss,
    mcnemar_p_value, negative_flips, per_class_rate, percent, positive_flips, transfer_metrics, transfer_rates,
)

LABELS = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 2])
TEACHER = torch.tensor([1, 1, 1, 1, 0, 0, 1, 0, 1, 0], dtype=torch.bool)
BEFORE = torch.tensor([0, 0, 1, 1, 1, 0, 0, 1, 1, 0], dtype=torch.bool)
AFTER = torch.tensor([1, 0, 1, 1, 0, 0, 1, 1, 1, 0], dtype=torch.bool)
NUM_CLASSES = 3


def predictions(correct, labels=LABELS, num_classes=NUM_CLASSES):
    """Class predictions that are right exactly where ``correct`` says."""
    return torch.where(correct, labels, (labels + 1) % num_classes)


def indices(mask):
    return torch.nonzero(mask).flatten().tolist()


def test_correctness_compares_predictions_with_labels():
    assert torch.equal(correctness(predictions(TEACHER), LABELS), TEACHER)


def test_positive_and_negative_flips_on_hand_example():
    assert indices(positive_flips(TEACHER, BEFORE)) == [0, 1, 6]
    assert indices(negative_flips(TEACHER, BEFORE)) == [4, 7]
    assert indices(positive_flips(TEACHER, AFTER)) == [1]
    assert indices(negative_flips(TEACHER, AFTER)) == [7]


def test_rates_are_in_percent():
    assert percent(positive_flips(TEACHER, BEFORE)) == pytest.approx(30.0)
    assert percent(negative_flips(TEACHER, BEFORE)) == pytest.approx(20.0)
    assert percent(TEACHER) == pytest.approx(60.0)
    assert percent(torch.zeros(0, dtype=torch.bool)) == 0.0


def test_knowledge_gain_minus_loss_is_transfer_delta():
    gain, loss = knowledge_gain(BEFORE, AFTER), knowledge_loss(BEFORE, AFTER)
    assert indices(gain) == [0, 6]
    assert indices(loss) == [4]
    assert percent(gain) == pytest.approx(20.0)
    assert percent(loss) == pytest.approx(10.0)
    assert percent(AFTER) - percent(BEFORE) == pytest.approx(percent(gain) - percent(loss))


@pytest.mark.parametrize('gains,losses,expected', [
    (5, 0, 2 * 0.5 ** 5),  # 0.0625
    (0, 5, 2 * 0.5 ** 5),  # symmetric
    (1, 4, 2 * (1 + 5) / 2 ** 5),  # 0.375
    (10, 2, 2 * (1 + 12 + 66) / 2 ** 12),
    (3, 3, 1.0),
    (2, 1, 1.0),  # 2 * (1 + 3) / 8 = 1
    (0, 0, 1.0),
    (1, 0, 1.0),
])
def test_mcnemar_p_value_matches_exact_binomial_by_hand(gains, losses, expected):
    assert mcnemar_p_value(gains, losses) == pytest.approx(expected, rel=1e-9)


def exact_two_sided_binomial(gains, losses):
    """2 · Σ_{i ≤ min} C(n, i) / 2^n with Python integers (no floating point until the last division)."""
    n, k = gains + losses, min(gains, losses)
    term, tail = 1, 1
    for i in range(k):
        term = term * (n - i) // (i + 1)  # C(n, i + 1), exact
        tail += term
    return min(1.0, 2 * tail / 2 ** n)


def test_mcnemar_p_value_stays_finite_for_a_ten_thousand_image_split():
    p = mcnemar_p_value(5100, 4900)
    exact = exact_two_sided_binomial(5100, 4900)
    assert math.isfinite(p) and 0.0 < p <= 1.0
    assert p == pytest.approx(exact, rel=1e-6)
    assert 0.04 < p < 0.05  # a 2-point edge on 10k flips is borderline significant


def test_mcnemar_p_value_for_a_lopsided_large_split_is_tiny_but_positive():
    p = mcnemar_p_value(600, 400)
    exact = exact_two_sided_binomial(600, 400)
    assert exact == 2 * sum(math.comb(1000, i) for i in range(401)) / 2 ** 1000
    assert 0.0 < p < 1e-9
    assert p == pytest.approx(exact, rel=1e-6)


def test_per_class_rate_divides_by_class_size_in_percent():
    pos = positive_flips(TEACHER, BEFORE)
    assert per_class_rate(pos, LABELS, NUM_CLASSES).tolist() == pytest.approx([200 / 3, 0.0, 25.0])


def test_per_class_rate_is_zero_for_an_empty_class():
    pos = positive_flips(TEACHER, BEFORE)
    assert per_class_rate(pos, LABELS, 4).tolist() == pytest.approx([200 / 3, 0.0, 25.0, 0.0])


@pytest.mark.parametrize('share,expected', [
    (2, [0]),
    (50, [0]),
    (200 / 3, [0]),  # class 0 holds exactly 2 of 3 flips
    (67, [0, 2]),
    (100, [0, 2]),  # class 1 has no positive flips and is never needed
])
def test_expertise_classes_are_fewest_classes_holding_share_of_positive_flips(share, expected):
    pos = positive_flips(TEACHER, BEFORE)
    assert expertise_classes(pos, LABELS, NUM_CLASSES, share).tolist() == expected


def test_expertise_classes_are_ordered_by_rate_not_by_count():
    """Class 0 is large and holds 3 positive flips of 30 images (10 %); class 1 is small and holds 2 of 4 (50 %).
    Ordered by per-class complementary knowledge (the rate), class 1 comes first and alone holds 40 % of the 5
    flips; ordered by count, class 0 would."""
    labels = torch.tensor([0] * 30 + [1] * 4)
    pos = torch.zeros(34, dtype=torch.bool)
    pos[[0, 1, 2, 30, 31]] = True
    assert expertise_classes(pos, labels, 2, 40).tolist() == [1]
    assert expertise_classes(pos, labels, 2, 41).tolist() == [1, 0]
    assert expertise_classes(pos, labels, 2, 100).tolist() == [1, 0]


def test_expertise_classes_empty_without_positive_flips():
    nothing = torch.zeros(10, dtype=torch.bool)
    assert expertise_classes(nothing, LABELS, NUM_CLASSES, 50).numel() == 0


def test_transfer_rates_are_student_gains_on_top_class_positive_flips():
    # top classes {0}: positive-flip samples {0, 1}; the student now gets 0 right -> 50 %
    # all classes {0, 2}: samples {0, 1, 6}; now right: 0 and 6 -> 66.7 %
    rates = transfer_rates(BEFORE, AFTER, TEACHER, LABELS, NUM_CLASSES)
    assert set(rates) == {'top2', 'top5', 'top20', 'top50', 'top100'}
    for key in ('top2', 'top5', 'top20', 'top50'):
        assert rates[key] == pytest.approx(50.0)
    assert rates['top100'] == pytest.approx(200 / 3)


def test_transfer_rates_are_none_without_positive_flips():
    rates = transfer_rates(BEFORE, AFTER, BEFORE, LABELS, NUM_CLASSES, shares=(50, 100))
    assert rates == {'top50': None, 'top100': None}


def test_flip_entropy_is_log_num_classes_when_uniform_and_zero_for_a_specialist():
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    uniform = torch.tensor([1, 0, 1, 0, 1, 0], dtype=torch.bool)
    specialist = torch.tensor([1, 1, 0, 0, 0, 0], dtype=torch.bool)
    two_classes = torch.tensor([1, 0, 0, 0, 0, 1], dtype=torch.bool)
    assert flip_entropy(uniform, labels, 3) == pytest.approx(math.log(3), rel=1e-6)
    assert flip_entropy(specialist, labels, 3) == pytest.approx(0.0, abs=1e-9)
    assert flip_entropy(two_classes, labels, 3) == pytest.approx(math.log(2), rel=1e-6)
    assert flip_entropy(torch.zeros(6, dtype=torch.bool), labels, 3) == 0.0


def test_complementary_knowledge_reports_rates_and_top_classes_by_name():
    report = complementary_knowledge(predictions(TEACHER), predictions(BEFORE), LABELS, NUM_CLASSES,
                                     label_names=['shirt', 'trouser', 'bag'], top_k=2)
    assert report['teacher_top1'] == pytest.approx(60.0)
    assert report['student_top1'] == pytest.approx(50.0)
    assert report['rho_pos'] == pytest.approx(30.0)
    assert report['rho_neg'] == pytest.approx(20.0)
    assert report['per_class_pos_flips'] == pytest.approx([66.667, 0.0, 25.0])
    assert report['top_classes'] == [
        {'class': 'shirt', 'pos_flip_rate': 66.67},
        {'class': 'bag', 'pos_flip_rate': 25.0},
    ]
    # distribution over classes 0 and 2 is proportional to the per-class rates 2/3 and 1/4
    p0 = (2 / 3) / (2 / 3 + 1 / 4)
    assert report['flip_entropy'] == pytest.approx(-(p0 * math.log(p0) + (1 - p0) * math.log(1 - p0)), rel=1e-5)


def test_complementary_knowledge_names_classes_by_index_without_label_names():
    report = complementary_knowledge(predictions(TEACHER), predictions(BEFORE), LABELS, NUM_CLASSES)
    assert [c['class'] for c in report['top_classes']] == ['0', '2', '1']


def test_transfer_metrics_on_hand_example():
    out = transfer_metrics(predictions(BEFORE), predictions(AFTER), {'teacher_a': predictions(TEACHER)},
                           LABELS, NUM_CLASSES)
    assert out['top1_before'] == pytest.approx(50.0)
    assert out['top1_after'] == pytest.approx(60.0)
    assert out['transfer_delta'] == pytest.approx(10.0)
    assert out['knowledge_gain'] == pytest.approx(20.0)
    assert out['knowledge_loss'] == pytest.approx(10.0)
    assert out['transfer_delta'] == pytest.approx(out['knowledge_gain'] - out['knowledge_loss'])
    assert (out['gains'], out['losses']) == (2, 1)
    assert out['p_value'] == pytest.approx(1.0)

    t = out['teachers']['teacher_a']
    assert set(out['teachers']) == {'teacher_a'}
    assert t['top1'] == pytest.approx(60.0)
    assert t['rho_pos'] == pytest.approx(30.0)
    assert t['rho_neg'] == pytest.approx(20.0)
    assert t['rho_pos_after'] == pytest.approx(10.0)
    assert t['rho_neg_after'] == pytest.approx(10.0)
    assert t['pos_flips_delta'] == pytest.approx(-20.0)  # complementary knowledge absorbed
    assert t['neg_flips_delta'] == pytest.approx(-10.0)
    assert t['transfer_rates']['top50'] == pytest.approx(50.0)
    assert t['transfer_rates']['top100'] == pytest.approx(200 / 3)
    assert t['per_class_pos_flips_before'] == pytest.approx([66.667, 0.0, 25.0])
    # after transfer only sample 1 (class 0) is still a positive flip
    assert t['per_class_pos_flips_after'] == pytest.approx([33.333, 0.0, 0.0])


def test_transfer_metrics_with_two_teachers_reports_each():
    other = torch.tensor([0, 0, 0, 0, 0, 0, 0, 0, 0, 1], dtype=torch.bool)
    out = transfer_metrics(predictions(BEFORE), predictions(AFTER),
                           {'a': predictions(TEACHER), 'b': predictions(other)}, LABELS, NUM_CLASSES)
    assert list(out['teachers']) == ['a', 'b']
    b = out['teachers']['b']
    assert b['top1'] == pytest.approx(10.0)
    assert b['rho_pos'] == pytest.approx(10.0)  # sample 9: teacher b right, both students wrong
    assert b['rho_pos_after'] == pytest.approx(10.0)
    assert b['rho_neg'] == pytest.approx(50.0)
    assert b['rho_neg_after'] == pytest.approx(60.0)
    assert b['neg_flips_delta'] == pytest.approx(10.0)
    assert b['transfer_rates']['top100'] == pytest.approx(0.0)
