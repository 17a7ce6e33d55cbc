"""``--teachers auto`` (timm_gkt/evaluation/selection.py, timm_gkt/cli/selection.py): the choice on a hand-made scan,
by predicted gain and by ρpos; predicted against realised Δ per stage; end to end on the micro-zoo, the dry run,
and the flags that cannot work."""
from __future__ import annotations

import json

import pytest

from timm_gkt.evaluation.predictor import FEATURES, Predictor
from timm_gkt.evaluation.selection import BY_PREDICTION, BY_RHO_POS, rank_teachers


def scanned(name: str, top1: float, rho_pos: float, rho_neg: float) -> dict:
    return {'name': name, 'spec': f'local-dir:pool/{name}', 'teacher_top1': top1, 'student_top1': 80.0,
            'rho_pos': rho_pos, 'rho_neg': rho_neg, 'flip_entropy': 2.0, 'per_class_pos_flips': [],
            'top_classes': [{'class': 'Shirt', 'pos_flip_rate': 12.0}]}


def hand_made_scan() -> dict:
    """Four candidates for a student at 80 %: ρpos 8, 5, 0 and 10."""
    return {'student': 'local-dir:s', 'student_name': 's', 'eval_samples': 2000, 'student_top1': 80.0,
            'teachers': [scanned('a', 85.0, 8.0, 3.0), scanned('b', 78.0, 5.0, 7.0), scanned('c', 70.0, 0.0, 10.0),
                         scanned('d', 90.0, 10.0, 2.0)]}


# predicted Δ = -0.5 + 0.1 ρpos - 0.1 ρneg: a +0.0, b -0.7, c -1.5, d +0.3
HAND_PREDICTOR = Predictor(features=FEATURES, mean=(0.0,) * 5, scale=(1.0,) * 5, coef=(0.1, -0.1, 0.0, 0.0, 0.0),
                           intercept=-0.5, alpha=1.0, interval_halfwidth=0.2, fitted_on={'pairs': 9})


def test_without_a_predictor_the_choice_ranks_by_rho_pos_and_says_why_for_each_candidate():
    choice = rank_teachers(hand_made_scan(), None, max_teachers=2)
    assert choice['ranked_by'] == BY_RHO_POS and choice['chosen'] == ['local-dir:pool/d', 'local-dir:pool/a']
    assert [(c['name'], c['rank'], c['chosen'], c['reason']) for c in choice['candidates']] == [
        ('d', 1, True, 'chosen: rank 1 of 4 by ρpos 10.00%'),
        ('a', 2, True, 'chosen: rank 2 of 4 by ρpos 8.00%'),
        ('b', 3, False, 'left out: rank 3 of 4, after the --max-teachers 2 chosen'),
        ('c', 4, False, 'left out: ρpos 0.00% is not above 0'),
    ]
    assert all(c['predicted_delta'] is None for c in choice['candidates']) and not choice['none_above_zero']
    assert (choice['student_top1'], choice['selection_images']) == (80.0, 2000)


def test_with_a_predictor_the_choice_ranks_by_predicted_gain_and_keeps_only_predicted_gains():
    choice = rank_teachers(hand_made_scan(), HAND_PREDICTOR, max_teachers=2)
    assert choice['ranked_by'] == BY_PREDICTION and choice['chosen'] == ['local-dir:pool/d']
    rows = {c['name']: c for c in choice['candidates']}
    assert [c['name'] for c in choice['candidates']] == ['d', 'a', 'b', 'c']
    assert rows['d']['predicted_delta'] == pytest.approx(0.3) and rows['d']['predicted_interval'] == \
        pytest.approx([0.1, 0.5])
    assert rows['d']['reason'] == 'chosen: rank 1 of 4 by predicted gain +0.30 points'
    # a predicted +0.00 is no predicted gain, even with room left under --max-teachers
    assert rows['a']['reason'] == 'left out: predicted gain +0.00 points is not above 0'
    assert rows['b']['reason'] == 'left out: predicted gain -0.70 points is not above 0'
    assert choice['predictor']['fitted_on'] == {'pairs': 9}


def test_when_no_candidate_is_expected_to_help_the_best_one_is_still_run_and_said_so():
    scan = hand_made_scan()
    scan['teachers'] = [scanned('b', 78.0, 5.0, 7.0), scanned('c', 70.0, 0.0, 10.0)]
    choice = rank_teachers(scan, HAND_PREDICTOR, max_teachers=3)
    assert choice['chosen'] == ['local-dir:pool/b'] and choice['none_above_zero']
    assert choice['candidates'][0]['reason'] == ('chosen although its predicted gain -0.70 points is not above 0: no '
                                                 'candidate is, and the run needs a teacher')


def test_ties_keep_the_pools_order():
    scan = hand_made_scan()
    scan['teachers'] = [scanned('x', 85.0, 4.0, 3.0), scanned('y', 86.0, 4.0, 3.0), scanned('z', 84.0, 4.0, 3.0)]
    assert rank_teachers(scan, None, max_teachers=2)['chosen'] == ['local-dir:pool/x', 'local-dir:pool/y']


