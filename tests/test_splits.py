"""Split names, existence checks and HF-style slices (timm_gkt.splits)."""
import pytest
from torch.utils.data import Subset

from datasets_fixture import fashion_folder, fashion_hfds  # noqa: F401
from timm_gkt.errors import DataSplitError
from timm_gkt.data.splits import (
    ResolvedSplit, SplitSlice, apply_slice, check_disjoint, dataset_kind, default_val_split, parse_split,
    resolve_split,
)


@pytest.mark.parametrize('text, parsed', [
    ('train', SplitSlice('train')),
    ('train[:55000]', SplitSlice('train', None, '55000')),
    ('train[55000:]', SplitSlice('train', '55000', None)),
    ('train[10%:90%]', SplitSlice('train', '10%', '90%')),
    (' validation[-10%:] ', SplitSlice('validation', '-10%', None)),
])
def test_parse_split(text, parsed):
    assert parse_split(text) == parsed


@pytest.mark.parametrize('text', ['', 'train[5]', 'train[:10]+test', 'train[a:b]', 'train[:150%]', 'train[:10'])
def test_parse_split_refuses_other_syntax(text):
    with pytest.raises(DataSplitError, match='split'):
        parse_split(text)


@pytest.mark.parametrize('text, n, bounds', [
    ('train[:55000]', 60000, (0, 55000)),
    ('train[55000:]', 60000, (55000, 60000)),
    ('train[:90%]', 60000, (0, 54000)),
    ('train[-10%:]', 60000, (54000, 60000)),
    ('x[:50%]', 7, (0, 4)),  # 3.5 images round half up
    ('x[50%:]', 7, (4, 7)),  # so [:50%] and [50%:] tile the split
    ('x[5:100]', 7, (5, 7)),
    ('x[6:2]', 7, (6, 6)),
    ('x', 7, (0, 7)),
])
def test_slice_bounds(text, n, bounds):
    assert parse_split(text).bounds(n) == bounds


@pytest.mark.parametrize('dataset, kind, default', [
    ('torch/fashion_mnist', 'torch', 'test'), ('torch/CIFAR10', 'torch', 'test'),
    ('torch/imagenet', 'torch', 'validation'), ('', 'folder', 'validation'), ('torch/folder', 'folder', 'validation'),
    ('HFDS/org/name', 'hfds', 'validation'), ('wds/x', 'wds', 'validation'),
])
def test_kind_and_default_val_split(dataset, kind, default):
    assert dataset_kind(dataset) == kind and default_val_split(dataset) == default


def test_torch_splits():
    assert resolve_split('torch/fashion_mnist', 'data', 'test').timm_split == 'test'
    val = resolve_split('torch/fashion_mnist', 'data', 'validation')
    assert (val.timm_split, val.key) == ('test', 'torch/fashion_mnist:test')
    assert val.note == 'torch/fashion_mnist has no validation split; its test split is the held-out one'
    carved = resolve_split('torch/fashion_mnist', 'data', 'train[55000:]')
    assert (carved.timm_split, carved.slice.start) == ('train', '55000')
    with pytest.raises(DataSplitError, match="has the splits train and test, not 'holdout'; pass --val-split test"):
        resolve_split('torch/fashion_mnist', 'data', 'holdout')


def test_timm_falls_back_to_the_root_without_the_split_folder(fashion_folder):
    """Why resolve_split exists: timm reads train and validation images together for a missing split."""
    from timm.data import create_dataset
    everything = create_dataset('', root=str(fashion_folder.root), split='test')
    assert len(everything) == sum(len(v) for v in fashion_folder.indices.values())


def test_folder_splits(fashion_folder, tmp_path):
    root = fashion_folder.root
    assert resolve_split('', root, 'validation').timm_split == 'validation'
    val = resolve_split('', root, 'val')  # timm's synonyms, in timm's order
    assert (val.timm_split, val.note) == ('validation', 'split val read from folder validation/')
    with pytest.raises(DataSplitError, match=r"split 'test' has no folder under .* \(it has train, validation\); "
                                             r"pass --val-split validation, or carve one out of train: --train-split "
                                             r"\"train\[:90%\]\" --val-split \"train\[90%:\]\""):
        resolve_split('', root, 'test')
    with pytest.raises(DataSplitError, match='data folder .*nope does not exist'):
        resolve_split('', tmp_path / 'nope', 'train')


def test_hfds_splits(fashion_hfds, tmp_path):
    name = f'hfds/{fashion_hfds}'
    assert resolve_split(name, tmp_path, 'validation[:50%]').timm_split == 'validation'
    with pytest.raises(DataSplitError, match=r"has the splits train, validation, not 'test'"):
        resolve_split(name, tmp_path, 'test')
    with pytest.raises(DataSplitError, match='cannot list the splits of hfds/'):
        resolve_split(f'hfds/{tmp_path / "missing"}', tmp_path, 'train')


def test_streamed_datasets_are_not_sliced():
    with pytest.raises(DataSplitError, match='is streamed'):
        resolve_split('wds/x', '', 'train[:10]')


def _split(text, key='d:train'):
    return ResolvedSplit(text, 'train', parse_split(text), key)


def test_check_disjoint():
    check_disjoint(_split('train'), _split('validation', 'd:validation'), None)
    check_disjoint(_split('train[:90%]'), _split('train[90%:]'), 1000)
    with pytest.raises(DataSplitError, match="'train' and evaluation split 'train' are the same images"):
        check_disjoint(_split('train'), _split('train'), 1000)
    with pytest.raises(DataSplitError, match='share 100 of 1000 images'):
        check_disjoint(_split('train[:90%]'), _split('train[800:]'), 1000)


def test_validation_and_test_of_fashion_mnist_are_the_same_images():
    a = resolve_split('torch/fashion_mnist', 'data', 'test')
    b = resolve_split('torch/fashion_mnist', 'data', 'validation')
    with pytest.raises(DataSplitError, match='are the same images'):
        check_disjoint(a, b, None)


def test_apply_slice():
    data = list(range(10))
    assert apply_slice(data, parse_split('train')) is data
    part = apply_slice(data, parse_split('train[7:]'))
    assert isinstance(part, Subset) and [part[i] for i in range(len(part))] == [7, 8, 9]
    with pytest.raises(DataSplitError, match=r'split train\[9:3\] holds no images'):
        apply_slice(data, parse_split('train[9:3]'))
