"""The zoo study's report, on hand-made run records with known rates and intervals."""
import argparse
import importlib
import json

import pytest


@pytest.fixture()
def report_module():
    return importlib.import_module('studies.zoo.report')


def _results(delta, p, gains, losses, teacher_top1=90.0, before=88.0, routed=None):
    return {'transfer_delta': delta, 'p_value': p, 'gains': gains, 'losses': losses, 'top1_before': before,
            'top1_after': before + delta, 'eval_samples': 10000,
            'teachers': [{'name': 't', 'top1': teacher_top1, 'rho_pos': 5.0, 'rho_neg': 3.0,
                          'pos_flips_delta': -0.2, 'neg_flips_delta': 0.0, 'routed_share': routed}]}


def _write(tmp_path, name, kind, student, teachers, method, results):
    rec = {'run': name, 'kind': kind, 'student': student, 'teachers': teachers, 'method': method,
           'results': results}
    (tmp_path / f'{name}.json').write_text(json.dumps(rec))


@pytest.fixture()
def four_runs(tmp_path):
    # two KL+DP pairs (one significant gain, one non-significant loss) and each student's CE control
    _write(tmp_path, 'a__b__kldp', 'pair', 'a', ['b'], 'kldp', _results(0.30, 0.01, 50, 20, routed=80.0))
    _write(tmp_path, 'b__a__kldp', 'pair', 'b', ['a'], 'kldp',
           _results(-0.10, 0.5, 10, 20, teacher_top1=86.0, before=88.0, routed=10.0))
    _write(tmp_path, 'a__ce', 'control', 'a', [], 'ce', _results(0.05, 0.8, 5, 0))
    _write(tmp_path, 'b__ce', 'control', 'b', [], 'ce', _results(-0.05, 0.8, 0, 5))
    return tmp_path


def test_report_numbers_on_four_runs(report_module, four_runs):
    s = report_module.summarize(report_module.load_records(four_runs))
    assert s['pairs'] == 2
    k = s['methods']['kldp']
    assert k['success_rate'] == 50.0
    assert k['success_ci'] == [pytest.approx(9.4531, abs=1e-3), pytest.approx(90.5469, abs=1e-3)]
    assert k['mean_delta'] == pytest.approx(0.10)
    # clusters are students: resampled means can only be -0.10, 0.10 or 0.30
    assert k['mean_delta_ci'] == [pytest.approx(-0.10), pytest.approx(0.30)]
    assert k['significant_gains'] == 50.0 and k['significant_losses'] == 0.0
    assert (k['significant_gain_pairs'], k['significant_loss_pairs']) == (1, 0)
    assert s['methods']['ce']['success_rate'] == 50.0
    # KL+DP minus the control, paired by student: 0.30 - 0.05 and -0.10 + 0.05
    d = s['kldp_minus_ce']
    assert d['mean'] == pytest.approx(0.10) and d['ci'] == [pytest.approx(-0.05), pytest.approx(0.25)]
    assert d['positive'] == 1
    assert s['per_student']['a']['kldp'] == pytest.approx(0.30) and s['per_student']['a']['ce'] == 0.05
    assert s['routing']['kldp']['routed'] == pytest.approx(45.0)
    strength = s['by_teacher_strength']['kldp']
    assert strength['stronger_teacher'] == {'n': 1, 'mean_delta': pytest.approx(0.30)}
    assert strength['weaker_teacher'] == {'n': 1, 'mean_delta': pytest.approx(-0.10)}


def test_report_markdown_and_readme_section(report_module, four_runs, tmp_path):
    s = report_module.summarize(report_module.load_records(four_runs))
    text = report_module.report_markdown(s, 'studies/zoo/plots')
    assert '| KL+DP | 2 | 50% [9, 91] | +0.10 (no interval: 2 students so far) | 50% | 0% |' in text
    assert '+0.10 points [-0.05, +0.25]' in text
    readme = tmp_path / 'README.md'
    readme.write_text(f'intro\n{report_module.BEGIN}\nold\n{report_module.END}\noutro\n')
    report_module.write_readme_section(readme, text)
    content = readme.read_text()
    assert content.startswith('intro\n') and content.endswith('\noutro\n') and 'old' not in content
    assert text in content


