"""Scan (timm_gkt/scan.py): table formatting on hand-made results, and scan / pairwise_matrix / main end to end.

The end-to-end tests export tiny untrained ViTs (the shared ``export_tiny`` fixture) and
check the scan's numbers against predictions made here, image by image, through each
model's own eval transform on a seeded class-stratified sample of 64 Fashion-MNIST test images. One teacher is
exported with a larger input size and its classes in reverse order, so a scan that fed
it the student's transform or forgot its label permutation reports other numbers.
"""
import json
import math

import pytest
import torch

from timm_gkt.data.sources import FASHION_MNIST_LABELS
from timm_gkt.models.load import load_model
from timm_gkt.evaluation.scans import format_matrix, format_scan, pairwise_matrix, scan
from timm_gkt.cli.scan import main
from datasets_fixture import fashion_folder, fashion_hfds, fashion_hfds_labels  # noqa: F401

EVAL_SUBSET = 64
DATASET = 'torch/fashion_mnist'
LABELS = list(FASHION_MNIST_LABELS)
REVERSED = LABELS[::-1]

# --- format_matrix / format_scan on hand-made results -----------------------------------------------

MATRIX = {
    'names': ['vit_a', 'convnext_b', 'mixer_c'],
    'top1': [81.5, 90.25, 77.0],
    # rho_pos[teacher][student]; asymmetric so a transposed table shows
    'rho_pos': [[0.0, 12.34, 20.5], [3.21, 0.0, 15.0], [1.0, 5.67, 0.0]],
    'eval_samples': 10000,
}


def test_format_matrix_markdown_puts_rho_pos_teacher_row_student_column():
    lines = format_matrix(MATRIX, markdown=True).splitlines()
    assert len(lines) == 2 + 3
    header = [c.strip() for c in lines[0].strip('|').split('|')]
    assert header == ['teacher \\ student', 'vit_a', 'convnext_b', 'mixer_c']
    assert lines[1].count('|') == 5
    rows = [[c.strip() for c in line.strip('|').split('|')] for line in lines[2:]]
    assert [r[0] for r in rows] == ['**vit_a** (81.50)', '**convnext_b** (90.25)', '**mixer_c** (77.00)']
    cells = [r[1:] for r in rows]
    assert cells == [['—', '12.34', '20.50'], ['3.21', '—', '15.00'], ['1.00', '5.67', '—']]


def test_format_matrix_plain_puts_rho_pos_teacher_row_student_column():
    lines = format_matrix(MATRIX).splitlines()
    assert lines[0].split() == ['vit_a', 'convnext_b', 'mixer_c']
    rows = [line.split() for line in lines[1:4]]
    assert rows == [['vit_a', '81.50', '-', '12.34', '20.50'],
                    ['convnext_b', '90.25', '3.21', '-', '15.00'],
                    ['mixer_c', '77.00', '1.00', '5.67', '-']]
    assert 'rows: teacher' in lines[4] and 'columns: student' in lines[4]
    # column j of the header sits above column j of every row (right-aligned to the same end)
    for j, name in enumerate(MATRIX['names']):
        end = lines[0].index(name) + len(name)
        assert all(line[:end].rstrip().split()[-1] == row[2 + j] for line, row in zip(lines[1:4], rows))


def test_format_matrix_plain_keeps_cells_apart_for_short_names():
    m = {'names': ['a', 'b'], 'top1': [80.0, 70.0], 'rho_pos': [[0.0, 12.34], [56.78, 0.0]]}
    rows = [line.split() for line in format_matrix(m).splitlines()[1:3]]
    assert rows == [['a', '80.00', '-', '12.34'], ['b', '70.00', '56.78', '-']]


def scan_result(teachers):
    return {'student': 'local-dir:zoo/vit_a', 'student_name': 'vit_a', 'dataset': DATASET, 'split': 'test',
            'eval_samples': 10000, 'student_top1': 85.35, 'teachers': teachers}


def teacher_entry(name, top1, rho_pos, rho_neg, entropy, top):
    return {'name': name, 'spec': f'local-dir:zoo/{name}', 'teacher_top1': top1, 'student_top1': 85.35,
            'rho_pos': rho_pos, 'rho_neg': rho_neg, 'flip_entropy': entropy, 'per_class_pos_flips': [0.0] * 10,
            'top_classes': [{'class': c, 'pos_flip_rate': r} for c, r in top]}


