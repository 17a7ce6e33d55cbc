"""Replayable augmentation (timm_gkt/replay.py): a sample's pixels depend on (seed, epoch, index) only.

The transform is timm's own training pipeline with every random part switched on
(random-resized crop, flips, RandAugment, random erasing), so Python's, NumPy's and
torch's generators are all drawn from. Each test compares tensors by sample index
across loaders that visit the samples in different orders, in different worker or
rank processes; a control shows the same comparison fails without replay.
"""
import multiprocessing
import random

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, DistributedSampler

from timm.data import create_loader, create_transform
from timm_gkt.data.sources import ModeDataset
from timm_gkt.data.replay import ReplayDataset, sample_seed, seeded_global_rngs

N = 24
SEED = 7


class PilImages(torch.utils.data.Dataset):
    """Random 28x28 grayscale images with labels, like Fashion-MNIST items."""

    def __init__(self, n=N):
        rng = np.random.default_rng(0)
        self.images = [Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8), mode='L') for _ in range(n)]
        self.transform = None

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], i % 10


def train_transform():
    return create_transform((1, 28, 28), is_training=True, scale=(0.5, 1.0), hflip=0.5, vflip=0.5,
                            auto_augment='rand-m9-inc1', re_prob=0.5, mean=(0.286,), std=(0.353,))


def replay_dataset(seed=SEED):
    return ReplayDataset(PilImages(), 'L', seed=seed, transform=train_transform())


def by_index(loader) -> dict[int, torch.Tensor]:
    out = {}
    for x, _, index in loader:
        out.update({int(i): img for i, img in zip(index, x)})
    return out


def assert_same_pixels(a: dict, b: dict):
    assert a.keys() == b.keys()
    for i in a:
        assert torch.equal(a[i], b[i]), f'sample {i} differs'


def test_sample_seed_is_a_pure_function_of_seed_epoch_and_index():
    assert sample_seed(1, 2, 3) == sample_seed(1, 2, 3)
    seeds = {sample_seed(s, e, i) for s in range(3) for e in range(3) for i in range(50)}
    assert len(seeds) == 3 * 3 * 50
    assert all(0 <= s < 2 ** 64 for s in seeds)


def test_seeded_rngs_give_the_same_stream_and_hand_torch_back_untouched():
    torch.manual_seed(1)
    expected = torch.rand(3)
    torch.manual_seed(1)
    with seeded_global_rngs(123):
        inside = (random.random(), np.random.rand(), torch.rand(2))
    assert torch.equal(torch.rand(3), expected)
    with seeded_global_rngs(123):
        again = (random.random(), np.random.rand(), torch.rand(2))
    assert inside[:2] == again[:2] and torch.equal(inside[2], again[2])


@pytest.mark.parametrize('draw, reseed', [(lambda: np.random.rand(3).tolist(), np.random.seed),
                                          (lambda: [random.random() for _ in range(3)], random.seed)])
def test_python_and_numpy_after_a_sample_are_reproducible_and_not_the_samples_stream(draw, reseed):
    def draws():
        reseed(5)
        with seeded_global_rngs(99):
            sample = draw()
        return sample, draw()
    sample, after = draws()
    assert after == draws()[1]
    with seeded_global_rngs(99):
        draw()
        continued = draw()
    assert after != continued


def test_items_are_image_target_index_and_repeat_exactly():
    ds = replay_dataset()
    x, y, index = ds[5]
    assert x.shape == (1, 28, 28) and y == 5 and index == 5
    assert torch.equal(ds[5][0], x)
    ds.set_epoch(1)
    assert not torch.equal(ds[5][0], x)
    ds.set_epoch(0)
    assert torch.equal(ds[5][0], x)


@pytest.mark.parametrize('persistent', [False, True])
def test_same_pixels_with_0_and_2_workers_through_timms_loader(persistent):
    """timm's create_loader sets the transform; epochs go through set_epoch, even into live workers."""
    results = {}
    for workers in (0, 2):
        ds = ReplayDataset(PilImages(), 'L', seed=SEED)
        loader = create_loader(ds, input_size=(1, 28, 28), batch_size=5, is_training=True, scale=(0.5, 1.0),
                               hflip=0.5, vflip=0.5, auto_augment='rand-m9-inc1', re_prob=0.5,
                               mean=(0.286,), std=(0.353,), num_workers=workers, use_prefetcher=False,
                               device=torch.device('cpu'), persistent_workers=persistent and workers > 0)
        torch.manual_seed(workers)  # a different visiting order per loader
        epochs = []
        for epoch in (0, 1):
            ds.set_epoch(epoch)
            epochs.append(by_index(loader))
        results[workers] = epochs
    assert len(results[0][0]) == 20  # timm drops the last partial batch when training
    for epoch in (0, 1):
        common = results[0][epoch].keys() & results[2][epoch].keys()
        assert len(common) >= 16
        assert_same_pixels({i: results[0][epoch][i] for i in common}, {i: results[2][epoch][i] for i in common})
    changed = [i for i in results[0][0].keys() & results[0][1].keys()
               if not torch.equal(results[0][0][i], results[0][1][i])]
    assert len(changed) >= 0.9 * len(results[0][0].keys() & results[0][1].keys())


def test_without_replay_workers_change_the_pixels():
    """The control: the same comparison on a plain dataset fails, so the tests above can fail."""
    results = []
    for workers in (0, 2):
        ds = ModeDataset(PilImages(), 'L', train_transform())
        loader = DataLoader(ds, batch_size=6, num_workers=workers)
        results.append(torch.cat([x for x, _ in loader]))
    assert not torch.equal(results[0], results[1])


def shard(rank: int, world: int, epoch: int, workers: int = 0) -> dict[int, torch.Tensor]:
    ds = replay_dataset()
    ds.set_epoch(epoch)
    sampler = DistributedSampler(ds, num_replicas=world, rank=rank, shuffle=True, seed=11)
    return by_index(DataLoader(ds, batch_size=4, sampler=sampler, num_workers=workers))


def test_same_pixels_with_1_and_2_ranks():
    whole = shard(0, 1, epoch=3)
    halves = {**shard(0, 2, epoch=3), **shard(1, 2, epoch=3, workers=2)}
    assert len(whole) == N
    assert_same_pixels(whole, halves)


def _rank_process(rank, queue):
    # a different global state in every process: only the replay seeding may decide the pixels
    random.seed(1000 + rank)
    np.random.seed(1000 + rank)
    torch.manual_seed(1000 + rank)
    queue.put({i: t.numpy() for i, t in shard(rank, 2, epoch=2).items()})


def test_same_pixels_in_two_real_processes():
    ctx = multiprocessing.get_context('fork')
    queue = ctx.Queue()
    procs = [ctx.Process(target=_rank_process, args=(r, queue)) for r in (0, 1)]
    for p in procs:
        p.start()
    parts = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    both = {i: torch.from_numpy(a) for part in parts for i, a in part.items()}
    assert_same_pixels(shard(0, 1, epoch=2), both)
