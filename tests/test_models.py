"""Model resolution, preprocessing and label spaces (timm_gkt.models).

The InputAdaptor tests follow METHOD.md's preprocessing rule: a teacher must see the
student's pixels resized to its own input size and normalised with its own mean/std.
Expected tensors are built independently from the raw pixels, never by inverting the
student's normalisation the way the adaptor does.
"""
import json
import re

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from PIL import Image

from timm_gkt.models.load import InputAdaptor, Preprocessing, check_model_spec, label_permutation, load_model
from timm_gkt.errors import LabelSpaceError, ModelSpecError

FASHION = Preprocessing(input_size=(1, 28, 28), mean=(0.286,), std=(0.353,))
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def normalise(pixels, mean, std):
    mean = torch.tensor(mean).view(1, -1, 1, 1)
    std = torch.tensor(std).view(1, -1, 1, 1)
    return (pixels - mean) / std


def pixel_batch(channels, size, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(2, channels, size, size, generator=g)


# --- InputAdaptor --------------------------------------------------------------------------------

def test_adaptor_gives_a_larger_rgb_teacher_its_own_size_channels_and_statistics():
    teacher = Preprocessing(input_size=(3, 32, 32), mean=IMAGENET_MEAN, std=IMAGENET_STD, interpolation='bicubic')
    pixels = pixel_batch(1, 28)
    student_batch = normalise(pixels, FASHION.mean, FASHION.std)

    got = InputAdaptor(FASHION, teacher)(student_batch)

    resized = F.interpolate(pixels, size=(32, 32), mode='bicubic', antialias=True, align_corners=False)
    expected = normalise(resized.repeat(1, 3, 1, 1), IMAGENET_MEAN, IMAGENET_STD)
    assert got.shape == (2, 3, 32, 32)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    # never the student's statistics: the same pixels normalised for the student differ a lot
    assert (got - normalise(resized.repeat(1, 3, 1, 1), (0.286,) * 3, (0.353,) * 3)).abs().max() > 0.1


def test_adaptor_downsizes_rgb_student_batch_to_grey_teacher_with_luma_weights():
    student = Preprocessing(input_size=(3, 40, 40), mean=IMAGENET_MEAN, std=IMAGENET_STD)
    teacher = Preprocessing(input_size=(1, 28, 28), mean=(0.286,), std=(0.353,), interpolation='bilinear')
    pixels = pixel_batch(3, 40, seed=1)

    got = InputAdaptor(student, teacher)(normalise(pixels, IMAGENET_MEAN, IMAGENET_STD))

    resized = F.interpolate(pixels, size=(28, 28), mode='bilinear', antialias=True, align_corners=False)
    grey = 0.299 * resized[:, 0:1] + 0.587 * resized[:, 1:2] + 0.114 * resized[:, 2:3]
    assert got.shape == (2, 1, 28, 28)
    torch.testing.assert_close(got, normalise(grey, (0.286,), (0.353,)), atol=1e-5, rtol=1e-5)


def test_adaptor_grey_conversion_matches_pil_convert_l():
    rgb = np.random.default_rng(0).integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    pil_grey = torch.from_numpy(np.asarray(Image.fromarray(rgb, 'RGB').convert('L'), dtype=np.float32) / 255.0)
    identity_rgb = Preprocessing(input_size=(3, 8, 8), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    identity_grey = Preprocessing(input_size=(1, 8, 8), mean=(0.0,), std=(1.0,))
    batch = torch.from_numpy(rgb).permute(2, 0, 1).float().unsqueeze(0) / 255.0

    got = InputAdaptor(identity_rgb, identity_grey)(batch)
    # PIL rounds to uint8, so agreement is within one grey level
    assert (got[0, 0] - pil_grey).abs().max() <= 0.51 / 255


def test_adaptor_replicates_one_channel_into_three_at_the_same_size():
    teacher = Preprocessing(input_size=(3, 28, 28), mean=IMAGENET_MEAN, std=IMAGENET_STD)
    pixels = pixel_batch(1, 28, seed=2)
    got = InputAdaptor(FASHION, teacher)(normalise(pixels, FASHION.mean, FASHION.std))
    torch.testing.assert_close(got, normalise(pixels.repeat(1, 3, 1, 1), IMAGENET_MEAN, IMAGENET_STD),
                               atol=1e-5, rtol=1e-5)


def test_adaptor_only_renormalises_when_sizes_match():
    teacher = Preprocessing(input_size=(1, 28, 28), mean=(0.5,), std=(0.25,))
    pixels = pixel_batch(1, 28, seed=3)
    got = InputAdaptor(FASHION, teacher)(normalise(pixels, FASHION.mean, FASHION.std))
    torch.testing.assert_close(got, (pixels - 0.5) / 0.25, atol=1e-5, rtol=1e-5)


def test_adaptor_between_equal_configs_returns_the_same_tensor():
    x = torch.randn(2, 1, 28, 28)
    same = Preprocessing(input_size=(1, 28, 28), mean=(0.286,), std=(0.353,))
    assert InputAdaptor(FASHION, same)(x) is x


def test_adaptor_rejects_channel_counts_it_cannot_map():
    four = Preprocessing(input_size=(4, 28, 28), mean=(0.5,) * 4, std=(0.5,) * 4)
    with pytest.raises(ValueError, match='channels'):
        InputAdaptor(Preprocessing((3, 28, 28), IMAGENET_MEAN, IMAGENET_STD), four)(torch.zeros(1, 3, 28, 28))


def test_preprocessing_from_model_keeps_one_statistic_per_channel():
    model = timm.create_model('test_vit', num_classes=10, in_chans=1, img_size=28, patch_size=7, depth=1)
    model.pretrained_cfg = dict(model.pretrained_cfg, input_size=(1, 28, 28), mean=(0.5, 0.5, 0.5),
                                std=(0.25, 0.25, 0.25), crop_pct=1.0, interpolation='bilinear')
    prep = Preprocessing.from_model(model)
    assert prep.input_size == (1, 28, 28)
    assert prep.mean == (0.5,) and prep.std == (0.25,)
    assert prep.in_chans == 1 and prep.image_mode == 'L'


# --- label spaces --------------------------------------------------------------------------------

def test_label_permutation_rejects_different_class_counts_and_names_the_fix():
    with pytest.raises(LabelSpaceError) as info:
        label_permutation(None, None, student_classes=10, teacher_classes=1000, teacher='big_teacher')
    message = str(info.value)
    assert 'big_teacher' in message and '1000' in message and '10' in message
    assert 'same label space' in message or 'fine-tune' in message


def test_label_permutation_maps_teacher_logits_into_student_order():
    student = ['cat', 'dog', 'bird', 'fish']
    teacher = ['fish', 'cat', 'bird', 'dog']
    perm = label_permutation(student, teacher, 4, 4)
    assert perm.dtype == torch.long
    # each teacher logit encodes its class: 10 * (index of the class in the student order)
    teacher_logits = torch.tensor([[10.0 * student.index(name) for name in teacher]] * 2)
    assert teacher_logits[:, perm].tolist() == [[0.0, 10.0, 20.0, 30.0]] * 2


def test_label_permutation_is_none_when_aligned_or_trusted():
    names = ['a', 'b', 'c']
    assert label_permutation(names, list(names), 3, 3) is None
    assert label_permutation(None, names, 3, 3, trust_order=True) is None
    assert label_permutation(names, None, 3, 3, trust_order=True) is None
    assert label_permutation(None, None, 3, 3, trust_order=True) is None


@pytest.mark.parametrize('student, teacher, unnamed', [(['a', 'b', 'c'], None, 'teacher t'),
                                                       (None, ['a', 'b', 'c'], 'the student'),
                                                       (None, None, 'teacher t')])
def test_a_side_without_label_names_is_refused_like_a_student_unless_trusted(student, teacher, unnamed):
    """A student without names needs --trust-label-order; a teacher without names is held to the same."""
    with pytest.raises(LabelSpaceError) as info:
        label_permutation(student, teacher, 3, 3, teacher='teacher t')
    assert str(info.value).startswith(f'{unnamed} ') and 'has no label names' in str(info.value)
    assert '--trust-label-order' in str(info.value)


def test_label_permutation_matches_names_after_normalising():
    """A student named by its class folders ('T-shirt_top') and a teacher by its config ('T-shirt/top')."""
    perm = label_permutation(['T-shirt_top', 'ankle boot'], ['Ankle-boot', 'T-shirt/top'], 2, 2)
    assert perm.tolist() == [1, 0]


def test_label_permutation_rejects_different_name_sets_quoting_the_teachers_names():
    with pytest.raises(LabelSpaceError, match='label names') as info:
        label_permutation(['a', 'b', 'c'], ['a', 'b', 'd'], 3, 3, teacher='teacher t')
    assert str(info.value) == ("teacher t has other label names than the student ('d', where the student has 'c'); "
                               "use a teacher trained on the same classes.")


def test_label_permutation_rejects_teacher_classes_missing_from_student():
    with pytest.raises(LabelSpaceError):
        label_permutation(['a', 'a', 'b'], ['a', 'b', 'c'], 3, 3)


# --- model specs ---------------------------------------------------------------------------------

@pytest.mark.parametrize('typo,suggestion', [('resnet5O', 'resnet50'), ('test_vitt', 'test_vit')])
def test_unknown_timm_name_suggests_close_names(typo, suggestion):
    with pytest.raises(ModelSpecError) as info:
        check_model_spec(typo)
    message = str(info.value)
    assert repr(typo) in message
    assert f'Did you mean {suggestion}' in message


@pytest.mark.parametrize('spec', ['test_vit', 'resnet50.a1_in1k', 'hf-hub:org/repo'])
def test_valid_specs_pass(spec):
    check_model_spec(spec)


def test_hub_spec_without_repository_is_rejected():
    with pytest.raises(ModelSpecError, match='hf-hub:ORG/REPO'):
        check_model_spec('hf-hub:')


def test_missing_local_dir_is_rejected(tmp_path):
    with pytest.raises(ModelSpecError, match='does not exist'):
        check_model_spec(f'local-dir:{tmp_path / "nowhere"}')


def test_local_dir_without_config_is_rejected(tmp_path):
    (tmp_path / 'model.safetensors').write_bytes(b'')
    with pytest.raises(ModelSpecError, match='config.json'):
        check_model_spec(f'local-dir:{tmp_path}')


def test_bare_folder_path_suggests_local_dir_prefix(tmp_path):
    folder = tmp_path / 'my_model'
    folder.mkdir()
    with pytest.raises(ModelSpecError, match=re.escape(f'local-dir:{folder}')):
        check_model_spec(str(folder))


def test_load_model_rejects_unknown_name_before_creating_anything():
    with pytest.raises(ModelSpecError, match='resnet50'):
        load_model('resnet5O', pretrained=False)


# --- load_model from an exported folder ----------------------------------------------------------

LABEL_NAMES = ['T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag',
               'Ankle boot']


@pytest.fixture(scope='module')
def exported(tmp_path_factory, export_tiny):
    folder = tmp_path_factory.mktemp('export') / 'fmnist_vit'
    model, _ = export_tiny(folder, label_names=LABEL_NAMES)
    return model, folder


def test_local_dir_model_reloads_with_identical_logits(exported):
    model, folder = exported
    resolved = load_model(f'local-dir:{folder}')
    assert not resolved.model.training
    x = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(resolved.model(x), model(x))


def test_local_dir_model_carries_its_saved_preprocessing_and_label_names(exported):
    _, folder = exported
    assert json.loads((folder / 'config.json').read_text())['label_names'] == LABEL_NAMES
    resolved = load_model(f'local-dir:{folder}')
    assert resolved.preprocessing.input_size == (1, 28, 28)
    assert resolved.preprocessing.mean == pytest.approx((0.286,))
    assert resolved.preprocessing.std == pytest.approx((0.353,))
    assert resolved.preprocessing.crop_pct == 1.0
    assert resolved.preprocessing.interpolation == 'bilinear'
    assert resolved.label_names == tuple(LABEL_NAMES)
    assert resolved.num_classes == 10
    assert resolved.source == 'local-dir'
    assert resolved.name == 'fmnist_vit'
    # the reloaded model answers in the student's order: no permutation needed against itself
    assert label_permutation(resolved.label_names, LABEL_NAMES, 10, 10) is None