def test_format_scan_lists_teachers_by_complementary_knowledge_with_their_top_classes():
    result = scan_result([
        teacher_entry('weak', 70.1, 1.5, 16.75, 2.1, [('Bag', 3.0), ('Coat', 2.5), ('Shirt', 1.0)]),
        teacher_entry('strong', 90.2, 6.25, 1.4, 1.234, [('Shirt', 12.5), ('Pullover', 8.0), ('Coat', 4.3)]),
        teacher_entry('mid', 85.0, 3.0, 3.0, 2.0, [('Dress', 5.0), ('Sandal', 0.5), ('Bag', 0.0)]),
    ])
    lines = format_scan(result).splitlines()
    assert lines[0] == f'student vit_a: top-1 85.35 on 10000 {DATASET} test images'
    assert lines[1].split()[:5] == ['teacher', 'top-1', 'ρpos', 'ρneg', 'entropy']
    body = lines[2:5]
    assert [line.split()[0] for line in body] == ['strong', 'mid', 'weak']
    assert body[0].split()[:5] == ['strong', '90.20', '6.25', '1.40', '1.234']
    assert body[0].endswith('Shirt 12.5%, Pullover 8.0%, Coat 4.3%')
    assert body[2].split()[:5] == ['weak', '70.10', '1.50', '16.75', '2.100']
    assert body[2].endswith('Bag 3.0%, Coat 2.5%, Shirt 1.0%')
    assert f'{math.log(10):.3f}' in lines[5]


# --- end to end on exported tiny models -------------------------------------------------------------

@pytest.fixture(scope='module')
def zoo(tmp_path_factory, export_tiny):
    root = tmp_path_factory.mktemp('scanzoo')

    def export(folder, seed, label_names, size, patch):
        return export_tiny(folder, seed=seed, label_names=label_names, size=size, patch=patch, head_scale=5.0)[1]

    specs = {
        'student': export(root / 'vit_s', 0, LABELS, 28, 7),
        # another input size and the classes in reverse order
        'flipped': export(root / 'vit_flipped', 10, REVERSED, 32, 8),
        'other': export(root / 'vit_other', 4, LABELS, 32, 8),
    }
    (root / 'index.json').write_text(json.dumps({'models': [{'name': 'vit_s'}, {'name': 'vit_flipped'},
                                                            {'name': 'vit_other'}]}))
    return root, specs


@pytest.fixture(scope='module')
def images(data_dir):
    """The images ``--eval-subset 64`` evaluates: a class-stratified sample seeded with scan's default seed."""
    from torchvision.datasets import FashionMNIST

    from timm_gkt.data.subsets import stratified_subset_indices
    ds = FashionMNIST(str(data_dir), train=False, download=False)
    pairs = [ds[i] for i in stratified_subset_indices(ds.targets, EVAL_SUBSET, seed=42).tolist()]
    return [img for img, _ in pairs], torch.tensor([t for _, t in pairs])


def own_predictions(spec, imgs):
    """Class ids in Fashion-MNIST order, from this model's own eval transform."""
    resolved = load_model(spec)
    transform = resolved.preprocessing.eval_transform()
    x = torch.stack([transform(img.convert('L')) for img in imgs])
    with torch.no_grad():
        index = resolved.model(x).argmax(-1)
    names = resolved.label_names
    return torch.tensor([LABELS.index(names[i]) for i in index.tolist()])


def pct(mask):
    return 100.0 * mask.double().mean().item()


def test_scan_reports_what_the_models_predict(zoo, images, data_dir):
    _, specs = zoo
    imgs, target = images
    cs = own_predictions(specs['student'], imgs) == target
    result = scan(specs['student'], [specs['flipped'], specs['other']], DATASET, str(data_dir),
                  eval_subset=EVAL_SUBSET, batch_size=32)
    assert result['eval_samples'] == EVAL_SUBSET and result['student_name'] == 'vit_s'
    assert result['student_top1'] == pytest.approx(pct(cs))
    assert [t['name'] for t in result['teachers']] == ['vit_flipped', 'vit_other']
    rho = []
    for key, entry in zip(['flipped', 'other'], result['teachers']):
        ct = own_predictions(specs[key], imgs) == target
        pos = ct & ~cs
        assert entry['teacher_top1'] == pytest.approx(pct(ct))
        assert entry['rho_pos'] == pytest.approx(pct(pos))
        assert entry['rho_neg'] == pytest.approx(pct(~ct & cs))
        rates = [100.0 * int((pos & (target == c)).sum()) / int((target == c).sum()) for c in range(10)]
        assert entry['per_class_pos_flips'] == pytest.approx(rates, abs=1e-3)
        best = sorted(range(10), key=lambda c: -rates[c])[0]
        assert entry['top_classes'][0] == {'class': LABELS[best], 'pos_flip_rate': round(rates[best], 2)}
        rho.append(entry['rho_pos'])
    # the numbers carry information: the two teachers know different things about this student
    assert rho[0] > 0 and rho[1] > 0 and rho[0] != rho[1]
    table = format_scan(result)
    assert table.splitlines()[2].split()[0] == ('vit_flipped' if rho[0] > rho[1] else 'vit_other')


