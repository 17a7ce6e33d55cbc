"""The model card (timm_gkt/hub/card.py, plots.py): typed metadata read back with ``ModelCard.load``, the
body's tables and facts, plots, determinism."""
from __future__ import annotations


import pytest
from hubkit import make_results, make_run, model, tree_digest  # noqa: F401  (model is a fixture)

from timm_gkt import hub as gkt_hub


def test_card_metadata_round_trips_through_modelcard_load(tmp_path):
    from huggingface_hub import ModelCard
    results = make_results(student_source={'spec': 'hf-hub:timm/vit_a.fmnist', 'source': 'hf-hub', 'revision': 'abc123',
                                           'hub_id': 'timm/vit_a.fmnist', 'license': 'apache-2.0'})
    readme = gkt_hub.write_card(results, tmp_path, 'alice/vit_a-gkt')

    card = ModelCard.load(readme)
    data = card.data
    assert data.library_name == 'timm'
    assert data.pipeline_tag == 'image-classification'
    assert {'timm', 'image-classification', 'knowledge-transfer', 'kldp'} <= set(data.tags)
    assert data.base_model == 'timm/vit_a.fmnist'
    assert data.base_model_relation == 'finetune'
    assert data.license == 'apache-2.0'
    assert data.datasets == ['zalando-datasets/fashion_mnist']
    assert data.model_name == 'vit_a-gkt'
    metrics = {r.metric_type + ('' if 'flips' not in r.metric_type else ':' + r.metric_name.split(' vs ')[1].split()[0]):
               r.metric_value for r in data.eval_results}
    assert metrics == {
        'accuracy': 85.6, 'accuracy_before_transfer': 85.1, 'transfer_delta': 0.5, 'knowledge_gain': 1.2,
        'knowledge_loss': 0.7, 'mcnemar_p_value': 0.0003,
        'positive_flips_delta:convnext_a': -0.5, 'negative_flips_delta:convnext_a': 0.1,
    }
    assert {r.dataset_split for r in data.eval_results} == {'test'}

    body = card.text
    assert "timm.create_model('hf-hub:alice/vit_a-gkt', pretrained=True)" in body
    assert '| student top-1 | 85.10 | 85.60 | +0.50 |' in body
    assert '| ρpos vs convnext_a | 6.00 | 5.50 | -0.50 |' in body
    assert '`local-dir:zoo/convnext_a`' in body and '90.10' in body and '30.2%' in body
    assert 'revision `abc123`' in body and 'KL + DP (supervised data partitioning)' in body
    assert '| lr | 0.001 |' in body and 'seed 0' in body and 'timm 1.0.31' in body
    assert 'Fantastic Gains and Where to Find Them' in body and 'arXiv:2310.17653' in body
    assert 'Koepke, A. Sophia and Vinyals, Oriol and H{\\\'e}naff, Olivier and Akata, Zeynep' in body
    for plot in ('plots/per_class_knowledge.png', 'plots/gain_loss.png'):
        assert f']({plot})' in body
        assert (tmp_path / plot).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_card_of_local_student_names_it_in_the_lineage_and_has_no_base_model(tmp_path):
    from huggingface_hub import ModelCard
    readme = gkt_hub.write_card(make_results(), tmp_path)
    card = ModelCard.load(readme)
    assert card.data.base_model is None and card.data.license is None
    assert 'base_model' not in readme.read_text().split('---')[1]  # nor a relation to a base model it has not
    assert 'Student: `local-dir:zoo/vit_a` (local-dir)' in card.text
    assert "hf-hub:ORG/REPO" in card.text  # no repo yet: a placeholder, and the local way to load it
    assert 'local-dir:PATH/TO/export' in card.text


def test_card_without_epochs_or_per_class_data_skips_those_plots(tmp_path):
    from huggingface_hub import ModelCard
    full = gkt_hub.write_card(make_results(), tmp_path)
    assert sorted(p.name for p in (tmp_path / 'plots').iterdir()) == ['gain_loss.png', 'per_class_knowledge.png']
    results = make_results(epochs=[], p_value=None, knowledge_gain=None)
    for t in results['teachers']:
        del t['per_class_pos_flips_before'], t['per_class_pos_flips_after']
    readme = gkt_hub.write_card(results, tmp_path)
    assert readme == full
    assert list((tmp_path / 'plots').iterdir()) == []  # stale plots of the earlier card are gone
    text = ModelCard.load(readme).text
    assert '.png' not in text and 'p = –' in text