def test_every_study_command_is_a_valid_training_command_with_the_teacher_cache(tmp_path):
    """The study passes --teacher-cache to every run; the training CLI must accept it with each run's flags."""
    import argparse
    study = importlib.import_module('studies.zoo.study')
    from timm_gkt.cli.config import check_flags, parse_args
    args = argparse.Namespace(data_dir='data', work=str(tmp_path), teacher_cache=str(tmp_path / 'cache'),
                              data_in_memory=False)
    for run in study.select_runs():
        config = parse_args(study.command(run, args)[3:])
        check_flags(config)
        assert config.teacher_cache == str(tmp_path / 'cache') and config.mixup == 0 and config.cutmix == 0


def test_main_runs_every_pairs_kldp_and_kl_before_the_other_methods(monkeypatch):
    """A study cut short still has KL+DP and KL-Dist on all 56 pairs and every CE control: the first wave."""
    study = importlib.import_module('studies.zoo.study')
    monkeypatch.setattr(study, 'chosen_lr', lambda: '1e-3')
    runs = study.main_runs()
    assert len(runs) == 8 + 56 * 5 and len({r.name for r in runs}) == len(runs)
    first = runs[:8 + 56 * 2]
    assert [r.method for r in first[:8]] == ['ce'] * 8
    assert {r.method for r in first[8:]} == {'kldp', 'kl'} and len({(r.student, r.teachers) for r in first[8:]}) == 56
    assert {r.method for r in runs[len(first):]} == {'xekl', 'xekl-mcl', 'kldp-unsup'}
    assert [r.name for r in first[8:12]] == ['resnet_a__convnext_a__kldp', 'resnet_a__convnext_a__kl',
                                           'resnet_a__effnet_a__kldp', 'resnet_a__effnet_a__kl']
    assert all(r.flags[-2:] == ['--lr', '1e-3'] for r in runs)


def test_the_knowledge_a_transfer_took_is_measured_against_the_control_on_the_same_pair(report_module, four_runs):
    """Both KL+DP runs lower ρpos by 0.2 (the fixture); the CE controls, scanned against the same teachers,
    lower it by 0.1 (a <- b) and 0.0 (b <- a), so the teacher term took 0.1 and 0.2 points more."""
    start = {'a': {'teachers': {'b': {'rho_pos': 5.0, 'rho_neg': 3.0}}},
             'b': {'teachers': {'a': {'rho_pos': 4.0, 'rho_neg': 2.0}}}}
    ce = {'a': {'ce_top1': 88.05, 'teachers': {'b': {'rho_pos': 4.9, 'rho_neg': 3.1}}},
          'b': {'ce_top1': 87.95, 'teachers': {'a': {'rho_pos': 4.0, 'rho_neg': 1.8}}}}
    s = report_module.summarize(report_module.load_records(four_runs), start, ce)
    assert s['methods']['ce']['mean_pos_flips_delta'] == pytest.approx(-0.05)
    assert s['methods']['ce']['mean_neg_flips_delta'] == pytest.approx(-0.05)
    k = s['knowledge_minus_ce']['kldp']
    assert (k['n'], k['students']) == (2, 2)
    assert k['rho_pos']['mean'] == pytest.approx(-0.15) and k['rho_pos']['negative'] == 2
    assert k['rho_pos']['ci'] == [pytest.approx(-0.2), pytest.approx(-0.1)]  # resampled means: -0.2, -0.15, -0.1
    assert k['rho_neg']['mean'] == pytest.approx(0.05)  # a: 0 - 0.1, b: 0 - (-0.2)
    assert k['rho_neg']['ci'] == [pytest.approx(-0.1), pytest.approx(0.2)]
    text = report_module.report_markdown(s, 'plots')
    assert '| CE control | 2 students |' in text and '| -0.05 | -0.05 |' in text
    # two students cannot carry a clustered interval: the table says so instead of printing a narrow one
    assert '| KL+DP | 2 | 50% [9, 91] | +0.10 (no interval: 2 students so far) |' in text
    assert 'beyond more training** (its Δρpos minus the CE control\'s on the same student and teacher, 2 pairs' in text
    assert '-0.15 points [-0.20, -0.10], below 0 in 2 of 2 pairs; Δρneg' in text
    # a <- b: teacher b (90.0) is stronger than a (88.0); b <- a: teacher a (86.0) is weaker than b (88.0)
    sides = k['by_teacher_strength']
    assert sides['stronger_teacher']['rho_pos']['mean'] == pytest.approx(-0.1)
    assert sides['weaker_teacher']['rho_neg']['mean'] == pytest.approx(0.2)
    assert 'From weaker teachers (1 pairs): Δρpos -0.20 (no interval: 1 students), Δρneg +0.20' in text
    # without the scans the control's knowledge columns stay unknown
    plain = report_module.summarize(report_module.load_records(four_runs))
    assert 'knowledge_minus_ce' not in plain


