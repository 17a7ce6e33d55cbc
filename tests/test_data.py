"""Offline Fashion-MNIST preparation and per-model image modes (timm_gkt.data).

A fake Debian ``dataset-fashion-mnist`` folder with tiny but valid gzipped IDX files
stands in for the real one; torchvision's download is replaced so no test can reach
the network.
"""
import gzip
import os
import struct

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

import timm.data
from timm_gkt.data import __main__ as gkt_data_cli
from timm_gkt.data import sources as gkt_data
from timm_gkt.data.sources import (
    FASHION_MNIST_FILES, ImageMode, ModeDataset, MultiViewDataset, create_image_dataset,
    fashion_mnist_raw_dir, load_fashion_mnist_tensors, prepare_fashion_mnist,
)
from timm_gkt.errors import DataUnavailableError
from timm_gkt.models.load import image_mode_for_channels
from timm_gkt.models.load import Preprocessing
from timm_gkt.errors import DataSplitError

N_TRAIN, N_TEST = 5, 3


def idx_images(images: np.ndarray) -> bytes:
    n, h, w = images.shape
    return struct.pack('>IIII', 2051, n, h, w) + images.astype(np.uint8).tobytes()


def idx_labels(labels: np.ndarray) -> bytes:
    return struct.pack('>II', 2049, len(labels)) + labels.astype(np.uint8).tobytes()


def fake_split(n, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8), rng.integers(0, 10, size=n, dtype=np.uint8)


def write_debian_folder(folder, seed=0):
    """The four .gz files the Debian package installs; returns the un-gzipped bytes by name."""
    folder.mkdir(parents=True, exist_ok=True)
    train_x, train_y = fake_split(N_TRAIN, seed)
    test_x, test_y = fake_split(N_TEST, seed + 1)
    contents = {
        'train-images-idx3-ubyte': idx_images(train_x),
        'train-labels-idx1-ubyte': idx_labels(train_y),
        't10k-images-idx3-ubyte': idx_images(test_x),
        't10k-labels-idx1-ubyte': idx_labels(test_y),
    }
    for name, payload in contents.items():
        with gzip.open(folder / f'{name}.gz', 'wb') as f:
            f.write(payload)
    return contents, (train_x, train_y), (test_x, test_y)


@pytest.fixture
def debian(tmp_path):
    return write_debian_folder(tmp_path / 'debian')


@pytest.fixture
def download_calls(monkeypatch):
    """Replace torchvision's download with one that records the call and fails like an offline machine."""
    calls = []

    def offline_download(self):
        calls.append(self.train)
        raise RuntimeError('Error downloading train-images-idx3-ubyte.gz: no network')

    monkeypatch.setattr(torchvision.datasets.FashionMNIST, 'download', offline_download)
    return calls


# --- prepare_fashion_mnist -----------------------------------------------------------------------

def test_prepare_unzips_debian_files_into_torchvision_layout(tmp_path, debian, download_calls):
    contents, _, _ = debian
    root = tmp_path / 'data'
    raw = prepare_fashion_mnist(root, debian_dir=tmp_path / 'debian', allow_download=False)
    assert raw == root / 'FashionMNIST' / 'raw' == fashion_mnist_raw_dir(root)
    assert sorted(p.name for p in raw.iterdir()) == sorted(FASHION_MNIST_FILES)  # no .partial left behind
    for name, payload in contents.items():
        assert (raw / name).read_bytes() == payload
    assert download_calls == []


def test_prepare_uses_the_default_debian_folder(tmp_path, debian, download_calls, monkeypatch):
    monkeypatch.setattr(gkt_data, 'DEBIAN_FASHION_MNIST', tmp_path / 'debian')
    raw = prepare_fashion_mnist(tmp_path / 'data', allow_download=False)
    assert (raw / 't10k-labels-idx1-ubyte').read_bytes() == debian[0]['t10k-labels-idx1-ubyte']


def test_prepare_leaves_a_complete_copy_untouched(tmp_path, debian, download_calls):
    root = tmp_path / 'data'
    raw = prepare_fashion_mnist(root, debian_dir=tmp_path / 'debian', allow_download=False)
    old = 1_000_000_000
    for name in FASHION_MNIST_FILES:
        os.utime(raw / name, (old, old))
    before = {name: ((raw / name).stat().st_mtime_ns, (raw / name).read_bytes()) for name in FASHION_MNIST_FILES}

    other = tmp_path / 'other_debian'
    write_debian_folder(other, seed=7)  # different bytes: copying them would show
    assert prepare_fashion_mnist(root, debian_dir=other, allow_download=True) == raw

    after = {name: ((raw / name).stat().st_mtime_ns, (raw / name).read_bytes()) for name in FASHION_MNIST_FILES}
    assert after == before
    assert all(mtime == old * 10 ** 9 for mtime, _ in after.values())
    assert download_calls == []


