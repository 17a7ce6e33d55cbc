"""Label spaces (timm_gkt.labels): names from every dataset kind, matching, target remapping.

Unit tests on hand-made name lists; integration tests on a PNG folder and an hfds dataset
built from Fashion-MNIST, scored by a micro-zoo model against the same images read by torchvision.
"""
import pickle

import pytest
import torch
from torch.utils.data import Subset

from datasets_fixture import FOLDER_NAMES, build_fashion_folder, fashion_folder, fashion_hfds  # noqa: F401
from timm_gkt.data.sources import FASHION_MNIST_LABELS, ModeDataset, create_image_dataset
from timm_gkt.data.labels import (
    LabelMatch, TargetRemap, align_dataset_labels, check_class_map_covers, dataset_label_names, match_label_space,
    match_names, model_label_aliases, names_by_index, normalize_label_name, read_class_map, remap_dataset_targets,
)
from timm_gkt.errors import LabelSpaceError

# timm's folder reader order for the Fashion-MNIST class folders, and each folder's model class
SORTED_FOLDERS = ('Ankle boot', 'Bag', 'Coat', 'Dress', 'Pullover', 'Sandal', 'Shirt', 'Sneaker', 'T-shirt_top',
                  'Trouser')
FOLDER_TO_MODEL = (9, 8, 4, 3, 2, 5, 6, 7, 0, 1)


# ----------------------------------------------------------------------------- names

@pytest.mark.parametrize('a, b', [
    ('T-shirt/top', 'T-shirt_top'), ('T-shirt/top', 't shirt top'), ('Ankle boot', 'ankle_boot'),
    ('Ankle  boot ', 'ANKLE-BOOT'), ('T-shirt / top', 't_shirt_top'),
])
def test_normalize_label_name_folds_case_and_separators(a, b):
    assert normalize_label_name(a) == normalize_label_name(b)


def test_normalize_label_name_keeps_other_punctuation():
    assert normalize_label_name('tench, Tinca tinca') == 'tench, tinca tinca'
    assert normalize_label_name('tench, Tinca tinca') != normalize_label_name('tench Tinca tinca')


def test_match_names_reorders_and_reports_normalised_pairs():
    index, normalised = match_names(['cat', 'dog', 'T-shirt/top'], ['T-shirt_top', 'cat', 'Dog'], model='m', dataset='d')
    assert index == (2, 0, 1)
    assert normalised == (('T-shirt_top', 'T-shirt/top'), ('Dog', 'dog'))


def test_match_names_refuses_other_classes_naming_them():
    with pytest.raises(LabelSpaceError, match=r"d has classes m does not predict \('horse'; m has 'dog'\)"):
        match_names(['cat', 'dog'], ['cat', 'horse'], model='m', dataset='d')


def test_match_names_ambiguous_after_normalising_needs_exact_names():
    # 'a_b' and 'a-b' are one name after normalising: exact spellings still match, a third spelling does not
    assert match_names(['a_b', 'a-b'], ['a-b', 'a_b'], model='m', dataset='d')[0] == (1, 0)
    with pytest.raises(LabelSpaceError, match="'a b'"):
        match_names(['a_b', 'a-b'], ['a b', 'a_b'], model='m', dataset='d')


def test_match_names_two_dataset_classes_on_one_model_class():
    with pytest.raises(LabelSpaceError, match="several classes of d match m's class 'cat'"):
        match_names(['cat', 'dog'], ['Cat', 'cat'], model='m', dataset='d')


def test_match_label_space_identity_and_permutation():
    same = match_label_space([('label names', ('a', 'b', 'c'))], ('a', 'b', 'c'), 3, model='m', dataset='d')
    assert same.target_map is None and same.verified_by == 'names'
    moved = match_label_space([('label names', ('a', 'b', 'c'))], ('c', 'a', 'b'), 3, model='m', dataset='d')
    assert moved.target_map == (2, 0, 1)
    assert moved.describe()[-1] == "  d orders its classes differently: 3 of 3 targets are remapped into m's class order"


def test_match_label_space_class_count_differs():
    with pytest.raises(LabelSpaceError, match='^d has 2 classes but m predicts 3; '):
        match_label_space([('label names', ('a', 'b', 'c'))], ('a', 'b'), 3, model='m', dataset='d')


def test_match_label_space_without_model_names():
    with pytest.raises(LabelSpaceError, match='m has no label names.*--trust-label-order'):
        match_label_space([], ('a', 'b'), 2, model='m', dataset='d')
    trusted = match_label_space([], ('a', 'b'), 2, model='m', dataset='d', trust_order=True)
    assert trusted.verified_by == 'trusted order' and trusted.target_map is None
    assert trusted.describe()[0].startswith('warning: d and m: class order not verified')
    assert match_label_space([], ('a', 'b'), 2, model='m', dataset='d', class_map=True).verified_by == 'class map'