def test_the_report_sums_what_the_runs_cost(report_module, four_runs):
    for name, seconds in (('a__b__kldp', 5400), ('a__ce', 1800)):
        path = four_runs / f'{name}.json'
        rec = json.loads(path.read_text())
        path.write_text(json.dumps({**rec, 'wall_seconds': seconds, 'threads': 1}))
    s = report_module.summarize(report_module.load_records(four_runs))
    assert s['compute'] == {'runs': 2, 'hours': 2.0, 'threads': [1]}
    assert 'Compute: the 2 runs took 2.0 hours of wall time in all, each one process at 1 thread(s)' in \
        report_module.report_markdown(s, 'plots')


def test_sequential_runs_are_set_against_the_best_single_teacher_and_the_control(report_module, four_runs):
    rec = {'run': 'a__seq2__kldp', 'kind': 'sequential', 'student': 'a', 'teachers': ['b', 'c'], 'method': 'kldp',
           'results': _results(0.45, 0.002, 60, 15)}
    (four_runs / 'a__seq2__kldp.json').write_text(json.dumps(rec))
    _write(four_runs, 'a__c__kldp', 'pair', 'a', ['c'], 'kldp', _results(0.10, 0.4, 30, 20))
    s = report_module.summarize(report_module.load_records(four_runs))
    row = s['sequential']['rows'][0]
    assert (row['best_single'], row['ce']) == (0.30, 0.05)  # a <- b (+0.30) beats a <- c (+0.10)
    x = s['sequential']['summary']['seq2']
    assert x['mean_minus_best_single'] == pytest.approx(0.15) and x['beats_best_single'] == 1
    assert x['minus_ce'] == pytest.approx(0.40) and x['minus_ce_n'] == 1
    text = report_module.sequential_table(s)
    assert '| a | b, c | +0.45 (0.002) | +0.30 | +0.05 | – |' in text
    assert ('2 teachers in sequence, 1 students: mean Δ +0.45 against +0.30 for the best single teacher of those '
            '(picked on the test split, which favours it), sequential minus best single +0.15 (no interval: 1 '
            'students so far), ahead in 1 of 1; minus the CE control +0.40 (no interval yet), with 2 budgets') in text


@pytest.fixture()
def chained_study(monkeypatch, tmp_path):
    """studies/zoo/study.py for a one-model zoo whose training child only writes an export and a results.json."""
    study = importlib.import_module('studies.zoo.study')
    monkeypatch.setattr(study, 'chosen_lr', lambda: '1e-3')
    monkeypatch.setattr(study, 'zoo_names', lambda: ['a'])
    monkeypatch.setattr(study, 'complementary_teachers', lambda s, k: ['t1', 't2', 't3'][:k])
    monkeypatch.setattr(study, 'RUNS_DIR', tmp_path / 'runs')
    trained = []

    def fake_train(argv, log):
        name = argv[argv.index('--experiment') + 1]
        trained.append((name, argv[argv.index('--model') + 1]))
        out = tmp_path / 'work' / name
        (out / 'export').mkdir(parents=True)
        (out / 'export' / 'model.safetensors').write_bytes(b'')
        (out / 'results.json').write_text(json.dumps({'transfer_delta': 0.1, 'p_value': 0.5}))
        return 0
    monkeypatch.setattr(study, '_train_in_child', fake_train)
    args = argparse.Namespace(work=str(tmp_path / 'work'), data_dir='data', teacher_cache='', data_in_memory=False,
                              threads=1)
    return study, args, trained


