"""The CI step summary (timm_gkt/hub/summary.py): the shared before/after table, the verdict, the decision."""
from __future__ import annotations

from hubkit import make_results

from timm_gkt import hub as gkt_hub


def test_step_summary_appends_to_github_step_summary(tmp_path, monkeypatch):
    path = tmp_path / 'summary.md'
    path.write_text('# earlier step\n')
    monkeypatch.setenv('GITHUB_STEP_SUMMARY', str(path))
    gkt_hub.write_step_summary(make_results(), 'pushed to alice/vit_a-gkt')
    gkt_hub.write_step_summary(make_results(), 'second run', path=None)
    text = path.read_text()
    assert text.startswith('# earlier step\n')
    assert text.count('### timm_gkt: vit_a ← convnext_a (KL + DP)') == 2
    # the before/after table is the card's (results.before_after_rows), teacher by teacher
    assert '| student top-1 | 85.10 | 85.60 | +0.50 |' in text
    assert '| ρpos vs convnext_a | 6.00 | 5.50 | -0.50 |' in text
    assert '| ρneg vs convnext_a | 2.00 | 2.10 | +0.10 |' in text
    assert '| convnext_a | 90.10 | 30.2% |' in text
    assert '**Verdict:** improved: +0.50 points (p = 0.0003).' in text
    assert '**Decision:** pushed to alice/vit_a-gkt' in text
    monkeypatch.delenv('GITHUB_STEP_SUMMARY')
    gkt_hub.write_step_summary(make_results(), 'nowhere')  # no file named: nothing to do, no error
    assert text == path.read_text()


def test_step_summary_never_calls_a_non_significant_gain_an_improvement():
    text = gkt_hub.step_summary(make_results(p_value=0.24, transfer_delta=0.18, top1_after=85.28), 'not pushed')
    assert '**Verdict:** no significant change: +0.18 points (p = 0.24, one image = 0.01).' in text
    assert 'improved' not in text


def test_step_summary_carries_the_control_row_and_the_comparison_with_more_training():
    from test_results import control_results
    text = gkt_hub.step_summary(control_results(), 'Not pushed: the student is no better than more training')
    assert '| control top-1 (more training, CE) | 85.10 | 86.02 | +0.92 |' in text
    assert ('**vs more training:** -0.42 points (p = 0.001, paired McNemar between the transferred and the control '
            'student): worse than more training.') in text
    assert 'more training' not in gkt_hub.step_summary(make_results(), 'pushed')
