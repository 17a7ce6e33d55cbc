"""What a run found (timm_gkt/results.py): the verdict, the shared before/after rows, the CLI table."""
import pytest
from hubkit import make_results

from timm_gkt.report.results import (
    Row, Verdict, before_after_rows, format_table, markdown_rows, pvalue_text, transfer_delta, verdict, verdict_of,
)


@pytest.mark.parametrize('delta, p, n, expected', [
    (0.62, 0.003, 10000, Verdict('improved', 'improved: +0.62 points (p = 0.003)')),
    (-0.62, 0.003, 10000, Verdict('worse', 'worse: -0.62 points (p = 0.003)')),
    (0.18, 0.24, 10000, Verdict('no significant change',
                                'no significant change: +0.18 points (p = 0.24, one image = 0.01)')),
    # just below and just above the 5% level
    (0.20, 0.0499, 10000, Verdict('improved', 'improved: +0.20 points (p = 0.0499)')),
    (0.20, 0.0501, 10000, Verdict('no significant change',
                                  'no significant change: +0.20 points (p = 0.05, one image = 0.01)')),
    (-0.20, 0.0501, 10000, Verdict('no significant change',
                                   'no significant change: -0.20 points (p = 0.05, one image = 0.01)')),
    (0.20, 0.05, 10000, Verdict('no significant change',
                                'no significant change: +0.20 points (p = 0.05, one image = 0.01)')),
    # Δ = 0 is never a change, whatever the p-value says
    (0.0, 1.0, 400, Verdict('no significant change', 'no significant change: +0.00 points (p = 1, one image = 0.25)')),
    (0.0, 0.01, 400, Verdict('no significant change',
                             'no significant change: +0.00 points (p = 0.01, one image = 0.25)')),
    (0.3, None, None, Verdict('no significant change', 'no significant change: +0.30 points (no p-value)')),
    (None, 0.01, 10000, Verdict('no result', 'no result: the run recorded no transfer delta')),
])
def test_verdict_calls_a_change_improved_or_worse_only_when_significant(delta, p, n, expected):
    assert verdict(delta, p, n) == expected


@pytest.mark.parametrize('p, digits, text', [
    (0.0499, 2, '0.0499'), (0.04999, 3, '0.04999'), (0.0501, 2, '0.05'), (0.05, 2, '0.05'), (0.0123, 2, '0.012'),
    (2.04e-5, 3, '2.04e-05'), (1.0, 2, '1'), (0.0499, 8, '0.0499'), (None, 2, '–'),
])
def test_a_p_value_is_never_rounded_across_the_five_percent_level(p, digits, text):
    assert pvalue_text(p, digits) == text


def test_verdict_of_prefers_the_stored_verdict_and_computes_one_for_older_results():
    stored = make_results(verdict={'word': 'improved', 'text': 'improved: +0.50 points (p = 0.0003)'})
    assert verdict_of(stored) == Verdict('improved', 'improved: +0.50 points (p = 0.0003)')
    older = make_results(p_value=0.24, transfer_delta=None, top1_before=85.52, top1_after=85.70)
    assert transfer_delta(older) == pytest.approx(0.18)
    assert verdict_of(older).text == 'no significant change: +0.18 points (p = 0.24, one image = 0.01)'


def test_before_after_rows_are_the_student_then_each_teachers_flips():
    two = dict(make_results()['teachers'][0], name='mixer_a', rho_pos=4.0, rho_pos_after=3.0, pos_flips_delta=-1.0,
               rho_neg=1.0, rho_neg_after=1.5, neg_flips_delta=0.5)
    rows = before_after_rows(make_results(teachers=make_results()['teachers'] + [two]))
    assert rows == [
        Row('student top-1', None, 85.1, 85.6, 0.5),
        Row('ρpos', 'convnext_a', 6.0, 5.5, -0.5), Row('ρneg', 'convnext_a', 2.0, 2.1, 0.1),
        Row('ρpos', 'mixer_a', 4.0, 3.0, -1.0), Row('ρneg', 'mixer_a', 1.0, 1.5, 0.5),
    ]
    assert [r.label for r in rows[:2]] == ['student top-1', 'ρpos vs convnext_a']
    assert markdown_rows(rows[:2]) == ['| student top-1 | 85.10 | 85.60 | +0.50 |',
                                       '| ρpos vs convnext_a | 6.00 | 5.50 | -0.50 |']
    missing = before_after_rows(make_results(top1_after=None, transfer_delta=None, teachers=[]))
    assert markdown_rows(missing) == ['| student top-1 | 85.10 | – | – |']