def test_the_ce_control_is_continued_for_as_many_budgets_as_a_sequential_run_has(chained_study, tmp_path):
    study, args, trained = chained_study
    runs = study.sequential_runs()
    assert [r.name for r in runs] == ['a__seq2__kldp', 'a__seq3__kldp', 'a__ce-x2', 'a__ce-x3']
    study.execute(runs[3], args)  # the third budget first: it needs the second, which needs the CE control
    assert [name for name, _ in trained] == ['a__ce', 'a__ce-x2', 'a__ce-x3']
    assert trained[0][1] == f'local-dir:{importlib.import_module("studies.zoo.recipe").ZOO / "a"}'
    assert trained[1][1] == f'local-dir:{tmp_path / "work" / "a__ce" / "export"}'
    assert trained[2][1] == f'local-dir:{tmp_path / "work" / "a__ce-x2" / "export"}'
    rec = json.loads((tmp_path / 'runs' / 'a__ce-x3.json').read_text())
    assert (rec['kind'], rec['after'], rec['method']) == ('sequential-control', 'a__ce-x2', 'ce')
    study.execute(runs[2], args)  # finished: skipped
    assert len(trained) == 3


def test_a_chained_run_whose_start_is_on_another_machine_is_skipped(chained_study, tmp_path, capsys):
    study, args, trained = chained_study
    (tmp_path / 'runs').mkdir()
    (tmp_path / 'runs' / 'a__ce.json').write_text('{}')  # the control's record is committed, its export is not here
    assert study.execute(study.sequential_runs()[2], args) is None
    assert trained == [] and not (tmp_path / 'runs' / 'a__ce-x2.json').exists()
    assert 'a__ce-x2 starts from the export of a__ce, which is not in' in capsys.readouterr().out


def test_a_sequential_run_is_set_against_the_ce_control_at_as_many_budgets(report_module, four_runs):
    rec = {'run': 'a__seq2__kldp', 'kind': 'sequential', 'student': 'a', 'teachers': ['b', 'c'], 'method': 'kldp',
           'results': _results(0.45, 0.002, 60, 15)}
    (four_runs / 'a__seq2__kldp.json').write_text(json.dumps(rec))
    # the control (88.00 -> 88.05) continued for a second budget: 88.05 -> 88.25, +0.25 from the zoo model
    _write(four_runs, 'a__ce-x2', 'sequential-control', 'a', [], 'ce', _results(0.20, 0.1, 30, 10, before=88.05))
    _write(four_runs, 'a__c__kldp', 'pair', 'a', ['c'], 'kldp', _results(0.10, 0.4, 30, 20))
    s = report_module.summarize(report_module.load_records(four_runs))
    row = s['sequential']['rows'][0]
    assert row['ce'] == 0.05 and row['ce_same_budget'] == pytest.approx(0.25)
    x = s['sequential']['summary']['seq2']
    assert x['minus_ce_same_budget'] == pytest.approx(0.20) and x['above_ce_same_budget'] == 1
    text = report_module.sequential_table(s)
    assert '| a | b, c | +0.45 (0.002) | +0.30 | +0.05 | +0.25 |' in text
    assert 'minus the CE control continued to 2 budgets +0.20 (no interval yet), above it in 1 of 1.' in text
    counts = report_module.study_progress(report_module.load_records(four_runs))
    assert counts['CE controls at 2 and 3 budgets'][0] == 1


