"""Shared fixtures: prepared Fashion-MNIST and a freshly trained micro-zoo, built once per session."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get('TIMM_GKT_TEST_DATA', ROOT / 'data'))


@pytest.fixture(scope='session')
def data_dir() -> Path:
    from timm_gkt.data import DataUnavailableError, prepare_fashion_mnist
    try:
        prepare_fashion_mnist(DATA_DIR, allow_download=False)
    except DataUnavailableError as e:
        pytest.skip(str(e))
    return DATA_DIR


@pytest.fixture(scope='session')
def micro_zoo(data_dir, tmp_path_factory) -> Path:
    """``scripts/build_zoo.py --quick``: a CNN, a ViT (LayerNorm) and a Mixer, trained here (~1 minute)."""
    cached = os.environ.get('TIMM_GKT_MICRO_ZOO')
    if cached and (Path(cached) / 'index.json').is_file():
        return Path(cached)
    out = tmp_path_factory.mktemp('microzoo') / 'zoo'
    subprocess.run([sys.executable, str(ROOT / 'scripts' / 'build_zoo.py'), '--quick', '--out', str(out),
                    '--data-dir', str(data_dir)], check=True, cwd=ROOT)
    return out
