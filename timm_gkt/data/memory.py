"""Training batches for small datasets held in memory (``--data-in-memory``).

A run over Fashion-MNIST-sized data spends about half its time in the per-image PIL pipeline
(ToTensor alone is a quarter of it for a 28 px ViT on one core), and on a GPU the whole run is
bound by it. When the training augmentation is deterministic apart from flips (``--scale 1 1
--ratio 1 1``, no colour jitter, AutoAugment or random erasing), the pipeline can run once: every
image goes through timm's own training transform with the flips switched off, the resulting
pixels are kept as uint8 (they are ``k / 255`` exactly after ToTensor), and each batch is then a
gather, a flip and a normalisation on the device. The batches equal those of the per-image loader bit
for bit: the same pixels, the same order (Accelerate's seedable sampler: a permutation seeded by the
sampler's seed plus the epoch) and the same flips (each sample's flip is the first draw of torch's
generator seeded as :class:`~timm_gkt.data.replay.ReplayDataset` seeds it for that (seed, epoch, index)).
So ``--data-in-memory`` changes the speed of a run, never its numbers, and the teacher cache keys the
two paths alike.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

# what the in-memory path can replay; anything else needs timm's per-image loader
_DETERMINISTIC = {'scale': (1.0, 1.0), 'ratio': (1.0, 1.0), 'color_jitter': 0.0, 'aa': None, 'reprob': 0.0}
MAX_BYTES = 8 * 1024 ** 3


def unsupported_augmentation(config) -> list[str]:
    """The augmentation flags (as ``--flag value``) the in-memory path cannot replay; empty when it can."""
    if config.no_aug:
        return []
    bad = []
    for name, wanted in _DETERMINISTIC.items():
        value = getattr(config, name)
        value = tuple(value) if isinstance(value, (list, tuple)) else value
        if value != wanted and not (wanted is None and not value):
            bad.append(f'--{name.replace("_", "-")} {" ".join(map(str, value)) if isinstance(value, tuple) else value}')
    return bad


def decoded_bytes(num_images: int, input_size: tuple[int, int, int]) -> int:
    return num_images * math.prod(input_size)


@dataclass(frozen=True)
class Flips:
    horizontal: float = 0.0
    vertical: float = 0.0


def replayed_flips(seed: int, epoch: int, num_samples: int, flips: Flips) -> tuple[torch.Tensor, torch.Tensor]:
    """Each sample's horizontal and vertical flip as timm's training transform draws them under
    :class:`~timm_gkt.data.replay.ReplayDataset`: torchvision's ``RandomHorizontalFlip`` then ``RandomVerticalFlip``,
    each ``torch.rand(1) < p`` (present only when p > 0), from torch's generator seeded with the sample's seed."""
    from .replay import sample_seed
    hflip = torch.zeros(num_samples, dtype=torch.bool)
    vflip = torch.zeros(num_samples, dtype=torch.bool)
    if not (flips.horizontal or flips.vertical):
        return hflip, vflip
    g = torch.Generator()
    for index in range(num_samples):
        g.manual_seed(sample_seed(seed, epoch, index))
        if flips.horizontal > 0:
            hflip[index] = bool(torch.rand(1, generator=g) < flips.horizontal)
        if flips.vertical > 0:
            vflip[index] = bool(torch.rand(1, generator=g) < flips.vertical)
    return hflip, vflip


def decode(dataset, transform) -> tuple[torch.Tensor, torch.Tensor]:
    """All images through ``transform`` (ToTensor-terminated, no normalisation): uint8 pixels and targets."""
    from tqdm.auto import tqdm
    first, _ = dataset[0]
    first = transform(first)
    images = torch.empty((len(dataset), *first.shape), dtype=torch.uint8)
    targets = torch.empty(len(dataset), dtype=torch.long)
    for i in tqdm(range(len(dataset)), desc='decode into memory', leave=False, mininterval=1):
        img, target = dataset[i]
        images[i] = transform(img).mul(255).round_().to(torch.uint8)
        targets[i] = int(target)
    return images, targets


class InMemoryLoader:
    """An epoch of shuffled, flipped, normalised batches ``(input, target, index)`` from uint8 images.

    Drops the last incomplete batch, like timm's training loader. With several processes each
    rank takes every ``num_replicas``-th batch of the same permutation.
    """

    def __init__(self, images: torch.Tensor, targets: torch.Tensor, batch_size: int, mean, std, flips: Flips,
                 seed: int, device: torch.device | str = 'cpu', rank: int = 0, num_replicas: int = 1,
                 order_seed: int | None = None):
        self.images = images.to(device)
        self.targets = targets.to(device)
        self.batch_size = batch_size
        shape = (1, -1, 1, 1)
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device).view(shape)
        self.std = torch.tensor(std, dtype=torch.float32, device=device).view(shape)
        self.flips, self.seed, self.device = flips, seed, torch.device(device)
        # the seed Accelerate's sampler permutes with (torch's initial seed when it is created), plus the epoch
        self.order_seed = seed if order_seed is None else order_seed
        self.rank, self.num_replicas = rank, num_replicas
        self.epoch = 0
        self.dataset = images  # len(loader.dataset) is the number of images, as for a DataLoader

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return (len(self.images) // self.batch_size) // self.num_replicas

    def epoch_plan(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(permutation, horizontal flip flags, vertical flip flags), each indexed by sample."""
        n = len(self.images)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.order_seed + epoch))
        hflip, vflip = replayed_flips(self.seed, epoch, n, self.flips)
        return order, hflip, vflip

    def __iter__(self):
        order, hflip, vflip = (t.to(self.device) for t in self.epoch_plan(self.epoch))
        for b in range(len(self)):
            start = (b * self.num_replicas + self.rank) * self.batch_size
            index = order[start:start + self.batch_size]
            yield self.batch(index, hflip[index], vflip[index])

    def batch(self, index: torch.Tensor, hflip: torch.Tensor, vflip: torch.Tensor):
        x = self.images[index].float().div_(255)
        if hflip.any():
            x[hflip] = x[hflip].flip(-1)
        if vflip.any():
            x[vflip] = x[vflip].flip(-2)
        x = x.sub_(self.mean).div_(self.std)
        return x, self.targets[index], index