def test_pairwise_matrix_matches_predictions_and_the_flip_identity(zoo, images, data_dir):
    _, specs = zoo
    imgs, target = images
    order = ['student', 'flipped', 'other']
    m = pairwise_matrix([specs[k] for k in order], DATASET, str(data_dir), eval_subset=EVAL_SUBSET)
    assert m['names'] == ['vit_s', 'vit_flipped', 'vit_other'] and m['eval_samples'] == EVAL_SUBSET
    correct = [own_predictions(specs[k], imgs) == target for k in order]
    assert m['top1'] == pytest.approx([pct(c) for c in correct])
    for i in range(3):
        assert m['rho_pos'][i][i] == 0.0
        for j in range(3):
            assert m['rho_pos'][i][j] == pytest.approx(pct(correct[i] & ~correct[j]))
            # ρpos(t,s) − ρpos(s,t) = acc(t) − acc(s)
            assert m['rho_pos'][i][j] - m['rho_pos'][j][i] == pytest.approx(m['top1'][i] - m['top1'][j], abs=1e-9)
    # the identity is not trivially 0 = 0 here: accuracies differ, so ρpos is asymmetric
    assert len(set(m['top1'])) > 1 and m['rho_pos'][0][2] != m['rho_pos'][2][0]


def test_a_student_whose_classes_are_in_another_order_is_scanned_in_its_own_order(zoo, images, data_dir, capsys):
    """The dataset's targets are remapped into the student's class order by name (logged), so its top-1 and the
    flips are what its predictions really are, not a comparison of mismatched class ids."""
    _, specs = zoo
    imgs, target = images
    result = scan(specs['flipped'], [specs['student']], DATASET, str(data_dir), eval_subset=EVAL_SUBSET,
                  batch_size=32)
    assert 'remapped into vit_flipped' in capsys.readouterr().out
    cs = own_predictions(specs['flipped'], imgs) == target
    ct = own_predictions(specs['student'], imgs) == target
    assert result['student_top1'] == pytest.approx(pct(cs))
    (entry,) = result['teachers']
    assert entry['teacher_top1'] == pytest.approx(pct(ct))
    assert entry['rho_pos'] == pytest.approx(pct(ct & ~cs)) and entry['rho_neg'] == pytest.approx(pct(~ct & cs))


def test_cli_prints_scan_as_json_with_predicted_gains(zoo, data_dir, capsys, tmp_path):
    _, specs = zoo
    from timm_gkt.evaluation.predictor import FEATURES, Predictor, pair_features
    # a hand-made predictor: Δ = 0.1 + 0.5 ρpos - 0.25 ρneg (features used as they are)
    predictor = Predictor(FEATURES, (0.0,) * 5, (1.0,) * 5, (0.5, -0.25, 0.0, 0.0, 0.0), 0.1, 1.0, 0.3,
                          {'pairs': 12, 'students': 4, 'description': 'hand-made'},
                          {'spearman': 0.5, 'mae': 0.2})
    path = tmp_path / 'predictor.json'
    predictor.save(path)
    argv = ['--student', specs['student'], '--teachers', f"{specs['other']}, {specs['flipped']}",
            '--dataset', DATASET, '--data-dir', str(data_dir), '--eval-subset', str(EVAL_SUBSET), '--json',
            '--predictor', str(path)]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    expected = scan(specs['student'], [specs['other'], specs['flipped']], DATASET, str(data_dir),
                    eval_subset=EVAL_SUBSET)
    assert {k: v for k, v in printed.items() if k not in ('predictor', 'suggested_sequence')} | {
        'teachers': [{k: v for k, v in t.items() if not k.startswith('predicted_')} for t in printed['teachers']]
    } == json.loads(json.dumps(expected))
    for t in printed['teachers']:
        want = 0.1 + 0.5 * t['rho_pos'] - 0.25 * t['rho_neg']
        assert t['predicted_delta'] == pytest.approx(want, abs=1e-3)
        assert t['predicted_interval'] == pytest.approx([want - 0.3, want + 0.3], abs=2e-3)
        assert set(pair_features(printed['student_top1'], t)) == set(FEATURES)
    assert printed['predictor']['fitted_on']['pairs'] == 12 and printed['predictor']['validation']['mae'] == 0.2
    helpful = [t for t in printed['teachers'] if t['predicted_delta'] > 0]
    assert printed['suggested_sequence'] == [t['spec'] for t in sorted(helpful, key=lambda t: t['teacher_top1'])]