def test_card_of_chained_transfer_lists_both_generations_teachers(tmp_path):
    from huggingface_hub import ModelCard
    lineage = [
        {'generation': 1, 'student': 'local-dir:zoo/vit_a', 'teachers': ['local-dir:zoo/convnext_a'],
         'method': 'kldp', 'transfer_delta': 0.5, 'top1_after': 85.6},
        {'generation': 2, 'student': 'hf-hub:alice/vit_a-gkt', 'teachers': ['local-dir:zoo/mixer_a', 'resnet_a'],
         'method': 'kldp', 'transfer_delta': 0.12, 'top1_after': 85.72},
    ]
    results = make_results(student='hf-hub:alice/vit_a-gkt', lineage=lineage, top1_before=85.6, top1_after=85.72,
                           transfer_delta=0.12,
                           student_source={'spec': 'hf-hub:alice/vit_a-gkt', 'source': 'hf-hub', 'revision': None,
                                           'hub_id': 'alice/vit_a-gkt', 'license': None})
    card = ModelCard.load(gkt_hub.write_card(results, tmp_path, 'alice/vit_a-gkt2'))
    assert card.data.base_model == 'alice/vit_a-gkt'
    assert '| 1 | `local-dir:zoo/vit_a` | `local-dir:zoo/convnext_a` | kldp | +0.50 | 85.60 |' in card.text
    assert ('| 2 | `hf-hub:alice/vit_a-gkt` | `local-dir:zoo/mixer_a`, `resnet_a` | kldp | +0.12 | 85.72 |'
            in card.text)


def test_card_takes_lineage_from_config_json_when_results_lack_it(tmp_path, model):
    run = make_run(tmp_path / 'run', make_results(), model)
    results = make_results(lineage=None)
    text = gkt_hub.write_card(results, run / 'export').read_text()
    assert '| 1 | `local-dir:zoo/vit_a` | `local-dir:zoo/convnext_a` | kldp | +0.50 | 85.60 |' in text


def test_card_is_deterministic(tmp_path):
    a, b = tmp_path / 'a', tmp_path / 'b'
    gkt_hub.write_card(make_results(), a, 'alice/x')
    gkt_hub.write_card(make_results(), b, 'alice/x')
    assert tree_digest(a) == tree_digest(b)  # a re-push of the same run uploads nothing new




# ----------------------------------------------------------------------------- card facts

def test_hub_student_is_the_only_base_model_and_teachers_are_lineage_and_tags(tmp_path):
    """base_model names the one model these weights were fine-tuned from; a list of base models would mean a
    merge, so Hub teachers appear as tags and in the lineage, never in base_model."""
    from huggingface_hub import ModelCard
    teacher = dict(make_results()['teachers'][0], name='alice/teacher-x', spec='hf-hub:alice/teacher-x',
                   source='hf-hub')
    local = dict(make_results()['teachers'][0])
    results = make_results(
        student='hf-hub:timm/vit_a.fmnist', teachers=[teacher, local],
        student_source={'spec': 'hf-hub:timm/vit_a.fmnist', 'source': 'hf-hub', 'revision': None,
                        'hub_id': 'timm/vit_a.fmnist', 'license': None},
        lineage=[{'generation': 1, 'student': 'hf-hub:timm/vit_a.fmnist',
                  'teachers': ['hf-hub:alice/teacher-x', 'local-dir:zoo/convnext_a'], 'method': 'kldp',
                  'transfer_delta': 0.5, 'top1_after': 85.6}])
    readme = gkt_hub.write_card(results, tmp_path, 'alice/vit_a-gkt')
    card = ModelCard.load(readme)
    assert card.data.base_model == 'timm/vit_a.fmnist'  # one string, not a list
    assert card.data.base_model_relation == 'finetune'
    assert {'teacher:alice/teacher-x', 'teacher:convnext_a'} <= set(card.data.tags)
    assert '| 1 | `hf-hub:timm/vit_a.fmnist` | `hf-hub:alice/teacher-x`, `local-dir:zoo/convnext_a` |' in card.text
    front_matter = readme.read_text().split('---')[1]
    assert 'base_model: timm/vit_a.fmnist\n' in front_matter and 'base_model_relation: finetune' in front_matter


def test_card_says_neg_flips_should_not_decrease(tmp_path):
    """ρneg = teacher wrong, student right: a drop means the student copied the teacher's mistakes."""
    text = ' '.join(gkt_hub.write_card(make_results(), tmp_path).read_text().split())
    assert 'should not lower ρneg' in text and "copied the teacher's mistakes" in text
    assert 'without raising ρneg' not in text


