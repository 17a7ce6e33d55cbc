"""Datasets and loaders: offline Fashion-MNIST, per-model channel modes and eval views.

Fashion-MNIST is prepared into the layout torchvision (and so timm's
``create_dataset('torch/fashion_mnist', root=...)``) reads: un-gzipped IDX files under
``ROOT/FashionMNIST/raw/``. Sources, in order: files already there, the Debian package
``dataset-fashion-mnist``, a torchvision download when online (``python -m timm_gkt.data prepare``).
"""
from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch.utils.data import Dataset
from ..errors import DataUnavailableError

DEBIAN_FASHION_MNIST = Path(os.environ.get('TIMM_GKT_FASHION_MNIST_SRC', '/usr/share/datasets/fashion-mnist'))
FASHION_MNIST_FILES = (
    'train-images-idx3-ubyte',
    'train-labels-idx1-ubyte',
    't10k-images-idx3-ubyte',
    't10k-labels-idx1-ubyte',
)
FASHION_MNIST_LABELS = (
    'T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat',
    'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot',
)
# Pixel statistics of the Fashion-MNIST training split (single channel, [0, 1] scale).
FASHION_MNIST_MEAN = (0.2860,)
FASHION_MNIST_STD = (0.3530,)



def fashion_mnist_raw_dir(root: str | os.PathLike) -> Path:
    return Path(root) / 'FashionMNIST' / 'raw'


def _has_raw_files(raw_dir: Path) -> bool:
    return all((raw_dir / name).is_file() for name in FASHION_MNIST_FILES)


def fashion_mnist_ready(root: str | os.PathLike) -> bool:
    """Is Fashion-MNIST already prepared under ``root``?"""
    return _has_raw_files(fashion_mnist_raw_dir(root))


def prepare_fashion_mnist(
        root: str | os.PathLike,
        debian_dir: str | os.PathLike | None = None,
        allow_download: bool = True,
) -> Path:
    """Make Fashion-MNIST readable by torchvision under ``root`` and return the raw folder.

    A complete copy already in place is never touched: Debian's .gz files have other
    checksums than torchvision's, so letting torchvision "verify" them would start a download.
    """
    raw_dir = fashion_mnist_raw_dir(root)
    if _has_raw_files(raw_dir):
        return raw_dir

    debian_dir = Path(debian_dir) if debian_dir is not None else DEBIAN_FASHION_MNIST
    if all((debian_dir / f'{name}.gz').is_file() for name in FASHION_MNIST_FILES):
        raw_dir.mkdir(parents=True, exist_ok=True)
        for name in FASHION_MNIST_FILES:
            tmp = raw_dir / f'{name}.partial'
            with gzip.open(debian_dir / f'{name}.gz', 'rb') as src, open(tmp, 'wb') as dst:
                shutil.copyfileobj(src, dst)
            tmp.replace(raw_dir / name)  # atomic: an interrupted copy never looks complete
        return raw_dir

    if allow_download:
        try:
            from torchvision.datasets import FashionMNIST
            FashionMNIST(root=str(root), train=True, download=True)
            FashionMNIST(root=str(root), train=False, download=True)
        except Exception:  # network errors come in many types; the message below says what to do
            pass
        if _has_raw_files(raw_dir):
            return raw_dir

    raise DataUnavailableError(
        f'Fashion-MNIST is not in {raw_dir} and could not be obtained: install it offline with '
        f'`apt-get install dataset-fashion-mnist` (files in {debian_dir}) or run once with internet '
        f'access so torchvision can download it.'
    )


class ImageMode:
    """Convert a PIL image to the channel mode a model was trained with ('L' or 'RGB').

    timm's transforms assume the image already has the model's channel count; a
    3-value mean on a 1-channel image fails inside Normalize.
    """

    def __init__(self, mode: str):
        self.mode = mode

    def __call__(self, img):
        return img if img.mode == self.mode else img.convert(self.mode)

    def __repr__(self):
        return f'{self.__class__.__name__}({self.mode!r})'


class _ImageWrapper(Dataset):
    """A map-style dataset of PIL images whose own transform is switched off: the wrapper transforms."""

    def __init__(self, dataset):
        self.dataset = dataset
        if hasattr(self.dataset, 'transform'):
            self.dataset.transform = None

    def __len__(self):
        return len(self.dataset)


class ModeDataset(_ImageWrapper):
    """Wrap a map-style image dataset: convert each image to ``mode``, then apply ``transform``.

    ``transform`` is a plain attribute so timm's ``create_loader`` can set it, as it does
    for its own datasets.
    """

    def __init__(self, dataset, mode: str, transform: Callable | None = None):
        super().__init__(dataset)
        self.mode = ImageMode(mode)
        self.transform = transform

    def __getitem__(self, index):
        img, target = self.dataset[index]
        img = self.mode(img)
        if self.transform is not None:
            img = self.transform(img)
        return img, target


class MultiViewDataset(_ImageWrapper):
    """Yield one view of each image per transform: ``((view_0, view_1, ...), target)``.

    Evaluation passes every model the same images through its own eval transform in
    a single pass over the data.
    """

    def __init__(self, dataset, views: Sequence[tuple[str, Callable]]):
        super().__init__(dataset)
        self.views = list(views)  # (image mode, transform) per view

    def __getitem__(self, index):
        img, target = self.dataset[index]
        out = []
        for mode, transform in self.views:
            out.append(transform(img if img.mode == mode else img.convert(mode)))
        return tuple(out), target


def create_image_dataset(name: str, root: str | os.PathLike, split: str, slice_seed: int = 42, **kwargs):
    """``timm.data.create_dataset`` with Fashion-MNIST prepared first when that is the dataset.

    A sliced split (``'train[55000:]'``) is checked like ``--val-split`` and returned as a ``Subset`` of its base
    split, taken as a run with ``--seed slice_seed`` takes it (:func:`~timm_gkt.data.splits.take_slice`): timm
    itself would read any torchvision split name other than train as the test split."""
    from timm.data import create_dataset
    from .splits import apply_slice, parse_split, resolve_split
    if '[' in split and parse_split(split).sliced:
        resolved = resolve_split(name, root, split)
        return apply_slice(create_image_dataset(name, root, resolved.timm_split, **kwargs), resolved.slice,
                           slice_seed)
    if name.lower() in ('torch/fashion_mnist', 'torch/fashionmnist'):
        prepare_fashion_mnist(root)
        # never let torchvision download over a prepared copy (see prepare_fashion_mnist)
        kwargs['download'] = False
    return create_dataset(name, root=str(root), split=split, **kwargs)


def load_fashion_mnist_tensors(root: str | os.PathLike, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Whole split as uint8 images [N, 28, 28] and int64 labels, for quick in-memory work."""
    from torchvision.datasets import FashionMNIST
    prepare_fashion_mnist(root)
    ds = FashionMNIST(root=str(root), train=train, download=False)
    return ds.data, ds.targets