def test_the_verdict_says_in_words_what_the_numbers_say(report_module, four_runs):
    s = report_module.summarize(report_module.load_records(four_runs))
    words = ' '.join(report_module.verdict(s))
    # 1 of 2 pairs gained, no significant loss, but a Wilson interval of [9, 91] cannot show >= 90 %
    assert 'KL+DP raised top-1 in 1 of 2 pairs (significantly, McNemar p < 0.05, in 1), a success rate of 50% [9, 91]' in words
    assert 'with a significant loss (McNemar p < 0.05) in 0: the target (≥ 90%, no significant loss) is not met' in words
    assert 'KL+DP is +0.10 points [-0.05, +0.25], too few students (2) for the interval to decide' in words
    text = report_module.report_markdown(s, 'plots', {'pair runs': (2, 280), 'CE controls': (2, 8)})
    assert text.startswith('Finished so far: 2 of 280 pair runs, 2 of 8 CE controls.\n\n**Verdict, computed')
    done = report_module.report_markdown(s, 'plots', {'pair runs': (280, 280), 'CE controls': (8, 8)})
    assert done.startswith('The study is complete: all 280 pair runs, all 8 CE controls.\n\n**Verdict, computed')


def test_the_verdict_calls_kldp_better_than_more_training_only_when_the_interval_excludes_zero(report_module):
    base = {'methods': {}, 'kldp_minus_ce': {'n': 56, 'students': 8, 'mean': 0.12, 'ci': [0.01, 0.25],
                                             'positive': 40}}
    assert 'above the CE control' in ' '.join(report_module.verdict(base))
    base['kldp_minus_ce']['ci'] = [-0.01, 0.25]
    assert 'not distinguishable from the CE control' in ' '.join(report_module.verdict(base))
    base['kldp_minus_ce'].update(mean=-0.12, ci=[-0.25, -0.01])
    assert 'below the CE control: less than more training' in ' '.join(report_module.verdict(base))
    base['kldp_minus_ce']['students'] = 4  # a cluster bootstrap over 4 students is not trusted to decide
    assert 'too few students (4)' in ' '.join(report_module.verdict(base))


def test_a_study_call_ends_with_what_it_finished_and_what_is_missing(chained_study, tmp_path, capsys):
    study, args, trained = chained_study
    run_args = argparse.Namespace(**vars(args), part='sequential', jobs=1)
    (tmp_path / 'runs').mkdir()
    (tmp_path / 'runs' / 'a__ce.json').write_text('{}')  # its export is not here: the chained controls are skipped
    study.run_part(run_args)
    out = capsys.readouterr().out.splitlines()
    assert out[-2].startswith('[study] sequential: 2 of 4 runs finished in 0.0 h; 2 of 4 done')
    assert out[-1] == ('[study] still missing (failed, skipped or stopped; the lines above say which): a__ce-x2, '
                       'a__ce-x3. Run the same command again to go on.')
    study.run_part(run_args)  # nothing left that can run here: the same two are still missing
    assert capsys.readouterr().out.splitlines()[-2].startswith('[study] sequential: 0 of 2 runs finished')
    for name in ('a__ce-x2', 'a__ce-x3'):
        (tmp_path / 'runs' / f'{name}.json').write_text('{}')
    study.run_part(run_args)
    assert capsys.readouterr().out.splitlines()[-1].startswith('[study] part complete: `python -m studies.zoo.study --report`')


def test_committed_records_name_models_by_their_place_in_the_repository():
    """No record of the studies holds this machine's paths: models are local-dir:zoo/NAME or a repository path."""
    from studies.zoo.recipe import ROOT, repo_relative
    record = {'results': {'student': f'local-dir:{ROOT.as_posix()}/output/study/vit_a__ce/export',
                          'teachers': [{'spec': f'local-dir:{ROOT.as_posix()}/zoo/resnet_a'}]}}
    assert repo_relative(record) == {'results': {'student': 'local-dir:output/study/vit_a__ce/export',
                                                 'teachers': [{'spec': 'local-dir:zoo/resnet_a'}]}}
    leaks = [str(p.relative_to(ROOT)) for p in (ROOT / 'studies').rglob('*.json')
             if any(m in p.read_text() for m in ('local-dir:/', '"/root/', '"/home/', '"/work/', '"/tmp/'))]
    assert leaks == []
