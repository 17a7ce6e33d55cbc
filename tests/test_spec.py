"""Model specs (timm_gkt/models/spec.py): each kind parsed once into source, location and revision/tag."""
from pathlib import Path

import pytest

from timm_gkt.models.spec import HF_HUB, LOCAL_DIR, TIMM, ModelSpec, parse_spec, short_name


@pytest.mark.parametrize('text, source, location, revision, tag, name', [
    ('resnet50', TIMM, 'resnet50', None, None, 'resnet50'),
    ('resnet50.a1_in1k', TIMM, 'resnet50', None, 'a1_in1k', 'resnet50.a1_in1k'),
    ('hf-hub:timm/vit_small.augreg_in21k', HF_HUB, 'timm/vit_small.augreg_in21k', None, None,
     'timm/vit_small.augreg_in21k'),
    ('hf-hub:alice/gen1@v2', HF_HUB, 'alice/gen1', 'v2', None, 'alice/gen1'),
    ('local-dir:zoo/vit_a', LOCAL_DIR, 'zoo/vit_a', None, None, 'vit_a'),
    ('local-dir:/abs/path/mixer_a/', LOCAL_DIR, '/abs/path/mixer_a/', None, None, 'mixer_a'),
])
def test_each_kind_of_spec_is_parsed_into_its_parts(text, source, location, revision, tag, name):
    spec = parse_spec(text)
    assert (spec.source, spec.location, spec.revision, spec.tag) == (source, location, revision, tag)
    assert spec.name == name == short_name(text)
    assert str(spec) == spec.text == text  # what timm.create_model is given


def test_hub_id_and_path_exist_only_for_their_source():
    assert parse_spec('hf-hub:alice/gen1@v2').hub_id == 'alice/gen1'
    assert parse_spec('hf-hub:alice/gen1').path is None
    assert parse_spec('local-dir:zoo/vit_a').path == Path('zoo/vit_a')
    assert parse_spec('local-dir:zoo/vit_a').hub_id is None
    assert parse_spec('resnet50.a1_in1k').hub_id is None and parse_spec('resnet50').path is None


def test_a_parsed_spec_passes_through_and_is_hashable():
    spec = parse_spec('local-dir:zoo/vit_a')
    assert parse_spec(spec) is spec
    assert {spec: 1}[ModelSpec('local-dir:zoo/vit_a', LOCAL_DIR, 'zoo/vit_a')] == 1


def test_an_empty_folder_name_falls_back_to_the_spec():
    assert parse_spec('local-dir:').name == 'local-dir:'
    assert parse_spec('hf-hub:').location == ''  # check_model_spec refuses it (test_models)
