"""Preflight's data step (timm_gkt/dataplan.py) on a PNG folder, an hfds/ dataset and torchvision.

The student is a tiny untrained ViT exported with Fashion-MNIST's label names: the data step
only reads its label names, so no trained model is needed. Targets are checked image by image
against the Fashion-MNIST label of the image each PNG was written from.
"""
import json

import pytest

from datasets_fixture import FOLDER_NAMES, build_fashion_folder, fashion_folder, fashion_hfds  # noqa: F401
from timm_gkt.errors import ConfigError
from timm_gkt.cli.config import parse_args
from timm_gkt.data.sources import FASHION_MNIST_LABELS, load_fashion_mnist_tensors
from timm_gkt.errors import DataUnavailableError
from timm_gkt.data.plan import EvalFlags, check_data, open_data, open_eval_data
from timm_gkt.errors import LabelSpaceError
from timm_gkt.models.load import load_model
from timm_gkt.errors import DataSplitError

SORTED = tuple(sorted(FOLDER_NAMES, key=str.lower))


@pytest.fixture(scope='module')
def student(tmp_path_factory, export_tiny):
    _, spec = export_tiny(tmp_path_factory.mktemp('student') / 'vit_s')
    return load_model(spec)


@pytest.fixture(scope='module')
def anonymous_student(tmp_path_factory, export_tiny):
    """The same architecture exported without label names."""
    folder = tmp_path_factory.mktemp('anonymous') / 'vit_anon'
    export_tiny(folder)
    cfg = json.loads((folder / 'config.json').read_text())
    cfg.pop('label_names'), cfg['pretrained_cfg'].pop('label_names', None)
    (folder / 'config.json').write_text(json.dumps(cfg))
    return load_model(f'local-dir:{folder}')


@pytest.fixture(scope='module')
def test_labels(data_dir):
    return load_fashion_mnist_tensors(data_dir, train=False)[1]


def run(student, *flags):
    config = parse_args(['--model', student.spec.text, *flags])
    lines = []
    return open_data(config, check_data(config), student, lines.append), lines


def targets(ds) -> list[int]:
    return [int(ds[i][1]) for i in range(len(ds))]


def test_folder_targets_are_remapped_into_the_students_order(student, fashion_folder, test_labels):
    data, lines = run(student, '--dataset', 'folder', '--data-dir', str(fashion_folder.root))
    for split, part in (('train', data.train), ('validation', data.eval)):
        assert part.split.timm_split == split and part.images == len(fashion_folder.indices[split])
        assert targets(part.dataset) == [int(test_labels[i]) for i in fashion_folder.indices[split]]
    name = fashion_folder.root.name
    assert lines[:3] == [f'labels: {name} train matches vit_s by names',
                         "  1 name(s) matched after normalising case and _ / - spaces: 'T-shirt_top' = 'T-shirt/top'",
                         f"  {name} train orders its classes differently: 6 of 10 targets are remapped into vit_s's "
                         f"class order"]
    assert data.head_label_names == FASHION_MNIST_LABELS
    record = data.record()
    assert record['kind'] == 'folder' and record['name'] == name and record['hub_id'] is None
    assert record['eval']['labels']['dataset_names'] == list(SORTED)
    assert record['eval']['subset'] == {'size': 200, 'of': 200, 'seed': None, 'sampling': 'all', 'fingerprint': None}
    assert str(fashion_folder.root) not in json.dumps(record)


def test_missing_split_folder_and_missing_data_folder(student, fashion_folder, tmp_path):
    with pytest.raises(DataSplitError, match=r"split 'test' has no folder under .* \(it has train, validation\); "):
        run(student, '--dataset', 'folder', '--data-dir', str(fashion_folder.root), '--val-split', 'test')
    with pytest.raises(DataSplitError, match=f'data folder {tmp_path}/nope does not exist; pass --data-dir'):
        run(student, '--dataset', 'folder', '--data-dir', str(tmp_path / 'nope'))


