"""The converged zoo's convergence rule (studies/converged/PLAN.md) on hand-made records."""
import importlib

import pytest

build = importlib.import_module('studies.converged.build')


def record(clean_losses, rounds):
    history = [{'epoch': e, 'train_loss': 0.5} for e in range(1, 28)]
    history += [{'epoch': 28 + i, 'train_loss': 0.5, 'clean_train_loss': loss} for i, loss in enumerate(clean_losses)]
    return {'history': history, 'rounds': [{'round': k + 1, 'delta': d, 'p_value': p}
                                           for k, (d, p) in enumerate(rounds)]}


def test_a_model_whose_loss_has_flattened_and_whose_check_does_not_move_it_is_converged():
    verdict = build.convergence(record([0.100, 0.0995, 0.0990], [(+0.05, 0.62)]))
    assert verdict == {'loss_stopped_falling': True, 'check_passed_in_round': 1, 'converged': True, 'rounds': 1}


def test_a_loss_still_falling_by_two_percent_fails_part_a():
    verdict = build.convergence(record([0.100, 0.0990, 0.0979], [(+0.02, 0.9)]))  # 2.1 % over two epochs
    assert not verdict['loss_stopped_falling'] and not verdict['converged']


@pytest.mark.parametrize('delta, p', [(+0.11, 0.5), (-0.11, 0.5), (+0.08, 0.25)])
def test_a_check_that_moves_test_top1_fails_part_b(delta, p):
    """More than 0.10 points either way, or a small move that McNemar already calls likely (p < 0.3)."""
    verdict = build.convergence(record([0.1, 0.1, 0.1], [(delta, p)]))
    assert verdict['check_passed_in_round'] is None and not verdict['converged']


def test_the_first_passing_round_is_the_kept_model():
    verdict = build.convergence(record([0.1, 0.1, 0.1], [(+0.20, 0.01), (+0.06, 0.35), (-0.01, 1.0)]))
    assert verdict['check_passed_in_round'] == 2 and verdict['converged'] and verdict['rounds'] == 3


def test_without_the_last_three_clean_losses_part_a_cannot_hold():
    assert not build.loss_stopped_falling([0.1, 0.1])


def test_the_side_by_side_report_on_records_of_two_zoos():
    """Three blocks from hand-made records: the control of the same student and seed is subtracted, seeds are
    averaged on the map, and each hypothesis is decided or left open."""
    report = importlib.import_module('studies.converged.report')
    index = {'models': [{'name': n, 'convergence': {'converged': True}, 'clean_train_top1': 99.0}
                        for n in ('big1', 'big2')]}
    teacher = [{'pos_flips_delta': -0.1, 'neg_flips_delta': 0.0, 'top1': 91.0}]

    def rec(kind, student, teachers, method, delta, seed=0, p=0.5):
        return {'kind': kind, 'student': student, 'teachers': teachers, 'method': method,
                'flags': ['--seed', '0', '--seed', str(seed)],
                'results': {'transfer_delta': delta, 'p_value': p, 'top1_before': 90.0,
                            'teachers': teacher if teachers else []}}
    records = [rec('control', 'big1', [], 'ce', 0.02), rec('control', 'big2', [], 'ce', -0.02),
               rec('pair', 'big1', ['big2'], 'kldp', 0.12, p=0.01), rec('pair', 'big2', ['big1'], 'kldp', 0.10),
               rec('pair', 'big1', ['big2'], 'kl', -0.50, p=0.001), rec('pair', 'big2', ['big1'], 'kl', -0.60, p=0.001),
               rec('control', 'small', [], 'ce', 0.20), rec('control', 'small', [], 'ce', 0.40, seed=1),
               rec('cross', 'small', ['big1'], 'kldp', 0.50), rec('cross', 'small', ['big1'], 'kldp', 0.30, seed=1),
               rec('cross', 'small', ['big1'], 'kl', 0.10),  # KL-Dist at seed 0 only
               rec('cross', 'big1', ['small'], 'kldp', 0.00)]
    summary = report.summarize(records, index)
    within, to_first = summary['blocks']['within']['kldp'], summary['blocks']['to_first']['kldp']
    assert within['n'] == 2 and within['minus_ce']['mean'] == pytest.approx((0.10 + 0.12) / 2)
    assert within['significant_gain_pairs'] == 1
    assert to_first['n'] == 2 and to_first['minus_ce']['mean'] == pytest.approx(((0.5 - 0.2) + (0.3 - 0.4)) / 2)
    assert summary['blocks']['to_converged']['kldp']['minus_ce']['mean'] == pytest.approx(-0.02)
    # KL+DP − KL-Dist is paired on (student, teacher, seed): seed 1 of KL+DP has no KL-Dist beside it
    assert within['minus_kl']['mean'] == pytest.approx(((0.12 + 0.50) + (0.10 + 0.60)) / 2)
    assert to_first['minus_kl']['n'] == 1 and to_first['minus_kl']['mean'] == pytest.approx(0.50 - 0.10)
    assert 'minus_kl' not in summary['blocks']['to_converged']['kldp']
    assert summary['controls']['converged']['mean'] == pytest.approx(0.0)
    small = next(p for p in summary['map'] if p['student'] == 'small')
    assert small['seeds'] == 2 and small['kldp_minus_ce'] == pytest.approx(0.1)
    assert small['student_ce_delta'] == pytest.approx(0.3) and small['teacher_stronger'] is True
    assert small['teacher_minus_student_top1'] == pytest.approx(1.0)  # 91.0 against 90.0 before transfer
    h = summary['hypotheses']
    assert h['converged_ce_near_zero'] is None  # two converged students' controls: too few to decide
    five = {'models': [{'name': f'big{i}', 'convergence': {'converged': True}} for i in range(5)]}
    controls = [rec('control', f'big{i}', [], 'ce', d) for i, d in enumerate([0.02, -0.02, 0.04, -0.03, 0.0])]
    assert report.summarize(controls, five)['hypotheses']['converged_ce_near_zero'] is True
    # two and one students: an interval that resamples students means nothing yet, whatever the means say
    assert h['kldp_beats_ce_within_converged'] is None and h['kldp_beats_ce_from_converged_teachers'] is None
    text = report.markdown(summary)
    assert 'within the converged zoo | kldp | 2 | 2 |' in text
    assert 'converged_ce_near_zero: undecided' in text
    assert 'KL+DP − KL-Dist, within the converged zoo (the same pairs and seeds): +0.66 [' in text