def test_cli_table_lays_out_the_rows_and_states_the_verdict():
    results = make_results(hyperparameters=dict(make_results()['hyperparameters'], epochs=1))
    lines = format_table(results).splitlines()
    assert lines[0] == 'Transfer into vit_a from convnext_a (KL + DP, 1 epoch(s) per stage, 10000 eval images)'
    assert lines[1].split() == ['before', 'after', 'Δ']
    assert lines[2] == f"{'student top-1':34s}    85.10    85.60    +0.50"
    assert lines[3].split() == ['knowledge', 'gained', '/', 'lost', '+1.20', '/', '-0.70', '(McNemar', 'p', '=',
                                '0.0003)']
    assert lines[4] == 'teacher convnext_a (top-1 90.10), routed 30.2%'
    assert lines[5] == f"{'  ρpos, complementary knowledge':34s}     6.00     5.50    -0.50"
    assert lines[6] == f"{'  ρneg':34s}     2.00     2.10    +0.10"
    assert lines[7] == 'result: improved: +0.50 points (p = 0.0003)'
    noise = format_table(make_results(p_value=0.24, transfer_delta=0.18, top1_after=85.28))
    assert noise.splitlines()[-1] == 'result: no significant change: +0.18 points (p = 0.24, one image = 0.01)'
    assert 'improved' not in noise


def test_cli_table_says_when_the_top1_is_on_a_subset():
    subset = {'size': 400, 'of': 10000, 'seed': 3, 'sampling': 'class-stratified', 'fingerprint': 'ab'}
    results = make_results(eval_samples=400, data={'eval': {'subset': subset}})
    assert format_table(results).splitlines()[0].endswith(
        '400 eval images (a seeded subset of the 10000 of test))')


def test_routed_shares_take_the_last_epoch_of_each_teachers_stage():
    import torch

    from timm_gkt.transfer.epoch import flip_shares
    from timm_gkt.report.results import routed_shares
    # 8 positive flips, 6 of them routed; 4 negative flips, 1 routed
    flips = flip_shares(torch.tensor([8, 6, 4, 1]))
    assert flips == {'positive_flips': 8, 'negative_flips': 4, 'routed_pos_flips': 75.0, 'routed_neg_flips': 25.0}
    assert flip_shares(torch.tensor([0, 0, 3, 0]))['routed_pos_flips'] is None  # no flips: no share, not 0%
    history = [{'routed': {'a': 40.0}, 'routed_flips': flip_shares(torch.tensor([10, 5, 10, 5]))},
               {'routed': {'a': 30.0}, 'routed_flips': flips},
               {'routed': {'b': 20.0}, 'routed_flips': None}]
    shares = routed_shares(history)
    assert shares['a'] == {'routed_share': 30.0, 'routed_pos_flips': 75.0, 'routed_neg_flips': 25.0}
    assert shares['b'] == {'routed_share': 20.0, 'routed_pos_flips': None, 'routed_neg_flips': None}


@pytest.mark.parametrize('delta, p, word, text', [
    (0.21, 0.004, 'better than more training',
     '+0.21 points (p = 0.004, paired McNemar): better than more training'),
    (-0.42, 0.001, 'worse than more training',
     '-0.42 points (p = 0.001, paired McNemar): worse than more training'),
    # not significant either way: never "better" or "worse", and a loss is not called "worse"
    (0.30, 0.0501, 'no better than more training',
     '+0.30 points (p = 0.05, paired McNemar): no better than more training'),
    (-0.30, 0.2, 'no better than more training',
     '-0.30 points (p = 0.2, paired McNemar): no better than more training'),
    (0.0, 0.01, 'no better than more training', '+0.00 points (p = 0.01, paired McNemar): no better than more training'),
    (None, 0.01, 'no result', 'no result: nothing was compared with more training'),
])
def test_comparison_verdict_says_better_or_worse_only_when_significant(delta, p, word, text):
    from timm_gkt.report.results import comparison_verdict
    assert comparison_verdict(delta, p, 'more training', 'paired McNemar') == Verdict(word, text)


def control_results(delta=-0.42, p=0.001, gains=20, losses=62):
    from timm_gkt.report.results import CONTROL_TEST, comparison_verdict
    from dataclasses import asdict
    return make_results(
        control={'method': 'ce', 'stages': 1, 'epochs_per_stage': 2, 'top1': 86.02, 'transfer_delta': 0.92},
        vs_control={'delta': delta, 'gains': gains, 'losses': losses, 'p_value': p, 'eval_samples': 10000,
                    'verdict': asdict(comparison_verdict(delta, p, 'more training', CONTROL_TEST))})


def test_cli_table_shows_the_control_row_and_the_paired_comparison_after_the_transfer_lines():
    plain = format_table(make_results()).splitlines()
    lines = format_table(control_results()).splitlines()
    # the transfer's own lines are unchanged; the control adds its row and one line at the end
    assert [line for line in lines if 'control' not in line and 'more training' not in line] == plain
    assert lines[4] == f"{'control top-1 (more training, CE)':34s}    85.10    86.02    +0.92"
    assert lines[-1] == ('vs more training: -0.42 points (p = 0.001, paired McNemar between the transferred and the '
                         'control student): worse than more training')
    assert before_after_rows(control_results())[1] == Row('control top-1 (more training, CE)', None, 85.1, 86.02, 0.92)