def test_stages_record_the_predicted_and_the_realised_delta():
    from timm_gkt.cli.selection import record_selection, stage_lines
    choice = rank_teachers(hand_made_scan(), HAND_PREDICTOR, max_teachers=2)
    choice['order'] = ['local-dir:pool/d', 'local-dir:pool/a']  # as if --max-teachers 2 had taken both
    results = {'top1_before': 80.0, 'epochs': [{'stage': 0, 'top1': 80.5}, {'stage': 0, 'top1': 80.25},
                                               {'stage': 1, 'top1': 80.1}, {'stage': 1, 'top1': 79.75}]}
    record_selection(choice, results)
    assert results['teacher_selection']['stages'] == [
        {'stage': 0, 'teacher': 'd', 'spec': 'local-dir:pool/d', 'predicted_delta': pytest.approx(0.3),
         'realised_delta': 0.25},
        {'stage': 1, 'teacher': 'a', 'spec': 'local-dir:pool/a', 'predicted_delta': pytest.approx(0.0),
         'realised_delta': -0.5},
    ]
    assert stage_lines(results) == ['stage 1 (d): predicted Δ +0.30, realised +0.25 points',
                                    'stage 2 (a): predicted Δ +0.00, realised -0.50 points']


def test_a_pushed_results_json_names_the_pool_by_folder_only():
    from timm_gkt.report.public import public_results
    choice = rank_teachers(hand_made_scan(), None, max_teachers=2)
    choice.update(pool=['local-dir:/home/me/pool/a', 'local-dir:/home/me/pool/d'], order=['local-dir:/home/me/pool/d'])
    out = public_results({'teacher_selection': {**choice, 'stages': [{'spec': 'local-dir:/home/me/pool/d'}]}})
    assert '/home/me' not in json.dumps(out)
    assert out['teacher_selection']['pool'] == ['local-dir:a', 'local-dir:d']


# ----------------------------------------------------------------------------- end to end on the micro-zoo

def hand_scan(micro_zoo, data_dir, pool: list[str], n: int) -> dict:
    """The scan of the selection split by hand: the training images of --train-subset 384 (seed 3), of them a seeded
    class-stratified n, every model through its own eval transform."""
    import torch

    from timm_gkt.data.sources import create_image_dataset
    from timm_gkt.data.subsets import dataset_targets, stratified_subset_indices
    from timm_gkt.evaluation.metrics import complementary_knowledge
    from timm_gkt.evaluation.predictions import predict
    from timm_gkt.models.load import load_model
    full = create_image_dataset('torch/fashion_mnist', data_dir, 'train')
    targets = dataset_targets(full)
    transfer = stratified_subset_indices(targets, 384, 3)
    chosen = transfer[stratified_subset_indices(targets[transfer], n, 3)]
    ds = torch.utils.data.Subset(full, chosen.tolist())
    models = [load_model(f'local-dir:{micro_zoo / name}') for name in ['q_mlp', *pool]]
    preds, target = predict([m.model for m in models], [m.preprocessing for m in models], ds, progress=False)
    return {name: complementary_knowledge(p, preds[0], target, 10) for name, p in zip(pool, preds[1:])}


def test_auto_teachers_scan_the_selection_split_and_run_the_choice_in_order(tmp_path, micro_zoo, data_dir, capsys):
    from test_train import QUICK, run_train, spec

    from timm_gkt import train
    from timm_gkt.evaluation.predictor import pair_features
    pool = [spec(micro_zoo, 'q_cnn'), spec(micro_zoo, 'q_vit')]
    flags = ['--model', spec(micro_zoo, 'q_mlp'), '--teachers', 'auto', '--teacher-pool', ','.join(pool),
             '--max-teachers', '2', '--selection-subset', '200', '--no-aug']
    code, r = run_train(tmp_path, micro_zoo, data_dir, *flags)
    out = capsys.readouterr().out
    assert code == 0
    selection = r['teacher_selection']
    assert selection['pool'] == pool and selection['ranked_by'] == 'predicted gain'
    # carved from the transfer split, never the evaluation split
    assert (selection['selection']['carved_from'], selection['selection']['size'], selection['selection']['of']) == \
        ('train', 200, 384)
    assert r['data']['eval']['split'] == 'test'
    # the scan's numbers are the hand scan's on the same 200 images, and the predictions the predictor's
    by_hand, predictor = hand_scan(micro_zoo, data_dir, ['q_cnn', 'q_vit'], 200), Predictor.load()
    for c in selection['candidates']:
        expected = by_hand[c['name']]
        assert (c['top1'], c['rho_pos'], c['rho_neg']) == \
            (pytest.approx(expected['teacher_top1']), pytest.approx(expected['rho_pos']),
             pytest.approx(expected['rho_neg']))
        assert c['predicted_delta'] == pytest.approx(round(predictor.predict(
            pair_features(selection['student_top1'], expected))[0], 3))
    chosen = [c for c in selection['candidates'] if c['chosen']]
    assert [c['spec'] for c in chosen] == selection['chosen']
    assert all(c['predicted_delta'] > 0 for c in chosen) or selection['none_above_zero']
    # the run is the choice, in ascending top-1 on the selection split
    order = sorted(chosen, key=lambda c: c['top1'])
    assert selection['order'] == [c['spec'] for c in order] and r['stage_order'] == [c['name'] for c in order]
    assert [t['spec'] for t in r['teachers']] == selection['order']
    # the choice was printed before the first stage, the predicted and realised Δ after the table
    assert out.index('teachers auto: 2 candidates scanned on a seeded class-stratified sample of 200 of the 384 '
                     'images of train (the selection split') < out.index('teachers chosen: ') < out.index('stage 1 [')
    last = {row['stage']: row['top1'] for row in r['epochs']}
    assert [s['realised_delta'] for s in selection['stages']] == \
        [round(last[0] - r['top1_before'], 2)] + ([round(last[1] - last[0], 2)] if len(order) == 2 else [])
    assert f"stage 1 ({order[0]['name']}): predicted Δ {order[0]['predicted_delta']:+.2f}" in out
    # args.yaml replays the automatic choice, not its outcome
    argv = ['--data-dir', str(data_dir), '--output', str(tmp_path), '--experiment', 'run', *QUICK, *flags]
    assert train.parse_args(['-c', str(tmp_path / 'run' / 'args.yaml')]) == train.parse_args(argv)


