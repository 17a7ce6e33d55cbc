"""The in-memory training loader: timm's pixels bit for bit, views that depend on (seed, epoch, index) only."""
import dataclasses
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from timm_gkt.errors import ConfigError
from timm_gkt.cli.config import TransferConfig, check_flags
from timm_gkt.data.memory import Flips, InMemoryLoader, create_memory_loader, unsupported_augmentation
from timm_gkt.models.load import Preprocessing
from timm_gkt.models.spec import parse_spec

N = 24


class PilDataset(torch.utils.data.Dataset):
    """Random 28x28 grayscale images with a non-symmetric pattern, so flips are visible."""

    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.pixels = torch.randint(0, 256, (N, 28, 28), generator=g, dtype=torch.uint8)
        self.targets = [i % 10 for i in range(N)]
        self.transform = None

    def __len__(self):
        return N

    def __getitem__(self, i):
        return Image.fromarray(self.pixels[i].numpy(), mode='L'), self.targets[i]


def config(**kw) -> TransferConfig:
    values = dict(model=parse_spec('local-dir:/nonexistent'), data_in_memory=True, scale=(1.0, 1.0),
                  ratio=(1.0, 1.0), batch_size=8, seed=3, transfer_method='ce')
    values.update(kw)
    return TransferConfig(**values)


ACCEL = SimpleNamespace(device=torch.device('cpu'), process_index=0, num_processes=1)
RGB32 = Preprocessing(input_size=(3, 32, 32), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                      interpolation='bicubic')


def timm_view(ds, i, prep, hflip):
    """What timm's training loader gives for image ``i`` (scale = ratio = 1: only the flip is random)."""
    from timm.data import create_transform

    from timm_gkt.data.sources import ModeDataset
    t = create_transform(prep.input_size, is_training=True, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=hflip,
                         color_jitter=0.0, interpolation=prep.interpolation, mean=prep.mean, std=prep.std)
    return ModeDataset(ds, prep.image_mode, t)[i][0]


@pytest.mark.parametrize('prep', [RGB32, Preprocessing((1, 28, 28), (0.286,), (0.353,))], ids=['rgb32', 'gray28'])
def test_pixels_equal_timms_loader_with_and_without_flip(prep):
    ds = PilDataset()
    loader = create_memory_loader(config(), ds, SimpleNamespace(preprocessing=prep), ACCEL)
    index = torch.arange(6)
    plain, target, idx = loader.batch(index, torch.zeros(6, dtype=torch.bool), torch.zeros(6, dtype=torch.bool))
    flipped, _, _ = loader.batch(index, torch.ones(6, dtype=torch.bool), torch.zeros(6, dtype=torch.bool))
    for i in range(6):
        assert torch.equal(plain[i], timm_view(ds, i, prep, hflip=0.0))
        assert torch.equal(flipped[i], timm_view(ds, i, prep, hflip=1.0))
    assert target.tolist() == [i % 10 for i in range(6)] and idx.tolist() == list(range(6))
    assert plain.shape == (6, *prep.input_size)


def views_by_index(loader, epoch):
    loader.set_epoch(epoch)
    return {int(i): x for xb, _, ib in loader for x, i in zip(xb, ib)}


def test_a_samples_view_depends_on_seed_epoch_and_index_only():
    ds = PilDataset()
    gray = SimpleNamespace(preprocessing=Preprocessing((1, 28, 28), (0.5,), (0.5,)))
    a = create_memory_loader(config(batch_size=4, hflip=0.5), ds, gray, ACCEL)
    b = create_memory_loader(config(batch_size=6, hflip=0.5), ds, gray, ACCEL)
    va, vb = views_by_index(a, 1), views_by_index(b, 1)
    assert len(va) == N and len(vb) == N  # 24 images: 6 batches of 4, 4 batches of 6, nothing dropped
    assert all(torch.equal(va[i], vb[i]) for i in range(N))
    # two ranks split the single-process epoch: same indices, same pixels
    ranks = [InMemoryLoader(a.images, a.targets, 4, (0.5,), (0.5,), Flips(0.5), 3, rank=r, num_replicas=2)
             for r in (0, 1)]
    merged = {}
    for r in ranks:
        merged.update(views_by_index(r, 1))
    assert len(ranks[0]) == 3 and sorted(merged) == list(range(N))
    assert all(torch.equal(merged[i], va[i]) for i in range(N))
    # a new epoch reshuffles and redraws the flips; about half the images are flipped
    order0, flip0, _ = a.epoch_plan(0)
    order1, flip1, _ = a.epoch_plan(1)
    assert not torch.equal(order0, order1) and not torch.equal(flip0, flip1)
    assert 4 <= int(flip0.sum()) <= 20


def test_last_incomplete_batch_is_dropped_like_timms_training_loader():
    ds = PilDataset()
    loader = create_memory_loader(config(batch_size=10), ds, SimpleNamespace(preprocessing=RGB32), ACCEL)
    assert len(loader) == 2 and sum(len(y) for _, y, _ in loader) == 20


def test_only_flip_augmentation_is_accepted():
    assert unsupported_augmentation(config()) == []
    assert unsupported_augmentation(config(scale=(0.8, 1.0), color_jitter=0.4)) == ['--scale 0.8 1.0',
                                                                                      '--color-jitter 0.4']
    assert unsupported_augmentation(config(scale=(0.8, 1.0), no_aug=True)) == []
    with pytest.raises(ConfigError, match=r'--data-in-memory replays flips only, not --reprob 0.25'):
        check_flags(config(reprob=0.25))
    check_flags(dataclasses.replace(config(reprob=0.25), data_in_memory=False))  # timm's loader handles it


@pytest.mark.parametrize('prep, flips', [(RGB32, {'hflip': 0.5}), (Preprocessing((1, 28, 28), (0.286,), (0.353,)),
                                                                  {'hflip': 0.5, 'vflip': 0.3})],
                         ids=['rgb32-hflip', 'gray28-both-flips'])
def test_batches_equal_the_per_image_loaders_through_accelerate(prep, flips):
    """Same images, order, flips and targets, batch for batch, over two epochs: in memory is only faster."""
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, set_seed

    from timm_gkt.transfer.engine import create_train_loader
    ds, student = PilDataset(), SimpleNamespace(preprocessing=prep)
    cfg = config(batch_size=5, **flips)
    set_seed(cfg.seed)
    accelerator = Accelerator(cpu=True, dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True))
    per_image = accelerator.prepare(create_train_loader(cfg, ds, student))
    memory = create_memory_loader(cfg, ds, student, accelerator)
    assert len(memory) == len(per_image) == N // 5
    for epoch in (0, 1):
        per_image.set_epoch(epoch)
        per_image.dataset.set_epoch(epoch)
        memory.set_epoch(epoch)
        for (x, y, i), (xm, ym, im) in zip(per_image, memory):
            assert torch.equal(i, im) and torch.equal(y, ym)
            assert torch.equal(x, xm)
