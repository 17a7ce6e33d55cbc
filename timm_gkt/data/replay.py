"""Replayable augmentation: each training sample's pixels are a pure function of (seed, epoch, index).

timm's training transforms draw from Python's ``random``, NumPy's global generator and
torch's CPU generator. :class:`ReplayDataset` seeds all three from a hash of
``(seed, epoch, index)`` around each sample's transform, so the same sample in the same
epoch gets the same augmentation whatever the loader workers, the process count or the
order in which the sampler visits it. That is what lets a teacher's outputs for
``(epoch, index)`` be computed once and looked up by every later run
(:mod:`timm_gkt.cache`). It returns ``(image, target, index)``: the index is the cache key.

    train_ds = ReplayDataset(dataset, student.preprocessing.image_mode, seed=args.seed)
    loader = timm.data.create_loader(train_ds, ..., is_training=True)  # sets train_ds.transform
    for epoch in range(epochs):
        train_ds.set_epoch(epoch)            # before iterating: workers read it from shared memory
        for x, y, index in loader: ...
"""
from __future__ import annotations

import contextlib
import hashlib
import random
import struct

import numpy as np
import torch

from .sources import ModeDataset

REPLAY_VERSION = 1  # bump when sample_seed or the seeding scheme changes: cached outputs keyed on it go stale


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """64-bit seed of one sample's augmentation; a hash, so nearby indices get unrelated streams."""
    digest = hashlib.blake2b(struct.pack('<qqq', seed, epoch, index), digest_size=8,
                             person=b'timm_gkt-replay').digest()
    return int.from_bytes(digest, 'little')


@contextlib.contextmanager
def seeded_global_rngs(seed: int):
    """Seed Python's, NumPy's and torch's CPU global generators for the block, then hand them back.

    torch's state is restored exactly (under a microsecond). Saving Python's state costs
    ~50 µs (a tuple of 625 ints) and NumPy's ~0.3 ms, as much as a small image's whole
    transform, so those two are instead reseeded afterwards from a draw of their own
    stream taken before the block: code that draws from them afterwards stays
    reproducible and never continues a sample's stream.
    """
    torch_gen = torch.default_generator  # torch.manual_seed would also seed every accelerator (~1 ms)
    torch_state = torch_gen.get_state()
    py_carry = random.getrandbits(64)
    np_carry = int(np.random.randint(0, 2 ** 32, dtype=np.uint64))
    random.seed(seed)
    np.random.seed(seed & 0xFFFFFFFF)
    torch_gen.manual_seed(seed)
    try:
        yield
    finally:
        torch_gen.set_state(torch_state)
        random.seed(py_carry)
        np.random.seed(np_carry)


class ReplayDataset(ModeDataset):
    """A map-style image dataset with replayable augmentation; items are ``(image, target, index)``.

    ``transform`` is a plain attribute (timm's ``create_loader`` sets it). The epoch lives
    in a shared-memory tensor so :meth:`set_epoch` reaches loader workers that already
    exist (persistent workers); call it before iterating the loader, as with
    ``DistributedSampler.set_epoch``.
    """

    def __init__(self, dataset, mode: str, seed: int, transform=None):
        super().__init__(dataset, mode, transform)
        self.seed = int(seed)
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        self._epoch.fill_(int(epoch))

    def __getitem__(self, index):
        index = int(index)
        with seeded_global_rngs(sample_seed(self.seed, self.epoch, index)):
            img, target = super().__getitem__(index)
        return img, target, index