def test_dry_run_prints_the_choice_without_training_and_says_when_it_ranks_by_rho_pos(tmp_path, micro_zoo, data_dir,
                                                                                      capsys, monkeypatch):
    from test_train import run_train, spec
    monkeypatch.setattr(Predictor, 'load', classmethod(lambda cls, path=None: None))  # an installation without one
    pool = ','.join(spec(micro_zoo, m) for m in ('q_cnn', 'q_vit'))
    code, r = run_train(tmp_path, micro_zoo, data_dir, '--model', spec(micro_zoo, 'q_mlp'), '--teachers', 'auto',
                        '--teacher-pool', pool, '--max-teachers', '1', '--selection-subset', '200', '--dry-run')
    out = capsys.readouterr().out
    assert code == 0 and r is None and not (tmp_path / 'run').exists()
    assert 'ranked by ρpos (no gain predictor is fitted in this installation)' in out
    by_hand = hand_scan(micro_zoo, data_dir, ['q_cnn', 'q_vit'], 200)
    best = max(by_hand, key=lambda name: by_hand[name]['rho_pos'])
    assert f'teachers chosen: {best} (sequential' in out
    assert f"chosen: rank 1 of 2 by ρpos {by_hand[best]['rho_pos']:.2f}%" in out
    assert 'left out: rank 2 of 2, after the --max-teachers 1 chosen' in out
    assert out.index('teachers chosen:') < out.index('plan: ') and 'dry run: all checks passed' in out
    assert f'  teacher {best}: input' in out  # the plan is the chosen run
    assert '  stages: 1 (single; order: chosen above by --teachers auto)' in out


@pytest.mark.parametrize('extra, words', [
    (['--teachers', 'auto'], '--teachers auto chooses from --teacher-pool, which is empty'),
    (['--teachers', 'POOL0', '--teacher-pool', 'POOL1'], '--teacher-pool lists candidates for --teachers auto, but '
                                                         'the teachers were named'),
    (['--teachers', 'auto,POOL0', '--teacher-pool', 'POOL1'], '--teachers auto,'),
    (['--teachers', 'auto', '--teacher-pool', 'POOL0', '--multi-teacher', 'parallel'],
     '--teachers auto chooses the teachers and their order for a sequential run, not --multi-teacher parallel'),
    (['--teachers', 'auto', '--teacher-pool', 'POOL0', '--transfer-method', 'ce'],
     '--teachers auto chooses teachers, and --transfer-method ce uses none'),
    (['--teachers', 'auto', '--teacher-pool', 'POOL0,STUDENT'], '--teacher-pool holds the student'),
    (['--teachers', 'auto', '--teacher-pool', 'POOL0', '--max-teachers', '0'],
     '--max-teachers 0 leaves no teacher to choose; give 1 or more'),
    (['--teachers', 'auto', '--teacher-pool', 'POOL0', '--selection-subset', '5'],
     '--selection-subset 5: a subset of 5 images cannot hold all 10 classes; ask for at least 10 images'),
])
def test_auto_teacher_flags_that_cannot_work_are_refused_in_one_sentence(tmp_path, micro_zoo, data_dir, capsys,
                                                                        extra, words):
    from test_train import run_train, spec
    names = {'POOL0': spec(micro_zoo, 'q_cnn'), 'POOL1': spec(micro_zoo, 'q_vit'), 'STUDENT': spec(micro_zoo, 'q_mlp')}
    for key, value in names.items():
        extra = [e.replace(key, value) for e in extra]
    code, r = run_train(tmp_path, micro_zoo, data_dir, '--model', names['STUDENT'], *extra)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and r is None and not (tmp_path / 'run').exists()
    assert len(err) == 1 and err[0].startswith('error: ')
    for part in words.split(' ... '):
        assert part in err[0]