def test_trust_order_does_not_override_names_that_differ():
    with pytest.raises(LabelSpaceError, match="'x'"):
        match_label_space([('label names', ('a', 'b'))], ('a', 'x'), 2, model='m', dataset='d', trust_order=True)
    # a class map states the order the names cannot (e.g. WordNet-id folders for a model named by words)
    by_map = match_label_space([('label names', ('a', 'b'))], ('n01', 'n02'), 2, model='m', dataset='d',
                               class_map=True)
    assert by_map.verified_by == 'class map' and by_map.target_map is None


def test_match_label_space_tries_each_alias_list():
    aliases = [('wnids', ('n01', 'n02')), ('descriptions', ('tench, Tinca tinca', 'goldfish'))]
    m = match_label_space(aliases, ('Goldfish', 'tench, Tinca tinca'), 2, model='m', dataset='d')
    assert m.target_map == (1, 0) and m.model_names == aliases[1][1]


def test_model_label_aliases(micro_zoo):
    import timm
    zoo_model = timm.create_model(f'local-dir:{micro_zoo / "q_cnn"}', pretrained=False)
    assert model_label_aliases(zoo_model) == [('label names', FASHION_MNIST_LABELS)]
    imagenet_model = timm.create_model('test_resnet', pretrained=False)  # ImageNet head, no label_names
    (kind_a, wnids), (kind_b, words) = model_label_aliases(imagenet_model)
    assert (kind_a, wnids[0], len(wnids)) == ('imagenet-1k WordNet ids', 'n01440764', 1000)
    assert (kind_b, words[0]) == ('imagenet-1k descriptions', 'tench, Tinca tinca')
    assert model_label_aliases(timm.create_model('test_resnet', pretrained=False, num_classes=7)) == []


# ----------------------------------------------------------------------------- class maps and indices

def test_read_class_map_txt(tmp_path):
    (tmp_path / 'map.txt').write_text('T-shirt_top\nTrouser\n\n'.replace('\n\n', '\n'))
    assert read_class_map(tmp_path / 'map.txt') == {'T-shirt_top': 0, 'Trouser': 1}
    assert read_class_map('map.txt', root=tmp_path) == {'T-shirt_top': 0, 'Trouser': 1}