def test_a_split_folder_without_a_class_stops_before_any_image_is_read(student, tmp_path, data_dir):
    folder = build_fashion_folder(tmp_path / 'data', data_dir, train_per_class=1, val_per_class=1,
                                  skip_val_class='Bag')
    with pytest.raises(LabelSpaceError, match='^data validation has 9 classes but vit_s predicts 10; '):
        run(student, '--dataset', 'folder', '--data-dir', str(folder.root))


def test_seeded_eval_subset_keeps_every_class(student, fashion_folder, test_labels):
    data, _ = run(student, '--dataset', 'folder', '--data-dir', str(fashion_folder.root), '--eval-subset', '30',
                  '--seed', '7')
    subset = data.eval.subset
    assert subset['size'] == 30 and subset['of'] == 200 and subset['seed'] == 7
    assert subset['per_class'] == {name: 3 for name in SORTED}  # keyed by the folder names
    labels = targets(data.eval.dataset)
    assert sorted(set(labels)) == list(range(10)) and len(labels) == 30
    again, _ = run(student, '--dataset', 'folder', '--data-dir', str(fashion_folder.root), '--eval-subset', '30',
                   '--seed', '7')
    other, _ = run(student, '--dataset', 'folder', '--data-dir', str(fashion_folder.root), '--eval-subset', '30',
                   '--seed', '8')
    assert again.eval.subset['fingerprint'] == subset['fingerprint'] != other.eval.subset['fingerprint']


def image_ids(split) -> list[int]:
    """The Fashion-MNIST index each image of a folder split was written from (its file name)."""
    from timm_gkt.data.unreadable import image_name
    return [int(image_name(split.dataset, i).split('/')[-1].split('.')[0]) for i in range(len(split.dataset))]


def test_slices_of_a_class_sorted_folder_hold_every_class_and_exclude_each_other(student, fashion_folder,
                                                                                  test_labels):
    """timm lists a folder's images class by class, so train[50%:] as a contiguous range was the last five classes
    (and train[90%:] only 'Trouser'). Slices of such a source come from a seeded class-stratified order: each
    holds every class in its share, the two never share an image, and --seed chooses which images."""
    root = str(fashion_folder.root)
    data, lines = run(student, '--dataset', 'folder', '--data-dir', root, '--train-split', 'train[:50%]',
                      '--val-split', 'train[50%:]')
    assert (data.train.images, data.eval.images) == (60, 60)
    assert data.eval.record()['read_as'] == 'train[50%:]'
    assert data.eval.record()['slice'] == 'class-stratified (the source is sorted by class), seed 42'
    assert any('a slice of a source sorted by class, taken from a seeded class-stratified order (seed 42)' in line
               for line in lines)
    train_ids, eval_ids = image_ids(data.train), image_ids(data.eval)
    assert sorted(train_ids + eval_ids) == sorted(fashion_folder.indices['train'])  # disjoint, together all 120
    for split, ids in ((data.train, train_ids), (data.eval, eval_ids)):
        # targets in the student's order are the labels of the images the split holds: 6 of each of the 10 classes
        assert targets(split.dataset) == [int(test_labels[i]) for i in ids]
        assert sorted(targets(split.dataset).count(c) for c in range(10)) == [6] * 10
    tenth, _ = run(student, '--dataset', 'folder', '--data-dir', root, '--train-split', 'train[:90%]',
                   '--val-split', 'train[90%:]')
    assert len(tenth.eval.dataset) == 12 and set(targets(tenth.eval.dataset)) == set(range(10))  # every class
    other, _ = run(student, '--dataset', 'folder', '--data-dir', root, '--train-split', 'train[:50%]',
                   '--val-split', 'train[50%:]', '--seed', '7')
    assert image_ids(other.eval) != eval_ids
    assert sorted(targets(other.eval.dataset)) == sorted(targets(data.eval.dataset))
    with pytest.raises(DataSplitError, match=r"share 12 of 120 images; make the slices disjoint"):
        run(student, '--dataset', 'folder', '--data-dir', root, '--train-split', 'train[:72]', '--val-split',
            'train[60:]')
    with pytest.raises(DataSplitError, match=r"are the same images; evaluate on a held-out split"):
        run(student, '--dataset', 'folder', '--data-dir', root, '--val-split', 'train')


