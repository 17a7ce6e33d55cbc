"""Short model names of the paper -> timm architectures (timm_gkt.models.spec.resolve_spec); random-init models
only."""
import pytest
import torch

from timm_gkt.errors import ModelSpecError
from timm_gkt.models.spec import TIMM, parse_spec, resolve_spec, size_variants


@pytest.mark.parametrize('short, resolved', [
    ('pit_b', 'pit_b_224'), ('volo_d2', 'volo_d2_224'), ('resmlp_36', 'resmlp_36_224'),
    ('cait_m36', 'cait_m36_384'),  # no 224: the only size
    ('pit_b.in1k', 'pit_b_224.in1k'),  # a pretrained tag stays
])
def test_headline_names_resolve(short, resolved):
    spec = resolve_spec(short)
    assert spec.text == resolved and spec.source == TIMM and spec.location == resolved.split('.')[0]


def test_headline_models_can_be_created():
    """The resolved names are architectures timm creates (random init, on the meta device: no weights, no memory)."""
    import timm
    with torch.device('meta'):
        for short in ('pit_b', 'volo_d2', 'resmlp_36'):
            model = timm.create_model(resolve_spec(short).text, pretrained=False)
            assert model.num_classes == 1000 and model.pretrained_cfg['input_size'] == (3, 224, 224)


def test_one_log_line_per_resolution():
    notes = [resolve_spec(name).note for name in ('pit_b', 'resnet50', 'volo_d2')]
    assert notes == ['model pit_b -> pit_b_224 (timm names the architecture by its input size)', None,
                     'model volo_d2 -> volo_d2_224 (timm names the architecture by its input size; '
                     'also available: volo_d2_384)']


@pytest.mark.parametrize('spec', ['resnet50', 'resnet50.a1_in1k', 'hf-hub:org/repo', 'local-dir:zoo/vit_a',
                                  'no_such_model', 'ghostnet', 'convmixer_768'])
def test_names_that_stay(spec):
    resolved = resolve_spec(spec)
    assert resolved == parse_spec(spec) and resolved.note is None


def test_numbers_that_are_not_input_sizes_are_not_variants():
    assert size_variants('ghostnet') == []  # ghostnet_050/100/130 are widths
    assert size_variants('convmixer_768') == []  # convmixer_768_32 is a depth
    assert size_variants('volo_d2') == ['volo_d2_224', 'volo_d2_384']


def test_several_sizes_without_224_are_listed():
    with pytest.raises(ModelSpecError, match=r"'eva_large_patch14' is not a timm architecture and has several sizes "
                                             r"\(eva_large_patch14_196, eva_large_patch14_336\); name the one you mean"):
        resolve_spec('eva_large_patch14')
