"""Shared fixtures: prepared Fashion-MNIST, the committed micro-zoo (tests/microzoo), and tiny exported models.

Tests marked ``slow`` train, start subprocesses or need the micro-zoo; ``pytest -m "not slow"`` is the quick run.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# under pytest-xdist every worker gets its share of the cores (before torch is imported, and for the
# subprocesses the tests start): two workers with two threads each on two cores would halve everything
if os.environ.get('PYTEST_XDIST_WORKER_COUNT'):
    _share = max(1, (os.cpu_count() or 1) // int(os.environ['PYTEST_XDIST_WORKER_COUNT']))
    os.environ.setdefault('OMP_NUM_THREADS', str(_share))
    os.environ.setdefault('MKL_NUM_THREADS', str(_share))

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get('TIMM_GKT_TEST_DATA', ROOT / 'data'))
FASHION_LABELS = ['T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag',
                  'Ankle boot']


@pytest.fixture(scope='session')
def data_dir() -> Path:
    from timm_gkt.errors import DataUnavailableError
    from timm_gkt.data.sources import prepare_fashion_mnist
    try:
        prepare_fashion_mnist(DATA_DIR, allow_download=False)
    except DataUnavailableError as e:
        pytest.skip(str(e))
    return DATA_DIR


MICRO_ZOO = ROOT / 'tests' / 'microzoo'  # made by `python -m studies.zoo.build --quick --out tests/microzoo`


@pytest.fixture(scope='session')
def micro_zoo(data_dir, tmp_path_factory) -> Path:
    """The committed micro-zoo (a CNN, a ViT with LayerNorm and a Mixer, 3.6 MB), or ``TIMM_GKT_MICRO_ZOO``.

    test_build_zoo.py checks that the builder still makes such models and that the committed ones reproduce
    their recorded top-1; without a committed copy it is trained here (minutes)."""
    for candidate in (os.environ.get('TIMM_GKT_MICRO_ZOO'), MICRO_ZOO):
        if candidate and (Path(candidate) / 'index.json').is_file():
            return Path(candidate)
    out = tmp_path_factory.mktemp('microzoo') / 'zoo'
    subprocess.run([sys.executable, '-m', 'studies.zoo.build', '--quick', '--out', str(out),
                    '--data-dir', str(data_dir)], check=True, cwd=ROOT)
    return out


def tiny_vit(seed: int = 0, num_classes: int = 10, size: int = 28, patch: int = 7, head_scale: float = 1.0):
    """An untrained one-block ViT for 1-channel images, in eval mode; same seed, same weights."""
    import timm
    import torch
    torch.manual_seed(seed)
    model = timm.create_model('test_vit', num_classes=num_classes, in_chans=1, img_size=size, patch_size=patch,
                              depth=1)
    if head_scale != 1.0:
        with torch.no_grad():
            model.head.weight.mul_(head_scale)  # spread the untrained predictions over more classes
    return model.eval()


def export_tiny_model(folder: Path, model=None, *, seed: int = 0, label_names=FASHION_LABELS, size: int = 28,
                      patch: int = 7, head_scale: float = 1.0, model_config: dict | None = None):
    """Export a tiny ViT (or ``model``) in Hub layout, with label names and Fashion-MNIST preprocessing.

    Returns ``(model, 'local-dir:FOLDER')``.
    """
    from timm.models import save_for_hf
    if model is None:
        model = tiny_vit(seed, len(label_names), size, patch, head_scale)
    save_for_hf(model, folder, model_config={'label_names': list(label_names), **(model_config or {})},
                data_config={'input_size': (1, size, size), 'mean': (0.286,), 'std': (0.353,), 'crop_pct': 1.0,
                             'interpolation': 'bilinear'},
                safe_serialization=True)
    return model, f'local-dir:{folder}'


@pytest.fixture(scope='session')
def export_tiny():
    """The :func:`export_tiny_model` factory, for tests that need a model folder."""
    return export_tiny_model