@pytest.mark.parametrize('overrides, verdict', [
    ({}, 'Verdict: improved: +0.50 points (p = 0.0003).'),
    ({'p_value': 0.24, 'transfer_delta': 0.18, 'top1_after': 85.28},
     'Verdict: no significant change: +0.18 points (p = 0.24, one image = 0.01).'),
    ({'p_value': 0.003, 'transfer_delta': -0.62, 'top1_after': 84.48}, 'Verdict: worse: -0.62 points (p = 0.003).'),
])
def test_card_verdict_respects_significance(tmp_path, overrides, verdict):
    from huggingface_hub import ModelCard
    card = ModelCard.load(gkt_hub.write_card(make_results(**overrides), tmp_path))
    assert verdict in card.text
    if 'improved' not in verdict:
        assert 'improved' not in card.text


def _data(kind, name, hub_id=None, eval_subset=None):
    subset = eval_subset or {'size': 10000, 'of': 10000, 'seed': None, 'sampling': 'all', 'fingerprint': None}
    return {'dataset': 'folder', 'kind': kind, 'name': name, 'hub_id': hub_id, 'class_map': None,
            'train': {'split': 'train'}, 'eval': {'split': 'validation', 'subset': subset}}


def test_card_of_local_data_names_no_hub_dataset(tmp_path):
    """An image folder is not a Hub dataset: no `datasets:` metadata and no model-index pointing at one."""
    from huggingface_hub import ModelCard
    results = make_results(dataset='folder', eval_split='validation', eval_samples=200,
                           data=_data('folder', 'fmnist-folders'))
    card = ModelCard.load(gkt_hub.write_card(results, tmp_path))
    assert card.data.datasets is None and card.data.eval_results is None
    assert 'top-1 on the fmnist-folders validation split (200 images)' in card.text
    local_hfds = make_results(dataset='hfds/fashion_hfds', data=_data('hfds', 'hfds/fashion_hfds'))
    assert ModelCard.load(gkt_hub.write_card(local_hfds, tmp_path)).data.datasets is None
    hub_hfds = make_results(dataset='hfds/org/flowers', data=_data('hfds', 'hfds/org/flowers', 'org/flowers'))
    assert ModelCard.load(gkt_hub.write_card(hub_hfds, tmp_path)).data.datasets == ['org/flowers']


def test_card_and_model_index_say_when_the_top1_is_on_a_subset(tmp_path):
    from huggingface_hub import ModelCard
    subset = {'size': 400, 'of': 10000, 'seed': 3, 'sampling': 'class-stratified', 'fingerprint': 'ab'}
    results = make_results(eval_samples=400, data=_data('torch', 'torch/fashion_mnist', eval_subset=subset))
    card = ModelCard.load(gkt_hub.write_card(results, tmp_path))
    top1 = next(r for r in card.data.eval_results if r.metric_type == 'accuracy')
    assert top1.metric_name == ('Top-1 accuracy (%) on a seeded class-stratified subset of 400 of the 10000 images')
    assert top1.dataset_args == {'num_samples': 400, 'of': 10000, 'seed': 3, 'sampling': 'class-stratified'}
    assert card.data.datasets == ['zalando-datasets/fashion_mnist']
    assert ('top-1 on the Fashion-MNIST test split (a seeded class-stratified subset of 400 of its 10000 images)'
            in card.text)


@pytest.mark.parametrize('spec, expected', [
    ('torch/fashion_mnist', ('zalando-datasets/fashion_mnist', 'Fashion-MNIST')),
    ('torch/kmnist', (None, 'kmnist')),  # no known Hub copy: named, not claimed
    ('hfds/org/name', ('org/name', 'org/name')),
    ('hfds//home/alice/my_set', (None, 'my_set')),
    ('folder', (None, 'folder')),
])
def test_hub_dataset_is_an_id_only_for_hub_data(spec, expected):
    assert gkt_hub.hub_dataset(spec) == expected


def test_card_has_a_row_for_the_control_and_says_how_the_student_compares_with_more_training(tmp_path):
    from huggingface_hub import ModelCard
    from test_results import control_results
    card = ModelCard.load(gkt_hub.write_card(control_results(), tmp_path, 'alice/vit_a-gkt'))
    assert '| control top-1 (more training, CE) | 85.10 | 86.02 | +0.92 |' in card.text
    assert ('- Against more training (the control row: the same student trained further with plain cross-entropy and '
            'no teacher, from the same start, on the same data in the same order with the same seed and budget '
            '(1 stage of 2 epoch(s))): -0.42 points (p = 0.001, paired McNemar between the transferred and the '
            'control student): worse than more training.') in card.text
    metrics = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert metrics['accuracy'] == 85.6  # the model's own score stays the transferred student's
    assert (metrics['accuracy_control'], metrics['delta_vs_control'], metrics['mcnemar_p_value_vs_control']) == \
        (86.02, -0.42, 0.001)
    plain = ModelCard.load(gkt_hub.write_card(make_results(), tmp_path / 'plain'))
    assert 'more training' not in plain.text and 'accuracy_control' not in str(plain.data)
