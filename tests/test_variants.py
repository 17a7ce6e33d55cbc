"""The objectives study's rule (studies/zoo/variants/PLAN.md) on hand-made selection records."""
import importlib
import json

import pytest

variants = importlib.import_module('studies.zoo.variants.__main__')


def _record(path, run, kind, student, delta, p=0.5):
    path.write_text(json.dumps({'run': run, 'kind': kind, 'student': student,
                                'results': {'transfer_delta': delta, 'p_value': p}}))


@pytest.fixture()
def selection(tmp_path, monkeypatch):
    monkeypatch.setattr(variants, 'RUNS', tmp_path / 'runs')
    monkeypatch.setattr(variants, 'CHOSEN', tmp_path / 'chosen.json')
    (tmp_path / 'runs').mkdir()

    def write(gains: dict):
        """gains: condition -> Δ of every pair; every student's CE control gains +0.10."""
        for s, t in variants.SELECT_PAIRS:
            _record(tmp_path / 'runs' / f'select__{s}__ce.json', f'select__{s}__ce', 'select-control', s, 0.10)
            for name in variants.CONDITIONS:
                run = f'select__{s}__{t}__{name}'
                _record(tmp_path / 'runs' / f'{run}.json', run, 'select', s, gains.get(name, 0.0))
    return write


def test_the_variant_furthest_above_the_control_is_chosen(selection):
    selection({'kldp': 0.30, 'kldp-ce0.3': 0.12, 'kldp-3way': 0.14, 'kldp-ce0.5': 0.13})
    out = variants.choose()
    # kldp (0.30 - 0.10) is the baseline of the question: reported, never chosen
    assert out['go'] and out['chosen'] == 'kldp-3way' and out['mean_minus_ce']['kldp-3way'] == pytest.approx(0.04)
    assert out['mean_minus_ce']['kldp'] == pytest.approx(0.20)


def test_equal_means_go_to_the_simpler_variant(selection):
    selection({'kldp-ce0.3-T2': 0.15, 'kldp-ce0.3': 0.15})  # two flags each; kldp-T2 stays at 0
    assert variants.choose()['chosen'] == 'kldp-ce0.3'
    selection({'kldp-3way-cal': 0.15, 'kldp-ce0.3': 0.15})  # four flags against two
    assert variants.choose()['chosen'] == 'kldp-ce0.3'


def test_no_variant_above_the_control_is_a_no_go(selection):
    selection({name: 0.10 for name in variants.CONDITIONS})
    out = variants.choose()
    assert not out['go'] and out['chosen'] is None
    with pytest.raises(SystemExit, match='stops at the selection on a no-go'):
        variants.confirm_runs()


def test_an_incomplete_selection_chooses_nothing(selection, tmp_path):
    selection({'kldp-ce0.3': 0.3})
    (tmp_path / 'runs' / 'select__vit_a__resnet_a__kldp-T2.json').unlink()
    with pytest.raises(SystemExit, match='not complete'):
        variants.choose()


def test_the_report_gives_no_verdict_before_all_56_pairs_and_a_plain_one_after():
    from studies.zoo.variants.report import markdown
    table = {'conditions': {}, 'ce': {}}
    decision = {'go': True, 'chosen': 'kldp-3way-cal', 'best': 'kldp-3way-cal', 'mean_minus_ce': {'kldp-3way-cal': 0.08}}

    def confirmed(n, lo, hi):
        s = {'n': n, 'success_rate': 50.0, 'success_ci': [40, 60], 'success_ci_clustered': [35, 65],
             'mean_delta': 0.1, 'mean_delta_ci': [0.0, 0.2], 'significant_gain_pairs': 1, 'significant_loss_pairs': 0,
             'minus_ce': {'mean': (lo + hi) / 2, 'ci': [lo, hi], 'positive': 30, 'n': n}}
        return {'kldp-3way-cal': s}
    partial = markdown(table, decision, confirmed(20, -0.1, 0.2))
    assert '20 of 56 run so far; no verdict before all 56.' in partial and 'Verdict' not in partial
    assert 'does not beat more training' in markdown(table, decision, confirmed(56, -0.02, 0.1))
    assert 'it beats more training on this zoo.' in markdown(table, decision, confirmed(56, 0.01, 0.1))
    assert 'below more training' in markdown(table, decision, confirmed(56, -0.2, -0.05))