@pytest.mark.parametrize('name, content, message', [
    ('missing.txt', None, 'does not exist'),
    ('map.csv', 'a,0\n', 'neither .txt nor .pkl'),
    ('map.txt', '', 'is empty'),
    ('map.pkl', b'not a pickle', 'cannot be read'),
])
def test_read_class_map_errors(tmp_path, name, content, message):
    if content is not None:
        (tmp_path / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(LabelSpaceError, match=message):
        read_class_map(tmp_path / name)


def test_names_by_index():
    assert names_by_index({'b': 1, 'a': 0}, 'map') == ('a', 'b')
    assert names_by_index({3: 0, 1: 1}, 'map', source_names={1: 'one', 3: 'three'}) == ('three', 'one')
    with pytest.raises(LabelSpaceError, match="map maps both 'a' and 'b' to class 0"):
        names_by_index({'a': 0, 'b': 0}, 'map')
    with pytest.raises(LabelSpaceError, match=r'leaves class indices \[1\] without a name'):
        names_by_index({'a': 0, 'b': 2}, 'map')


# ----------------------------------------------------------------------------- remapping

class _Targets(torch.utils.data.Dataset):
    """A torchvision-style dataset: applies ``target_transform`` to its stored targets."""

    def __init__(self, targets, target_transform=None):
        self.targets, self.target_transform = list(targets), target_transform

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        t = self.targets[i]
        return i, (self.target_transform(t) if self.target_transform else t)


def test_remap_dataset_targets_through_wrappers():
    base = _Targets([0, 1, 2, 2], target_transform=lambda t: t * 10)
    ds = Subset(base, [3, 0])
    assert remap_dataset_targets(ds, (2, 0, 1)) is ds
    assert [ds[i][1] for i in range(2)] == [10, 20]  # 2 -> 1 -> *10 ; 0 -> 2 -> *10
    remap_dataset_targets(ds, (2, 0, 1))  # the same map again: no double remap
    assert [ds[i][1] for i in range(2)] == [10, 20]
    with pytest.raises(LabelSpaceError, match='already remapped to another class order'):
        remap_dataset_targets(ds, (0, 2, 1))
    assert remap_dataset_targets(base, None) is base


def test_target_remap_pickles_for_loader_workers():
    remap = pickle.loads(pickle.dumps(TargetRemap((2, 0, 1))))
    assert [remap(t) for t in (0, 1, 2)] == [2, 0, 1] and remap(torch.tensor(1)) == 0


def test_remap_without_target_transform_is_refused():
    with pytest.raises(LabelSpaceError, match='has no target_transform'):
        remap_dataset_targets([(0, 0)], (1, 0))


# ----------------------------------------------------------------------------- every dataset kind

def test_names_from_torchvision(data_dir):
    ds = create_image_dataset('torch/fashion_mnist', data_dir, 'test')
    assert dataset_label_names(ds) == FASHION_MNIST_LABELS
    assert dataset_label_names(ModeDataset(Subset(ds, [0, 1]), 'L')) == FASHION_MNIST_LABELS


def test_names_from_timm_folder_sorted_by_timm(fashion_folder):
    from timm.data import create_dataset
    ds = create_dataset('', root=str(fashion_folder.root), split='validation')
    assert dataset_label_names(ds) == SORTED_FOLDERS


def test_names_from_class_map_follow_the_map(fashion_folder, tmp_path):
    from timm.data import create_dataset
    class_map = tmp_path / 'class_map.txt'
    class_map.write_text('\n'.join(FOLDER_NAMES) + '\n')  # the model's order
    ds = create_dataset('', root=str(fashion_folder.root), split='validation', class_map=str(class_map))
    assert dataset_label_names(ds) == FOLDER_NAMES
    check_class_map_covers(fashion_folder.root / 'validation', read_class_map(class_map), 'class_map.txt')
    class_map.write_text('\n'.join(FOLDER_NAMES[:-1]) + '\n')  # no 'Ankle boot': timm would drop its images
    with pytest.raises(LabelSpaceError, match="class folders 'Ankle boot' under validation are not in class_map.txt"):
        check_class_map_covers(fashion_folder.root / 'validation', read_class_map(class_map), 'class_map.txt')


def test_names_from_hfds_class_label(fashion_hfds, tmp_path):
    from timm.data import create_dataset
    ds = create_dataset(f'hfds/{fashion_hfds}', root=str(tmp_path / 'cache'), split='validation')
    assert dataset_label_names(ds) == SORTED_FOLDERS


# ----------------------------------------------------------------------------- the right top-1 on a user's data

def _zoo_model(micro_zoo, name='q_cnn'):
    from timm_gkt.models.load import load_model
    return load_model(f'local-dir:{micro_zoo / name}')


def _top1_on_torchvision(model, data_dir, indices):
    from timm_gkt.evaluation.predictions import predict, top1
    ds = Subset(create_image_dataset('torch/fashion_mnist', data_dir, 'test'), indices)
    (pred,), target = predict([model.model], [model.preprocessing], ds, batch_size=64, progress=False)
    return top1(pred, target)


def _top1(model, ds):
    from timm_gkt.evaluation.predictions import predict, top1
    (pred,), target = predict([model.model], [model.preprocessing], ds, batch_size=64, progress=False)
    return top1(pred, target)


def test_folder_top1_equals_torchvision_after_remap(fashion_folder, micro_zoo, data_dir):
    from timm.data import create_dataset
    model = _zoo_model(micro_zoo)
    reference = _top1_on_torchvision(model, data_dir, fashion_folder.indices['validation'])
    ds = create_dataset('', root=str(fashion_folder.root), split='validation')
    unaligned = _top1(model, ds)
    match = align_dataset_labels(ds, model.model, model_name='q_cnn', dataset='fashion validation')
    assert match == LabelMatch('fashion validation', 'q_cnn', 'names', FOLDER_TO_MODEL,
                               (('T-shirt_top', 'T-shirt/top'),), SORTED_FOLDERS, FASHION_MNIST_LABELS)
    assert _top1(model, ds) == reference
    assert reference > 60 and unaligned < reference - 30  # what issue 7 saw: the alphabetical order scored as labels


def test_hfds_top1_equals_torchvision_after_remap(fashion_folder, fashion_hfds, micro_zoo, data_dir, tmp_path):
    from timm.data import create_dataset
    model = _zoo_model(micro_zoo, 'q_vit')
    reference = _top1_on_torchvision(model, data_dir, fashion_folder.indices['validation'])
    ds = create_dataset(f'hfds/{fashion_hfds}', root=str(tmp_path / 'cache'), split='validation')
    match = align_dataset_labels(ds, model.model, model_name='q_vit', dataset='hfds validation')
    assert match.target_map == FOLDER_TO_MODEL
    assert len(ds) == len(fashion_folder.indices['validation']) and _top1(model, ds) == reference


def test_split_missing_a_class_fails(tmp_path, data_dir, micro_zoo):
    from timm.data import create_dataset
    folder = build_fashion_folder(tmp_path / 'data', data_dir, train_per_class=1, val_per_class=2,
                                  skip_val_class='Bag')
    model = _zoo_model(micro_zoo)
    train = create_dataset('', root=str(folder.root), split='train')
    assert align_dataset_labels(train, model.model, model_name='q_cnn', dataset='data train').target_map == FOLDER_TO_MODEL
    val = create_dataset('', root=str(folder.root), split='validation')
    with pytest.raises(LabelSpaceError, match='^data validation has 9 classes but q_cnn predicts 10; '):
        align_dataset_labels(val, model.model, model_name='q_cnn', dataset='data validation')