def test_fashion_mnist_train_slices_for_the_study(student, data_dir):
    data, _ = run(student, '--data-dir', str(data_dir), '--train-split', 'train[:55000]',
                  '--val-split', 'train[55000:]')
    assert (data.train.images, data.eval.images) == (55000, 5000)
    assert data.train.split.timm_split == data.eval.split.timm_split == 'train'
    _, train_labels = load_fashion_mnist_tensors(data_dir, train=True)
    assert [int(data.eval.dataset[i][1]) for i in (0, 4999)] == [int(train_labels[55000]), int(train_labels[59999])]
    assert data.record()['eval']['split'] == 'train[55000:]' and data.record()['train']['read_as'] == 'train[:55000]'


def test_a_student_without_label_names_needs_the_order_confirmed(anonymous_student, fashion_folder):
    root = str(fashion_folder.root)
    with pytest.raises(LabelSpaceError, match="vit_anon has no label names, so the order of .* cannot be checked"):
        run(anonymous_student, '--dataset', 'folder', '--data-dir', root)
    data, lines = run(anonymous_student, '--dataset', 'folder', '--data-dir', root, '--trust-label-order')
    assert lines[0].startswith('warning: ') and '(--trust-label-order)' in lines[0]
    assert data.head_label_names == SORTED  # target i is class i, so the folders name the exported head
    assert data.eval.labels.target_map is None


def test_class_map_in_the_models_order(student, fashion_folder, tmp_path, test_labels):
    class_map = tmp_path / 'classes.txt'
    class_map.write_text('\n'.join(FOLDER_NAMES) + '\n')
    data, _ = run(student, '--dataset', 'folder', '--data-dir', str(fashion_folder.root), '--class-map', str(class_map))
    assert data.eval.labels.target_map is None  # the map already puts the folders in the model's order
    assert targets(data.eval.dataset) == [int(test_labels[i]) for i in fashion_folder.indices['validation']]
    assert data.record()['class_map'] == 'classes.txt'
    class_map.write_text('\n'.join(FOLDER_NAMES[:-1]) + '\n')
    with pytest.raises(LabelSpaceError, match="class folders 'Ankle boot' under train are not in --class-map"):
        run(student, '--dataset', 'folder', '--data-dir', str(fashion_folder.root), '--class-map', str(class_map))
    with pytest.raises(ConfigError, match='--class-map applies to folder and hfds/ datasets'):
        run(student, '--class-map', str(class_map))


def test_hfds_targets_are_remapped(student, fashion_folder, fashion_hfds, tmp_path, test_labels):
    data, lines = run(student, '--dataset', f'hfds/{fashion_hfds}', '--data-dir', str(tmp_path / 'cache'),
                      '--eval-subset', '20')
    assert data.eval.split.timm_split == 'validation' and data.eval.images == 200
    assert any('targets are remapped' in line for line in lines)
    expected = {int(test_labels[i]) for i in fashion_folder.indices['validation']}
    assert set(targets(data.eval.dataset)) == expected
    assert data.record()['dataset'] == f'hfds/{fashion_hfds.name}' and data.record()['hub_id'] is None
    with pytest.raises(DataSplitError, match=r"has the splits .*, not 'test'"):
        run(student, '--dataset', f'hfds/{fashion_hfds}', '--data-dir', str(tmp_path / 'cache'), '--val-split', 'test')


def test_eval_only_data_for_scan(student, fashion_folder, test_labels):
    flags = EvalFlags('folder', str(fashion_folder.root), 'validation', eval_subset=10, seed=1)
    part = open_eval_data(flags, student, say=lambda line: None)
    assert part.subset['size'] == 10 and len(set(targets(part.dataset))) == 10


def test_unreadable_torchvision_data_is_one_sentence(student, tmp_path):
    with pytest.raises(DataUnavailableError, match=r'^torch/cifar10 split train cannot be read from .*; pass '
                                                   r'--dataset-download'):
        run(student, '--dataset', 'torch/cifar10', '--data-dir', str(tmp_path))
