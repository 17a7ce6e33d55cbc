"""Splits: timm's split names, resolved per dataset kind and checked to exist; HF-style slices.

``--train-split train[:55000] --val-split train[55000:]`` (or ``train[:90%]`` / ``train[90%:]``)
carves a validation split out of the training data, for every dataset kind: the slice is
taken here, not by the reader, so it means the same for torchvision, folders and ``hfds/``:
a contiguous range of the base split in timm's order, or, for a source sorted by class (an
image folder), the same range of a seeded class-stratified order (:func:`take_slice`).

Why checks are needed: timm's ``create_dataset`` maps every name that is not ``train`` to a
torchvision dataset's test split, and for a folder root without the split's subfolder it
silently reads the whole root (train and validation images together).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataSplitError

TRAIN_SYNONYMS = ('train', 'training')  # the names timm's _search_split tries, in its order
EVAL_SYNONYMS = ('validation', 'val', 'valid', 'eval', 'evaluation')
# torchvision datasets timm opens with train=True/False: 'test' is their only held-out split
TORCH_TRAIN_TEST = ('mnist', 'fashion_mnist', 'kmnist', 'cifar10', 'cifar100', 'qmnist')

_SLICE = re.compile(r'^(?P<base>[^\[\]]+?)(?:\[(?P<start>[+-]?\d+%?)?:(?P<stop>[+-]?\d+%?)?\])?$')



@dataclass(frozen=True)
class SplitSlice:
    """``base[start:stop]``; a bound is an image count or, ending in ``%``, a share of the base split."""
    base: str
    start: str | None = None
    stop: str | None = None

    @property
    def sliced(self) -> bool:
        return self.start is not None or self.stop is not None

    def __str__(self):
        return f'{self.base}[{self.start or ""}:{self.stop or ""}]' if self.sliced else self.base

    def bounds(self, n: int) -> tuple[int, int]:
        """Python-slice bounds in ``range(n)``; percentages round to the nearest image (half up)."""
        def resolve(bound: str | None) -> int | None:
            if bound is None:
                return None
            if bound.endswith('%'):
                pct = int(bound[:-1])
                return (abs(pct) * n + 50) // 100 * (1 if pct >= 0 else -1)
            return int(bound)
        start, stop, _ = slice(resolve(self.start), resolve(self.stop)).indices(n)
        return start, max(start, stop)


def parse_split(text: str) -> SplitSlice:
    """``'train'``, ``'train[:55000]'``, ``'train[90%:]'``; anything else is one sentence."""
    m = _SLICE.match(text.strip()) if text else None
    if m is None or '+' in m.group('base'):
        raise DataSplitError(f'split {text!r} is not NAME or NAME[START:STOP]; write e.g. train, '
                             f'train[:55000] or train[90%:] (one split, one contiguous slice)')
    for bound in (m.group('start'), m.group('stop')):
        if bound and bound.endswith('%') and abs(int(bound[:-1])) > 100:
            raise DataSplitError(f'split {text!r} slices beyond 100%; use percentages between -100% and 100%')
    return SplitSlice(m.group('base').strip(), m.group('start'), m.group('stop'))


def dataset_kind(dataset: str) -> str:
    """'torch', 'hfds', 'hfids', 'tfds', 'wds' or 'folder' (timm's prefix rules: case-insensitive prefix)."""
    prefix, sep, rest = dataset.partition('/')
    prefix = prefix.lower() if sep else ''
    if prefix == 'torch':
        return 'folder' if rest.lower() in ('folder', 'image_folder') else 'torch'
    return prefix if prefix in ('hfds', 'hfids', 'tfds', 'wds') else 'folder'


def _torch_name(dataset: str) -> str:
    return dataset.split('/', 2)[-1].lower()


def default_val_split(dataset: str) -> str:
    """The held-out split to evaluate on when ``--val-split`` is not given."""
    if dataset_kind(dataset) == 'torch' and _torch_name(dataset) in TORCH_TRAIN_TEST:
        return 'test'
    return 'validation'


@dataclass(frozen=True)
class ResolvedSplit:
    """A split that exists: ``timm_split`` is what to pass to ``create_dataset``, ``key`` names the images."""
    requested: str
    timm_split: str
    slice: SplitSlice
    key: str  # equal keys = the same images before slicing (for the overlap check)
    note: str | None = None


def _torch_split(dataset: str, s: SplitSlice) -> tuple[str, str | None]:
    name = _torch_name(dataset)
    if name not in TORCH_TRAIN_TEST:
        return s.base, None  # torchvision checks imagenet / places365 / inaturalist split names itself
    if s.base in TRAIN_SYNONYMS:
        return 'train', None
    if s.base == 'test':
        return 'test', None
    if s.base in EVAL_SYNONYMS:
        return 'test', f'{dataset} has no {s.base} split; its test split is the held-out one'
    raise DataSplitError(f'{dataset} has the splits train and test, not {s.base!r}; pass --val-split test, or '
                         f'carve one out of train with --train-split "train[:90%]" --val-split "train[90%:]"')


def _folder_split(root: Path, dataset: str, s: SplitSlice) -> tuple[str, str | None]:
    if root.is_file():
        return s.base, f'{root.name} is one archive without splits'  # every split is the whole archive
    if not root.is_dir():
        raise DataSplitError(f'data folder {root} does not exist; pass --data-dir with the folder that holds '
                             f'{s.base}/<class>/<images>')
    names = [s.base] + [n for syn in (TRAIN_SYNONYMS, EVAL_SYNONYMS) if s.base in syn for n in syn]
    for name in names:
        if (root / name).exists():
            return name, None if name == s.base else f'split {s.base} read from folder {name}/'
    present = sorted(p.name for p in root.iterdir() if p.is_dir())
    hint = f'it has {", ".join(present[:6])}' if present else 'it has no subfolders'
    if s.base in TRAIN_SYNONYMS or not any(p in TRAIN_SYNONYMS for p in present):
        fix = f'pass the split whose folder holds the images, e.g. --train-split {present[0] if present else "train"}'
    else:
        other = next((p for p in present if p not in TRAIN_SYNONYMS), None)
        fix = (f'pass --val-split {other}, or ' if other else '') + ('carve one out of train: --train-split '
                                                                   '"train[:90%]" --val-split "train[90%:]" (seeded, '
                                                                   'every class in its share)')
    raise DataSplitError(f'split {s.base!r} has no folder under {root} ({hint}); {fix}')


def hfds_split_names(name: str, cache_dir: str | None = None) -> list[str]:
    """Split names of an HF dataset (a local folder or a Hub id in the datasets cache), without loading it."""
    import datasets
    try:
        return list(datasets.get_dataset_split_names(name, cache_dir=cache_dir))
    except Exception as e:  # missing folder, unknown id, offline: all end the same way for the user
        raise DataSplitError(f'cannot list the splits of hfds/{name} ({type(e).__name__}: {str(e)[:120]}); '
                             f'check the dataset name or folder, or run once online so it is cached') from None


def resolve_split(dataset: str, root: str | Path, text: str) -> ResolvedSplit:
    """Check that a split exists for this dataset and say what timm should be asked for; never a fallback."""
    s = parse_split(text)
    kind = dataset_kind(dataset)
    note = None
    if kind == 'torch':
        timm_split, note = _torch_split(dataset, s)
        key = f'{dataset}:{timm_split}'
    elif kind == 'folder':
        timm_split, note = _folder_split(Path(root), dataset, s)
        key = f'{dataset}:{timm_split}'
    elif kind == 'hfds':
        name = dataset.split('/', 1)[1]
        present = hfds_split_names(name, str(root) if root else None)
        if s.base not in present:
            raise DataSplitError(f'hfds/{name} has the splits {", ".join(present)}, not {s.base!r}; pass one of them, '
                                 f'or slice one out of train (--train-split "train[:90%]" --val-split "train[90%:]")')
        timm_split, key = s.base, f'{dataset}:{s.base}'
    else:  # iterable datasets stream their splits; their readers check the name
        if s.sliced:
            raise DataSplitError(f'{dataset} is streamed, so {text!r} cannot be sliced here; use the reader\'s own '
                                 f'split syntax or an hfds/ (map-style) dataset')
        timm_split, key = s.base, f'{dataset}:{s.base}'
    return ResolvedSplit(text, timm_split, s, key, note)


def check_disjoint(train: ResolvedSplit, evaluation: ResolvedSplit, n: int | None) -> None:
    """Refuse evaluation images that are also transfer images (the same split, overlapping slices).

    ``n`` is the size of the shared base split (needed only when both are slices of it).
    """
    if train.key != evaluation.key:
        return
    if not (train.slice.sliced or evaluation.slice.sliced):
        raise DataSplitError(f'train split {train.requested!r} and evaluation split {evaluation.requested!r} are the '
                             f'same images; evaluate on a held-out split or slice them apart, e.g. '
                             f'"{train.slice.base}[:90%]" and "{train.slice.base}[90%:]"')
    if n is None:
        return
    a0, a1 = train.slice.bounds(n)
    b0, b1 = evaluation.slice.bounds(n)
    shared = max(0, min(a1, b1) - max(a0, b0))
    if shared:
        raise DataSplitError(f'train split {train.requested!r} and evaluation split {evaluation.requested!r} share '
                             f'{shared} of {n} images; make the slices disjoint, e.g. "{train.slice.base}[:90%]" '
                             f'and "{train.slice.base}[90%:]"')


def take_slice(ds, s: SplitSlice, seed: int) -> tuple[object, str | None]:
    """The slice of ``ds`` and how it was taken: ``(ds, None)`` when not sliced; a contiguous range of a source
    in no class order; of a class-sorted source (image folders), the same range of a seeded class-stratified
    order (:func:`~timm_gkt.data.subsets.stratified_order`), so ``train[90%:]`` holds 10 % of every class
    rather than the last class, and ``train[:90%]`` the rest. An empty slice is an error."""
    if not s.sliced:
        return ds, None
    from torch.utils.data import Subset

    from .subsets import is_class_sorted, stored_targets, stratified_order
    start, stop = s.bounds(len(ds))
    if stop <= start:
        raise DataSplitError(f'split {s} holds no images (the base split has {len(ds)}); widen the slice')
    targets = stored_targets(ds)  # None: only decoding every image would tell, too dear for a slice
    if targets is None or not is_class_sorted(targets):
        return Subset(ds, range(start, stop)), 'contiguous'
    indices = sorted(stratified_order(targets, seed)[start:stop].tolist())
    return Subset(ds, indices), f'class-stratified (the source is sorted by class), seed {seed}'


def apply_slice(ds, s: SplitSlice, seed: int = 42):
    """:func:`take_slice` without the description (``ds`` itself when not sliced)."""
    return take_slice(ds, s, seed)[0]
