"""Small user-style datasets built from Fashion-MNIST: an image folder (PNG) and the same as an ``hfds/`` dataset.

The folder has timm's usual layout, ``ROOT/train/<class>/*.png`` and ``ROOT/validation/<class>/*.png``;
class folders are the Fashion-MNIST names with ``/`` stored as ``_`` (``T-shirt_top``), so
timm's reader sorts them alphabetically, an order unlike the models'. Every image is a
lossless PNG of one Fashion-MNIST image whose index is recorded, so a test can compare a
model's top-1 on the folder with its top-1 on the same images read through torchvision.

Import the fixtures into a test module: ``from datasets_fixture import fashion_folder, fashion_hfds``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from timm_gkt.data.sources import FASHION_MNIST_LABELS, load_fashion_mnist_tensors

TRAIN_PER_CLASS = 12
VAL_PER_CLASS = 20
FOLDER_NAMES = tuple(name.replace('/', '_') for name in FASHION_MNIST_LABELS)


@dataclass
class FolderDataset:
    root: Path
    # per split: Fashion-MNIST indices (into its train or test split) in the order timm's reader lists the files
    indices: dict[str, list[int]]
    source_split: dict[str, str]  # folder split -> 'train' or 'test' of Fashion-MNIST


def first_per_class(labels: torch.Tensor, per_class: int, skip: int = 0) -> list[int]:
    """Indices of images ``skip .. skip+per_class-1`` of each class, in dataset order (deterministic)."""
    picked = []
    for c in range(10):
        idx = torch.nonzero(labels == c).flatten()[skip:skip + per_class]
        picked.extend(idx.tolist())
    return sorted(picked)


def write_split(folder: Path, images: torch.Tensor, labels: torch.Tensor, indices: list[int],
                skip_class: str | None = None) -> list[int]:
    """PNG files ``folder/<class folder>/<index:05d>.png``; returns the indices in timm's file order."""
    from PIL import Image
    written = []
    for i in indices:
        name = FOLDER_NAMES[int(labels[i])]
        if name == skip_class:
            continue
        (folder / name).mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i].numpy(), mode='L').save(folder / name / f'{i:05d}.png')
        written.append(i)
    # timm's reader sorts files by natural_key of the full path: class folder first, then the zero-padded index
    return sorted(written, key=lambda i: (FOLDER_NAMES[int(labels[i])].lower(), i))


def build_fashion_folder(root: Path, data_dir: Path, train_per_class: int = TRAIN_PER_CLASS,
                         val_per_class: int = VAL_PER_CLASS, skip_val_class: str | None = None) -> FolderDataset:
    """validation/ = the first ``val_per_class`` test images of each class, train/ = the next ``train_per_class``.

    Both come from Fashion-MNIST's test split (10k images load in a fraction of the time of
    the 60k training split); the two folders never share an image.
    """
    images, labels = load_fashion_mnist_tensors(data_dir, train=False)
    indices = {
        'train': write_split(root / 'train', images, labels,
                             first_per_class(labels, train_per_class, skip=val_per_class)),
        'validation': write_split(root / 'validation', images, labels, first_per_class(labels, val_per_class),
                                  skip_class=skip_val_class),
    }
    return FolderDataset(root, indices, {'train': 'test', 'validation': 'test'})


def build_fashion_hfds(folder: Path, out: Path) -> Path:
    """``datasets.load_dataset('imagefolder')`` of the folder, saved as parquet (the Hub's layout) under ``out``.

    Label names are the class folder names in the order ``imagefolder`` gives them (sorted),
    the situation of issue 7. Read it with ``create_dataset('hfds/' + str(out), root=CACHE, split=...)``.
    """
    import datasets
    dd = datasets.load_dataset('imagefolder', data_dir=str(folder), cache_dir=str(out.parent / 'hf-build-cache'))
    (out / 'data').mkdir(parents=True, exist_ok=True)
    for split, ds in dd.items():
        ds.to_parquet(str(out / 'data' / f'{split}-00000-of-00001.parquet'))
    return out


def build_renamed_hfds(hfds: Path, out: Path, columns: dict) -> Path:
    """A copy of an hfds/ folder with its columns renamed (``{'label': 'labels'}``), as many Hub datasets name them."""
    import datasets
    (out / 'data').mkdir(parents=True, exist_ok=True)
    for parquet in sorted((hfds / 'data').glob('*.parquet')):
        ds = datasets.Dataset.from_parquet(str(parquet), cache_dir=str(out.parent / 'hf-build-cache'))
        ds.rename_columns(columns).to_parquet(str(out / 'data' / parquet.name))
    return out


@pytest.fixture(scope='session')
def fashion_hfds_labels(fashion_hfds, tmp_path_factory) -> Path:
    """The hfds/ dataset with its label column called ``labels`` (timm's reader looks for ``label``)."""
    return build_renamed_hfds(fashion_hfds, tmp_path_factory.mktemp('fashion_hfds_labels') / 'labels_hfds',
                              {'label': 'labels'})


@pytest.fixture(scope='session')
def fashion_folder(data_dir, tmp_path_factory) -> FolderDataset:
    return build_fashion_folder(tmp_path_factory.mktemp('fashion_folder'), data_dir)


@pytest.fixture(scope='session')
def fashion_hfds(fashion_folder, tmp_path_factory) -> Path:
    pytest.importorskip('datasets')
    return build_fashion_hfds(fashion_folder.root, tmp_path_factory.mktemp('fashion_hfds') / 'fashion_hfds')