def test_prepare_completes_a_partial_copy_from_debian(tmp_path, debian, download_calls):
    contents, _, _ = debian
    raw = fashion_mnist_raw_dir(tmp_path / 'data')
    raw.mkdir(parents=True)
    (raw / 'train-images-idx3-ubyte').write_bytes(contents['train-images-idx3-ubyte'])
    prepare_fashion_mnist(tmp_path / 'data', debian_dir=tmp_path / 'debian', allow_download=False)
    for name, payload in contents.items():
        assert (raw / name).read_bytes() == payload


def assert_names_both_ways(message):
    assert 'apt-get install dataset-fashion-mnist' in message
    assert 'internet' in message and 'torchvision' in message


def test_prepare_without_source_or_download_names_both_ways_to_get_the_data(tmp_path, download_calls):
    empty = tmp_path / 'no_debian'
    empty.mkdir()
    with pytest.raises(DataUnavailableError) as info:
        prepare_fashion_mnist(tmp_path / 'data', debian_dir=empty, allow_download=False)
    assert_names_both_ways(str(info.value))
    assert str(empty) in str(info.value)
    assert download_calls == []


def test_prepare_offline_with_download_allowed_raises_the_same_error(tmp_path, download_calls):
    empty = tmp_path / 'no_debian'
    empty.mkdir()
    with pytest.raises(DataUnavailableError) as info:
        prepare_fashion_mnist(tmp_path / 'data', debian_dir=empty, allow_download=True)
    assert_names_both_ways(str(info.value))
    assert download_calls, 'torchvision download was not attempted'


def test_incomplete_debian_folder_is_not_a_source(tmp_path, debian, download_calls):
    (tmp_path / 'debian' / 't10k-labels-idx1-ubyte.gz').unlink()
    with pytest.raises(DataUnavailableError):
        prepare_fashion_mnist(tmp_path / 'data', debian_dir=tmp_path / 'debian', allow_download=False)


def test_prepare_command_line(tmp_path, debian, download_calls, capsys):
    root = tmp_path / 'data'
    gkt_data_cli.main(['prepare', '--data-dir', str(root), '--source', str(tmp_path / 'debian'), '--no-download'])
    assert 'ready' in capsys.readouterr().out
    assert (fashion_mnist_raw_dir(root) / 'train-labels-idx1-ubyte').is_file()
    empty = tmp_path / 'empty'
    empty.mkdir()
    with pytest.raises(SystemExit, match='apt-get install dataset-fashion-mnist'):
        gkt_data_cli.main(['prepare', '--data-dir', str(tmp_path / 'other'), '--source', str(empty), '--no-download'])


# --- reading the prepared copy -------------------------------------------------------------------

def test_timm_create_dataset_reads_the_prepared_files(tmp_path, debian, download_calls):
    _, (train_x, train_y), (test_x, test_y) = debian
    root = tmp_path / 'data'
    prepare_fashion_mnist(root, debian_dir=tmp_path / 'debian', allow_download=False)

    train = timm.data.create_dataset('torch/fashion_mnist', root=str(root), split='train', download=False)
    assert len(train) == N_TRAIN
    assert train.targets.tolist() == train_y.tolist()
    img, label = train[2]
    assert img.mode == 'L' and img.size == (28, 28)
    assert np.array_equal(np.asarray(img), train_x[2])
    assert label == int(train_y[2])

    test = timm.data.create_dataset('torch/fashion_mnist', root=str(root), split='validation', download=False)
    assert len(test) == N_TEST
    assert test.targets.tolist() == test_y.tolist()
    assert download_calls == []


def test_create_image_dataset_and_tensors_use_the_prepared_copy(tmp_path, debian, download_calls):
    _, _, (test_x, test_y) = debian
    root = tmp_path / 'data'
    prepare_fashion_mnist(root, debian_dir=tmp_path / 'debian', allow_download=False)
    assert len(create_image_dataset('torch/fashion_mnist', root, split='train')) == N_TRAIN
    images, labels = load_fashion_mnist_tensors(root, train=False)
    assert images.dtype == torch.uint8 and images.shape == (N_TEST, 28, 28)
    assert torch.equal(images, torch.from_numpy(test_x))
    assert labels.tolist() == test_y.tolist()
    assert download_calls == []


def test_a_sliced_split_is_that_slice_of_its_base_split_not_timms_test_fallback(tmp_path, debian):
    _, (train_x, train_y), _ = debian
    root = tmp_path / 'data'
    prepare_fashion_mnist(root, debian_dir=tmp_path / 'debian', allow_download=False)
    tail = create_image_dataset('torch/fashion_mnist', root, split='train[1:]')
    assert len(tail) == N_TRAIN - 1 != N_TEST  # timm alone reads 'train[1:]' as the whole test split
    assert [tail[i][1] for i in range(len(tail))] == train_y[1:].tolist()
    assert np.array_equal(np.asarray(tail[0][0]), train_x[1])
    with pytest.raises(DataSplitError, match="not 'extra'"):
        create_image_dataset('torch/fashion_mnist', root, split='extra[:2]')