def test_the_variant_is_set_against_kldp_on_the_same_pairs_and_seeds():
    report = importlib.import_module('studies.converged.report')
    index = {'models': [{'name': n, 'convergence': {'converged': True}} for n in ('big1', 'big2')]}

    def rec(student, teacher, method, delta, seed=0):
        return {'kind': 'pair', 'student': student, 'teachers': [teacher], 'method': method,
                'flags': ['--seed', str(seed)], 'results': {'transfer_delta': delta, 'p_value': 0.5,
                                                            'top1_before': 90.0, 'teachers': []}}
    records = [rec('big1', 'big2', 'kldp', 0.10), rec('big2', 'big1', 'kldp', 0.20),
               rec('big1', 'big2', 'var', 0.16), rec('big2', 'big1', 'var', 0.10),
               rec('big1', 'big2', 'var', 0.90, seed=1)]  # no KL+DP at seed 1: left out, not paired with seed 0
    within = report.summarize(records, index)['blocks']['within']
    m = within['var']['minus_kldp']
    assert m['n'] == 2 and m['positive'] == 1 and m['mean'] == pytest.approx(((0.16 - 0.10) + (0.10 - 0.20)) / 2)
    assert 'minus_kldp' not in within['kldp']
    assert 'var − KL+DP, within the converged zoo (the same pairs and seeds): -0.02 [' in report.markdown(
        report.summarize(records, index))


def test_the_map_in_numbers_splits_at_the_plateau_and_the_teachers_strength():
    """Four cells (PLAN.md, Changes): a student at its plateau when its own CE control moved it by <= 0.10; the
    mean is over pairs, the interval resamples students, and a cell of fewer than 5 students gets no verdict."""
    report = importlib.import_module('studies.converged.report')

    def point(student, ce, minus, stronger=True):
        return {'student': student, 'student_ce_delta': ce, 'kldp_minus_ce': minus, 'teacher_stronger': stronger}
    points = [point(f's{i}', 0.30, 0.20 + 0.01 * i) for i in range(5)]  # short of fit, stronger: all above
    points += [point('c1', 0.10, -0.10), point('c1', 0.10, -0.30, stronger=False), point('c2', 0.02, 0.04)]
    cells = {(c['student_at_plateau'], c['teacher_stronger']): c for c in report.regions(points)}
    assert set(cells) == {(False, True), (True, True), (True, False)}  # 0.10 itself is at the plateau
    short = cells[(False, True)]
    assert (short['pairs'], short['students'], short['positive']) == (5, 5, 5)
    assert short['mean'] == pytest.approx(0.22) and short['ci'][0] > 0
    plateau = cells[(True, True)]
    assert (plateau['pairs'], plateau['students']) == (2, 2) and plateau['mean'] == pytest.approx(-0.03)
    text = report.regions_markdown(report.regions(points))
    assert '| short of fit | stronger | 5 | 5 | +0.22 [' in text and '(beats it)' in text
    assert '| at its plateau | weaker | 1 | 1 | -0.30 [-0.30, -0.30] (fewer than 5 students: no verdict)' in text


