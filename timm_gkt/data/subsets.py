"""Subsets: ``--train-subset N`` / ``--eval-subset N`` as a seeded, class-stratified sample.

The first N images of a folder dataset sorted by class are a few classes only; a seeded
sample that keeps every class in its share is what a quick run should measure. The record
(size, seed, per-class counts, a fingerprint of the indices) goes into results.json so a
reader knows which images a top-1 was computed on and a rerun can prove it used the same.
"""
from __future__ import annotations

import hashlib
from typing import Sequence

import torch

from ..errors import SubsetError



def dataset_targets(ds) -> torch.Tensor:
    """Every target of a map-style dataset, in order, without decoding images where the dataset allows it.

    Fast paths: Subset (indexes its parent), torchvision ``targets``, timm folder/tar readers
    (``samples`` / ``targets``), timm's hfds reader (``iter_targets``, the label column only).
    Targets are the dataset's own indices: a TargetRemap installed later does not change
    which images share a class (:func:`targets_as_seen` applies it).
    """
    fast = stored_targets(ds)
    if fast is not None:
        return fast
    return torch.as_tensor([int(ds[i][1]) for i in range(len(ds))], dtype=torch.long)  # decodes every image


def stored_targets(ds) -> torch.Tensor | None:
    """The targets a dataset stores (before its target transform), or None when only decoding would tell."""
    from torch.utils.data import Subset
    if isinstance(ds, Subset):
        parent = stored_targets(ds.dataset)
        return None if parent is None else parent[torch.as_tensor(list(ds.indices), dtype=torch.long)]
    reader = getattr(ds, 'reader', None)
    if reader is not None and not isinstance(reader, str):
        if hasattr(reader, 'iter_targets'):
            return torch.as_tensor(list(reader.iter_targets()), dtype=torch.long)
        if getattr(reader, 'targets', None) is not None:
            return torch.as_tensor(list(reader.targets), dtype=torch.long)
        if getattr(reader, 'samples', None) is not None and reader.samples and len(reader.samples[0]) == 2:
            return torch.as_tensor([t for _, t in reader.samples], dtype=torch.long)
    targets = getattr(ds, 'targets', None)
    if targets is not None:
        return torch.as_tensor(targets, dtype=torch.long)
    inner = getattr(ds, 'dataset', None)
    if inner is not None and len(inner) == len(ds):  # transform-only wrappers (ModeDataset)
        return stored_targets(inner)
    return None


def targets_as_seen(ds) -> torch.Tensor:
    """Every target as ``ds[i][1]`` yields it: the stored targets through the target transform of the dataset
    that owns them (a class remap, :class:`~timm_gkt.data.labels.TargetRemap`), still without decoding images."""
    stored = stored_targets(ds)
    if stored is None:
        return dataset_targets(ds)  # decoded: already as seen
    inner, transform = ds, None
    for _ in range(16):  # Subset, ModeDataset, ... down to the dataset whose __getitem__ applies it
        transform = getattr(inner, 'target_transform', None)
        inner = getattr(inner, 'dataset', None)
        if transform is not None or inner is None:
            break
    if transform is None:
        return stored
    return torch.as_tensor([int(transform(int(t))) for t in stored.tolist()], dtype=torch.long)


def stratified_quota(class_counts: Sequence[int], n: int) -> list[int]:
    """Images per class: one each, the rest in proportion to what each class has left (largest remainder).

    Sums to exactly ``n``; never more than a class holds. Ties go to the lower class index.
    """
    counts = [int(c) for c in class_counts]
    present = [c for c in counts if c > 0]
    if n < len(present):
        raise SubsetError(f'a subset of {n} images cannot hold all {len(present)} classes; '
                          f'ask for at least {len(present)} images (or 0 for all)')
    quota = [1 if c > 0 else 0 for c in counts]
    left = [c - q for c, q in zip(counts, quota)]
    spare, pool = n - sum(quota), sum(left)
    if pool == 0 or spare <= 0:
        return quota
    exact = [spare * c / pool for c in left]
    extra = [int(e) for e in exact]
    order = sorted(range(len(counts)), key=lambda i: (-(exact[i] - extra[i]), i))
    for i in order[:spare - sum(extra)]:
        extra[i] += 1
    return [q + e for q, e in zip(quota, extra)]


def stratified_subset_indices(targets: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """Sorted indices of a seeded sample of ``n`` images with every class present, classes in proportion.

    Vectorised: one seeded permutation, stably sorted by class, gives each class its images in
    random order; the first ``quota[c]`` of class ``c`` are kept.
    """
    targets = torch.as_tensor(targets, dtype=torch.long)
    if n >= len(targets):
        return torch.arange(len(targets))
    counts = torch.bincount(targets)
    quota = torch.tensor(stratified_quota(counts.tolist(), n), dtype=torch.long)
    gen = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(len(targets), generator=gen)
    order = perm[torch.sort(targets[perm], stable=True).indices]
    cls = targets[order]
    first_of_class = torch.cumsum(counts, 0) - counts
    rank = torch.arange(len(order)) - first_of_class[cls]
    return torch.sort(order[rank < quota[cls]]).values


def is_class_sorted(targets: torch.Tensor) -> bool:
    """Targets in class order (timm's folder reader and most hfds/ folders list images so): a contiguous slice
    of such a source is a few classes, not a sample."""
    targets = torch.as_tensor(targets)
    return targets.numel() > 1 and bool((targets[1:] >= targets[:-1]).all()) and bool(targets[0] != targets[-1])


def stratified_order(targets: torch.Tensor, seed: int) -> torch.Tensor:
    """A seeded order of all samples in which every contiguous stretch holds each class in its share (to within
    one image): each class's images in a seeded random order, interleaved by their position within the class."""
    targets = torch.as_tensor(targets, dtype=torch.long)
    gen = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(len(targets), generator=gen)
    by_class = perm[torch.sort(targets[perm], stable=True).indices]
    counts = torch.bincount(targets)
    cls = targets[by_class]
    rank = torch.arange(len(targets)) - (torch.cumsum(counts, 0) - counts)[cls]
    position = (rank.double() + 0.5) / counts[cls].double()
    return by_class[torch.sort(position, stable=True).indices]


def indices_fingerprint(indices: torch.Tensor) -> str:
    """sha256 (first 16 hex digits) of the indices as little-endian int64: equal fingerprints, equal images."""
    data = torch.as_tensor(indices, dtype=torch.int64).numpy().astype('<i8').tobytes()
    return hashlib.sha256(data).hexdigest()[:16]


def take_subset(ds, n: int, seed: int, what: str = 'subset'):
    """``(ds or a Subset of it, record)``: ``n`` = 0 (or at least the split's size) keeps everything.

    The record is what results.json should carry: ``{'size', 'of', 'seed', 'sampling',
    'per_class', 'fingerprint'}``; ``size == of`` means the whole split.
    """
    if n < 0:
        raise SubsetError(f'{what} size {n} is negative; give a number of images, or 0 for all')
    total = len(ds)
    if n == 0 or n >= total:
        return ds, {'size': total, 'of': total, 'seed': None, 'sampling': 'all', 'fingerprint': None}
    targets = dataset_targets(ds)
    indices = stratified_subset_indices(targets, n, seed)
    from torch.utils.data import Subset
    record = {
        'size': len(indices), 'of': total, 'seed': int(seed), 'sampling': 'class-stratified',
        'per_class': torch.bincount(targets[indices], minlength=int(targets.max()) + 1).tolist(),
        'fingerprint': indices_fingerprint(indices),
    }
    return Subset(ds, indices.tolist()), record
