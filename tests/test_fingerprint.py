"""Cache keys (timm_gkt/fingerprint.py): anything that changes a frozen model's outputs changes the key.

Each test builds the same key twice from independently constructed objects (it must not
move: no memory addresses, no set ordering), then changes one thing and expects a miss.
"""
import copy

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from timm.data import create_transform
from timm_gkt.cache.keys import (
    CacheKey, dataset_fingerprint, describe, eval_predictions_key, model_fingerprint, train_outputs_key,
)
from timm_gkt.models.load import Preprocessing
from timm_gkt.data.replay import ReplayDataset
from timm_gkt.models.frozen import FrozenModel, InStudentOrder

STUDENT = Preprocessing(input_size=(1, 28, 28), mean=(0.286,), std=(0.353,))
TEACHER = Preprocessing(input_size=(3, 32, 32), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


class Images(torch.utils.data.Dataset):
    def __init__(self, n=10, seed=0):
        rng = np.random.default_rng(seed)
        self.data = torch.from_numpy(rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        self.targets = torch.arange(n) % 10
        self.transform = None

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        return Image.fromarray(self.data[i].numpy(), mode='L'), int(self.targets[i])


class Teacher(nn.Module):
    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(3, 4, 3)
        self.norm = nn.LayerNorm(4, eps=1e-6)
        self.head = nn.Linear(4, 10)
        self.num_classes = 10

    def forward(self, x):
        return self.head(self.norm(self.conv(x).mean((2, 3))))


def replay(seed=0, size=28, dataset=None, hflip=0.5):
    transform = create_transform((1, size, size), is_training=True, hflip=hflip, mean=STUDENT.mean, std=STUDENT.std)
    return ReplayDataset(dataset if dataset is not None else Images(), 'L', seed=seed, transform=transform)


def frozen(model=None, student=STUDENT, perm=None):
    return FrozenModel(model if model is not None else Teacher(), student, TEACHER, perm)


def digest(**kw) -> str:
    return train_outputs_key(kw.pop('frozen', None) or frozen(), kw.pop('data', None) or replay(), **kw).digest


def test_the_same_inputs_give_the_same_key_every_time():
    assert digest() == digest()
    assert '0x' not in CacheKey(train_outputs_key(frozen(), replay()).parts).to_json()


def test_changing_one_weight_is_a_miss():
    model = Teacher()
    before = digest(frozen=frozen(model))
    with torch.no_grad():
        model.head.weight[3, 2] += 1e-6
    assert digest(frozen=frozen(model)) != before


def test_a_setting_outside_the_weights_is_a_miss():
    model = Teacher()
    before = digest(frozen=frozen(model))
    model.norm.eps = 1e-5  # same tensors, other outputs
    assert digest(frozen=frozen(model)) != before


def test_the_seed_is_a_miss():
    assert digest(data=replay(seed=1)) != digest(data=replay(seed=0))


def test_the_students_input_size_is_a_miss():
    """A 32 px student crops other pixels and hands the teacher another resize."""
    student32 = Preprocessing(input_size=(1, 32, 32), mean=STUDENT.mean, std=STUDENT.std)
    assert digest(frozen=frozen(student=student32), data=replay(size=32)) != digest()
    assert digest(data=replay(size=32)) != digest()  # the augmentation alone
    assert digest(frozen=frozen(student=student32)) != digest()  # the adaptor alone


def test_augmentation_settings_label_permutation_precision_and_storage_are_misses():
    base = digest()
    assert digest(data=replay(hflip=0.0)) != base
    assert digest(frozen=frozen(perm=torch.tensor([1, 0, 2, 3, 4, 5, 6, 7, 8, 9]))) != base
    assert digest(precision='bfloat16-autocast') != base
    assert digest(storage='float16') != base


def test_dataset_content_and_indices_are_misses():
    base = digest()
    assert digest(data=replay(dataset=Images(seed=1))) != base
    assert digest(data=replay(dataset=torch.utils.data.Subset(Images(), range(8)))) != base
    a = dataset_fingerprint(torch.utils.data.Subset(Images(), [0, 1, 2]))
    b = dataset_fingerprint(torch.utils.data.Subset(Images(), [0, 1, 3]))
    assert a['content'] == b['content'] and a['indices'] != b['indices']


def test_model_fingerprint_covers_buffers_and_dtype():
    bn = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2))
    before = model_fingerprint(bn)
    bn[1].running_mean.add_(0.5)
    assert model_fingerprint(bn) != before
    changed = model_fingerprint(bn)
    bn[0].register_buffer('order', torch.tensor([1, 0]), persistent=False)  # not in state_dict, still an input
    assert model_fingerprint(bn) != changed
    assert model_fingerprint(copy.deepcopy(bn).to(torch.bfloat16))['weights'] != model_fingerprint(bn)['weights']


def test_describe_has_parameters_not_addresses():
    d = describe(create_transform((1, 28, 28), is_training=True, auto_augment='rand-m9-inc1', re_prob=0.25))
    text = str(d)
    assert '0x' not in text
    assert 'RandomErasing' in text and "'probability': 0.25" in text and 'auto_contrast' in text


def test_eval_key_depends_on_eval_transform_and_label_order():
    model, ds = Teacher(), Images()
    base = eval_predictions_key(model, TEACHER, ds).digest
    assert eval_predictions_key(model, TEACHER, ds).digest == base
    assert eval_predictions_key(model, Preprocessing((3, 36, 36), TEACHER.mean, TEACHER.std, crop_pct=0.9),
                                ds).digest != base
    swapped = torch.tensor([1, 0, 2, 3, 4, 5, 6, 7, 8, 9])
    assert eval_predictions_key(InStudentOrder(model, swapped), TEACHER, ds).digest != base
    # the same network as a student or as an aligned teacher: one entry
    assert eval_predictions_key(InStudentOrder(model), TEACHER, ds).digest == base
    assert eval_predictions_key(model, TEACHER, Images(seed=2)).digest != base


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_tensor_bytes_any_dtype(dtype):
    from timm_gkt.cache.keys import tensor_bytes
    t = torch.arange(6, dtype=dtype).reshape(2, 3).t()  # non-contiguous
    assert len(tensor_bytes(t)) == 6 * t.element_size()