def test_a_failed_round_recorded_before_its_model_was_swapped_in_is_adopted_once(tmp_path, monkeypatch):
    """A builder killed between recording a failed round and swapping its result in: on resume the round's export
    becomes the model (weights equal, after_rounds set), and a second call changes nothing."""
    import torch
    monkeypatch.setattr(build, 'ROOT', tmp_path)
    monkeypatch.setattr(build, 'ZOO', tmp_path / 'zoo')
    monkeypatch.setattr(build, 'RECORDS', tmp_path / 'records')
    calls = []
    monkeypatch.setattr(build, 'model_numbers', lambda *a: calls.append(1) or {'test_top1': 90.0})
    entry = next(e for e in build.ENTRIES if e.name == 'mobilenet_c')
    torch.manual_seed(0)
    build.save_weights(build.create_model(entry).eval(), entry, tmp_path / 'zoo' / entry.name)
    torch.manual_seed(1)
    build.save_weights(build.create_model(entry).eval(), entry, tmp_path / 'export')
    record = {'name': entry.name, 'model': {'test_top1': 89.0, 'after_rounds': 0},
              'rounds': [{'round': 1, 'delta': 0.2, 'p_value': 0.01, 'passed': False, 'export': 'export'}]}
    build.adopt_failed_round(entry, record, None, None, None, None, log=lambda *_: None)
    kept = build.load_model(f'local-dir:{tmp_path / "zoo" / entry.name}').model.state_dict()
    export = build.load_model(f'local-dir:{tmp_path / "export"}').model.state_dict()
    assert all(torch.equal(kept[k], export[k]) for k in export)
    assert record['model'] == {'test_top1': 90.0, 'after_rounds': 1}
    assert build.read_record(entry.name)['model']['after_rounds'] == 1
    build.adopt_failed_round(entry, record, None, None, None, None, log=lambda *_: None)
    assert len(calls) == 1


def test_the_readme_section_says_how_far_the_zoo_and_the_study_are(tmp_path):
    report = importlib.import_module('studies.converged.report')
    zoo_report = importlib.import_module('studies.zoo.report')
    index = {'models': [{'name': 'mobilenet_c', 'test_top1': 90.67, 'convergence': {'converged': True}},
                        {'name': 'resnet_c', 'test_top1': 94.3, 'convergence': {'converged': False}}]}
    empty = report.summarize([], index)
    text = report.readme_section(empty, index)
    assert 'Zoo: 1 of 6 models converged: mobilenet_c (test top-1 90.67); still training or in their checks: ' \
           'resnet_c, convnext_c, vit_c, mobilevit_c, mixer_c.' in text
    assert 'No verdict yet' in text and '(in progress)' in text
    everything = {'models': [{'name': e, 'test_top1': 90.0, 'convergence': {'converged': True}}
                             for e in ('resnet_c', 'mobilenet_c', 'convnext_c', 'vit_c', 'mobilevit_c', 'mixer_c')]}
    assert '(in progress)' in report.readme_section(empty, everything, (35, 36))
    finished = report.readme_section(empty, everything, (36, 36))
    assert '(in progress)' not in finished and '36 of the plan\'s 36' in finished
    readme = tmp_path / 'README.md'
    readme.write_text(f'# x\n{report.BEGIN}old{report.END}\n## next\n')
    zoo_report.write_readme_section(readme, text, report.BEGIN, report.END)
    assert readme.read_text() == f'# x\n{report.BEGIN}\n{text}\n{report.END}\n## next\n'


def test_the_zoo_table_lists_every_check_round_up_to_the_passing_one():
    table = importlib.import_module('studies.converged.table')
    rounds = [{'round': k + 1, 'delta': d, 'p_value': p} for k, (d, p) in
              enumerate([(0.13, 0.17), (-0.24, 0.0063), (0.11, 0.18), (-0.06, 0.49)])]
    assert table.check_text(rounds, 4) == '4: +0.13, -0.24, +0.11, -0.06 (p = 0.49)'
    assert table.check_text(rounds[:2], None) == '2: +0.13, -0.24 (p = 0.0063)'
    assert table.check_text([], None) == '–'