def test_cli_zoo_prints_the_markdown_matrix(zoo, data_dir, capsys):
    root, specs = zoo
    argv = ['--zoo', str(root), '--dataset', DATASET, '--data-dir', str(data_dir), '--eval-subset',
            str(EVAL_SUBSET), '--markdown']
    assert main(argv) == 0
    out = capsys.readouterr().out
    expected = pairwise_matrix([specs['student'], specs['flipped'], specs['other']], DATASET, str(data_dir),
                               eval_subset=EVAL_SUBSET)
    assert out.strip() == format_matrix(expected, markdown=True)


def test_cli_unknown_model_exits_2_with_a_one_line_hint(capsys):
    assert main(['--student', 'test_vitt', '--teachers', 'x']) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert captured.out == ''
    assert len(err.splitlines()) == 1
    assert err.startswith('error: ') and 'Did you mean' in err and 'test_vit' in err


# --- the error boundary: broken inputs end in one line, before anything is evaluated ----------------

@pytest.fixture
def no_evaluation(monkeypatch):
    def evaluated(*args, **kwargs):
        raise AssertionError('scan evaluated a bad input')
    monkeypatch.setattr('timm_gkt.evaluation.scans.predict', evaluated)


def broken_copy(spec: str, tmp_path, damage: str) -> str:
    import shutil
    from pathlib import Path
    folder = tmp_path / f'{damage}_model'
    shutil.copytree(Path(spec.split(':', 1)[1]), folder)
    if damage == 'config':
        (folder / 'config.json').write_text('{"architecture": ')
    else:
        with open(folder / 'model.safetensors', 'r+b') as f:
            f.truncate(1000)
    return f'local-dir:{folder}'


@pytest.mark.parametrize('damage, words', [
    ('config', 'config.json is not valid JSON (Expecting value: line 1 column 18 (char 17)); restore the file'),
    ('weights', 'model.safetensors is truncated or damaged'),
])
def test_cli_broken_model_files_exit_2_with_one_line(damage, words, zoo, data_dir, tmp_path, capsys, no_evaluation):
    _, specs = zoo
    bad = broken_copy(specs['other'], tmp_path, damage)
    for student, teacher in ((bad, specs['student']), (specs['student'], bad)):
        assert main(['--student', student, '--teachers', teacher, '--data-dir', str(data_dir),
                     '--eval-subset', str(EVAL_SUBSET)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith('error: ') and words in err[0], err


def test_cli_hfds_label_column_is_named_with_target_key(zoo, fashion_hfds, fashion_hfds_labels, tmp_path, capsys,
                                                        monkeypatch):
    """A label column called 'labels': one line naming the column looked for and the columns there are, before
    any evaluation; --target-key labels (timm's flag) reads it."""
    _, specs = zoo
    argv = ['--student', specs['student'], '--teachers', specs['other'], '--dataset', f'hfds/{fashion_hfds_labels}',
            '--data-dir', str(tmp_path / 'cache'), '--json']
    with monkeypatch.context() as m:
        m.setattr('timm_gkt.evaluation.scans.predict', lambda *a, **k: pytest.fail('evaluated a bad input'))
        assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (f'error: hfds/{fashion_hfds_labels} split validation has no label column \'label\' (its '
                       f'columns: image, labels); name the label column with --target-key labels')
    assert [line for line in err if 'error:' in line] == [err[-1]]
    assert main([*argv, '--target-key', 'labels']) == 0
    result = json.loads(capsys.readouterr().out)
    argv[argv.index('--dataset') + 1] = f'hfds/{fashion_hfds}'  # the same images, the label column named 'label'
    assert main(argv) == 0
    same = json.loads(capsys.readouterr().out)
    assert result['eval_samples'] == same['eval_samples'] == 200
    assert result['student_top1'] == same['student_top1'] and result['teachers'][0]['rho_pos'] == \
        same['teachers'][0]['rho_pos']
