"""Seeded class-stratified subsets (timm_gkt.subsets)."""
import pytest
import torch
from torch.utils.data import Subset

from datasets_fixture import fashion_folder  # noqa: F401
from timm_gkt.errors import SubsetError
from timm_gkt.data.subsets import (
    dataset_targets, indices_fingerprint, stratified_quota, stratified_subset_indices, take_subset,
)


def test_stratified_quota_by_hand():
    # one each, then 2 spare over what is left (4, 2, 1): 8/7, 4/7, 2/7 -> floors 1, 0, 0 + largest remainder (4/7)
    assert stratified_quota([5, 3, 2], 5) == [2, 2, 1]
    assert stratified_quota([5, 3, 2], 3) == [1, 1, 1]
    assert stratified_quota([5, 0, 2], 4) == [3, 0, 1]  # an empty class gets nothing
    assert stratified_quota([1, 1, 8], 9) == [1, 1, 7]  # never more than a class holds
    with pytest.raises(SubsetError, match='a subset of 2 images cannot hold all 3 classes; ask for at least 3'):
        stratified_quota([5, 3, 2], 2)


def test_sorted_folder_targets_keep_every_class():
    targets = torch.arange(3).repeat_interleave(100)  # a folder dataset: class 0 first, then 1, then 2
    idx = stratified_subset_indices(targets, 30, seed=0)
    assert torch.bincount(targets[idx]).tolist() == [10, 10, 10]
    assert torch.equal(idx, torch.sort(idx).values) and len(set(idx.tolist())) == 30
    assert torch.equal(idx, stratified_subset_indices(targets, 30, seed=0))
    assert not torch.equal(idx, stratified_subset_indices(targets, 30, seed=1))
    assert not torch.equal(idx, torch.cat([torch.arange(10), torch.arange(100, 110), torch.arange(200, 210)]))


def test_unbalanced_classes_in_proportion():
    targets = torch.tensor([0] * 60 + [1] * 30 + [2] * 10)
    targets = targets[torch.randperm(100, generator=torch.Generator().manual_seed(3))]
    idx = stratified_subset_indices(targets, 10, 5)
    # 1 each + 7 over (59, 29, 9): 4.26, 2.09, 0.65 -> floors 4, 2, 0; the 7th image to the largest remainder (0.65)
    assert torch.bincount(targets[idx]).tolist() == [5, 3, 2]


def test_fingerprint():
    a = indices_fingerprint(torch.tensor([1, 2, 3]))
    assert a == indices_fingerprint([1, 2, 3]) and len(a) == 16
    assert a != indices_fingerprint(torch.tensor([1, 2, 4]))


def test_take_subset_records_what_was_taken():
    ds = torch.utils.data.TensorDataset(torch.zeros(12), torch.arange(3).repeat_interleave(4))
    ds.targets = ds.tensors[1]
    part, record = take_subset(ds, 6, seed=7)
    assert isinstance(part, Subset) and len(part) == 6
    assert record == {'size': 6, 'of': 12, 'seed': 7, 'sampling': 'class-stratified', 'per_class': [2, 2, 2],
                      'fingerprint': indices_fingerprint(torch.tensor(part.indices))}
    whole, record = take_subset(ds, 0, seed=7)
    assert whole is ds and record == {'size': 12, 'of': 12, 'seed': None, 'sampling': 'all', 'fingerprint': None}
    assert take_subset(ds, 50, seed=7)[0] is ds
    with pytest.raises(SubsetError, match='subset size -5 is negative'):
        take_subset(ds, -5, seed=7)


def test_targets_of_a_timm_folder_without_decoding(fashion_folder, monkeypatch):
    from timm.data import create_dataset
    ds = create_dataset('', root=str(fashion_folder.root), split='validation')
    expected = torch.tensor([t for _, t in ds.reader.samples])
    monkeypatch.setattr(type(ds), '__getitem__', lambda *a: pytest.fail('decoded an image'))
    assert torch.equal(dataset_targets(ds), expected)
    assert torch.equal(dataset_targets(Subset(ds, [5, 0])), expected[[5, 0]])
    assert torch.bincount(expected).tolist() == [20] * 10


def test_targets_of_torchvision(data_dir):
    from timm_gkt.data.sources import ModeDataset, create_image_dataset
    ds = create_image_dataset('torch/fashion_mnist', data_dir, 'test')
    assert torch.equal(dataset_targets(ModeDataset(ds, 'L')), ds.targets)
    part, record = take_subset(ds, 100, seed=42)
    assert record['per_class'] == [10] * 10 and len(part) == 100


def test_every_stretch_of_the_stratified_order_holds_each_class_in_its_share():
    """The order slices of class-sorted sources are taken from: classes of 30, 10 and 60 images, sorted by class."""
    from timm_gkt.data.subsets import is_class_sorted, stratified_order
    targets = torch.tensor([0] * 30 + [1] * 10 + [2] * 60)
    assert is_class_sorted(targets) and not is_class_sorted(targets.flip(0)) and not is_class_sorted(torch.zeros(5))
    order = stratified_order(targets, seed=3)
    assert sorted(order.tolist()) == list(range(100)) and torch.equal(order, stratified_order(targets, seed=3))
    assert not torch.equal(order, stratified_order(targets, seed=4))
    for start, stop in ((0, 10), (90, 100), (0, 50), (37, 61)):
        counts = torch.bincount(targets[order[start:stop]], minlength=3).tolist()
        share = [(stop - start) * c / 100 for c in (30, 10, 60)]
        assert all(abs(n - s) <= 1 for n, s in zip(counts, share)), (start, stop, counts)