def test_the_within_part_gives_every_student_a_teacher_before_any_student_a_second():
    from studies.converged.study import round_robin
    names = ['a', 'b', 'c', 'd']
    pairs = round_robin(names)
    assert sorted(pairs) == sorted((s, t) for s in names for t in names if s != t)
    assert pairs[:4] == [('a', 'b'), ('b', 'c'), ('c', 'd'), ('d', 'a')]
    assert all(len({s for s, _ in pairs[k * 4:(k + 1) * 4]}) == 4 for k in range(3))


def test_the_package_predictor_is_refitted_on_both_zoos_only_when_that_ranks_the_new_pairs_better(tmp_path):
    """First zoo: the gain follows ρpos; converged zoo: it follows the teacher's lead in top-1. The first zoo's fit
    cannot rank the new pairs; a fit that saw the other converged students can, so the package takes it."""
    import numpy as np
    from timm_gkt.evaluation import Predictor
    scans = importlib.import_module('studies.converged.scans')
    rng = np.random.default_rng(0)

    def row(zoo, student, follows):
        f = {'rho_pos': rng.uniform(1, 6), 'rho_neg': rng.uniform(1, 6), 'top1_diff': rng.uniform(-4, 4),
             'flip_entropy': rng.uniform(1.9, 2.1), 'student_top1': rng.uniform(88, 94)}
        return {'zoo': zoo, 'student': student, 'teacher': 't', **f, 'delta': 0.05 * f[follows]}
    rows = [row('first', f'a{i}', 'rho_pos') for i in range(5) for _ in range(6)]
    rows += [row('converged', f'c{i}', 'top1_diff') for i in range(5) for _ in range(5)]
    decision = scans.new_pairs(rows)
    assert (decision['pairs'], decision['students']) == (25, 5)
    assert decision['both_zoos_leave_one_student_out'] > decision['first_zoo_fit'] + 0.3
    assert decision['refit_the_package'] is True
    path = scans.apply_refit(rows, 1.0, decision, tmp_path / 'predictor.json')
    assert Predictor.load(path).fitted_on['pairs'] == 55
    assert scans.apply_refit(rows, 1.0, {**decision, 'refit_the_package': False}, tmp_path / 'kept.json') is None
    assert not (tmp_path / 'kept.json').exists()


def test_the_readme_states_the_refitted_predictor_and_what_the_package_keeps():
    report = importlib.import_module('studies.converged.report')
    fit = {'students': 8, 'pairs': 56, 'spearman': 0.26}
    validation = {'groups': {'first zoo': {'scan features': fit, '+ student CE Δ': {**fit, 'spearman': 0.3}},
                             'converged zoo': None, 'pooled': None,
                             'new pairs': {'pairs': 41, 'students': 14, 'first_zoo_fit': 0.02,
                                           'both_zoos_leave_one_student_out': -0.05, 'refit_the_package': False}}}
    text = report.predictor_markdown(validation)
    assert '| first zoo | 8 | 56 | +0.26 | +0.30 |' in text and 'converged zoo |' not in text
    assert "first zoo's fit ranks at Spearman +0.02" in text and "the package keeps the first zoo's fit" in text
    assert report.predictor_markdown(None) == ''


def test_hypothesis_three_compares_kldp_with_kl_dist_on_the_same_pairs():
    """Five first-zoo students, each above its control from a converged teacher: hypothesis 3 holds until KL-Dist,
    on the same pairs and seed, does better; a KL+DP seed without a KL-Dist beside it does not enter the comparison."""
    report = importlib.import_module('studies.converged.report')
    index = {'models': [{'name': 'big', 'convergence': {'converged': True}}]}

    def rec(kind, student, method, delta, seed=0):
        return {'kind': kind, 'student': student, 'teachers': ['big'] if kind == 'cross' else [], 'method': method,
                'flags': ['--seed', str(seed)],
                'results': {'transfer_delta': delta, 'p_value': 0.5, 'top1_before': 90.0,
                            'teachers': [{'top1': 91.0, 'pos_flips_delta': -0.1, 'neg_flips_delta': 0.0}]}}
    students = [f'small{i}' for i in range(5)]
    records = [r for s in students for r in (rec('control', s, 'ce', 0.10), rec('control', s, 'ce', 0.10, seed=1),
                                             rec('cross', s, 'kldp', 0.30), rec('cross', s, 'kldp', 0.90, seed=1))]
    assert report.summarize(records, index)['hypotheses']['kldp_beats_ce_from_converged_teachers'] is True
    with_kl = records + [rec('cross', s, 'kl', 0.40) for s in students]  # above KL+DP's seed 0, below its mean
    summary = report.summarize(with_kl, index)
    assert summary['blocks']['to_first']['kldp']['minus_kl']['mean'] == pytest.approx(-0.10)
    assert summary['hypotheses']['kldp_beats_ce_from_converged_teachers'] is False