# --- image modes ---------------------------------------------------------------------------------

def grey_image(seed=0, size=28):
    array = np.random.default_rng(seed).integers(0, 256, size=(size, size), dtype=np.uint8)
    return Image.fromarray(array, 'L'), array


class TinyImageDataset(torch.utils.data.Dataset):
    """Like torchvision's datasets: PIL 'L' images and a ``transform`` attribute."""

    def __init__(self, n=3):
        self.items = [(grey_image(seed)[0], seed % 10) for seed in range(n)]
        self.transform = lambda img: pytest.fail('the wrapped dataset transform must be switched off')

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        img, target = self.items[index]
        if self.transform is not None:
            img = self.transform(img)
        return img, target


def test_image_mode_for_channels():
    assert image_mode_for_channels(1) == 'L'
    assert image_mode_for_channels(3) == 'RGB'
    with pytest.raises(ValueError, match='1 or 3'):
        image_mode_for_channels(4)


def test_image_mode_converts_grey_to_rgb_and_keeps_matching_images():
    img, array = grey_image()
    rgb = ImageMode('RGB')(img)
    assert rgb.mode == 'RGB'
    assert all(np.array_equal(np.asarray(rgb)[..., c], array) for c in range(3))
    assert ImageMode('L')(img) is img
    assert ImageMode('L')(rgb).mode == 'L'


def test_mode_dataset_gives_three_channels_to_an_rgb_model_and_one_to_a_grey_model():
    to_tensor = torchvision.transforms.functional.pil_to_tensor
    rgb = ModeDataset(TinyImageDataset(), 'RGB', transform=to_tensor)
    grey = ModeDataset(TinyImageDataset(), 'L', transform=to_tensor)
    x_rgb, y = rgb[1]
    x_grey, _ = grey[1]
    assert len(rgb) == 3 and y == 1
    assert x_rgb.shape == (3, 28, 28) and x_grey.shape == (1, 28, 28)
    assert torch.equal(x_rgb, x_grey.expand(3, -1, -1))


def test_mode_dataset_with_timm_eval_transform_for_an_imagenet_model():
    prep = Preprocessing(input_size=(3, 32, 32), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                         interpolation='bicubic', crop_pct=0.875)
    ds = ModeDataset(TinyImageDataset(), prep.image_mode, transform=prep.eval_transform())
    x, _ = ds[0]
    assert x.shape == (3, 32, 32)


def test_multi_view_dataset_yields_one_view_per_model():
    grey_prep = Preprocessing(input_size=(1, 28, 28), mean=(0.286,), std=(0.353,), crop_pct=1.0)
    rgb_prep = Preprocessing(input_size=(3, 32, 32), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                             interpolation='bicubic', crop_pct=0.875)
    ds = MultiViewDataset(TinyImageDataset(), [
        (grey_prep.image_mode, grey_prep.eval_transform()),
        (rgb_prep.image_mode, rgb_prep.eval_transform()),
    ])
    (grey_view, rgb_view), target = ds[2]
    assert len(ds) == 3 and target == 2
    assert grey_view.shape == (1, 28, 28)
    assert rgb_view.shape == (3, 32, 32)

    # the grey view is the image itself, normalised with the grey model's statistics
    pixels = torch.from_numpy(grey_image(2)[1]).float() / 255.0
    torch.testing.assert_close(grey_view[0], (pixels - 0.286) / 0.353, atol=1e-5, rtol=1e-5)
    # the RGB view comes from a grey image: un-normalised, its three channels are equal
    mean = torch.tensor(rgb_prep.mean).view(3, 1, 1)
    std = torch.tensor(rgb_prep.std).view(3, 1, 1)
    rgb_pixels = rgb_view * std + mean
    torch.testing.assert_close(rgb_pixels[0], rgb_pixels[1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(rgb_pixels[0], rgb_pixels[2], atol=1e-5, rtol=1e-5)


def test_multi_view_dataset_over_prepared_fashion_mnist(tmp_path, debian, download_calls):
    root = tmp_path / 'data'
    prepare_fashion_mnist(root, debian_dir=tmp_path / 'debian', allow_download=False)
    base = timm.data.create_dataset('torch/fashion_mnist', root=str(root), split='train', download=False)
    grey_prep = Preprocessing(input_size=(1, 28, 28), mean=(0.286,), std=(0.353,), crop_pct=1.0)
    rgb_prep = Preprocessing(input_size=(3, 40, 40), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    ds = MultiViewDataset(base, [(p.image_mode, p.eval_transform()) for p in (grey_prep, rgb_prep)])
    views, target = ds[0]
    assert [tuple(v.shape) for v in views] == [(1, 28, 28), (3, 40, 40)]
    assert target == int(debian[1][1][0])