_DECODED: dict = {}


def create_memory_loader(config, train_ds, student, accelerator, store=None) -> InMemoryLoader:
    """The in-memory training loader for ``student``; images are decoded once per run and input size.

    ``store(dataset, transform, make)``, when given, keeps decoded images between runs (the teacher cache's
    :meth:`~timm_gkt.cache.frozen.RunCache.decoded`): ``make()`` decodes only what it does not hold yet.
    """
    from timm.data import create_transform

    from .sources import ModeDataset
    prep = student.preprocessing
    key = (id(train_ds), tuple(prep.input_size), prep.image_mode, prep.interpolation)
    if key not in _DECODED:
        # timm's own training transform with the random parts off; ToTensor, no normalisation
        transform = create_transform(prep.input_size, is_training=True, no_aug=config.no_aug,
                                     scale=tuple(config.scale), ratio=tuple(config.ratio), hflip=0.0, vflip=0.0,
                                     color_jitter=0.0, auto_augment=None, re_prob=0.0,
                                     interpolation=prep.interpolation, mean=(0.0,) * prep.input_size[0],
                                     std=(1.0,) * prep.input_size[0])
        dataset = ModeDataset(train_ds, prep.image_mode)
        _DECODED.clear()  # one decoded copy at a time
        _DECODED[key] = store(dataset, transform, lambda: decode(dataset, transform)) if store is not None \
            else decode(dataset, transform)
    images, targets = _DECODED[key]
    flips = Flips(0.0, 0.0) if config.no_aug else Flips(config.hflip, config.vflip)
    return InMemoryLoader(images, targets, config.batch_size, prep.mean, prep.std, flips, config.seed,
                          accelerator.device, accelerator.process_index, accelerator.num_processes,
                          order_seed=torch.random.initial_seed())
