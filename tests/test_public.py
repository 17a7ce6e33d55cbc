"""Nothing local in a pushed repository (timm_gkt/public.py): specs, args and results as they may be published."""
import json

from hubkit import make_results
from timm_gkt.report.public import (
    hub_dataset_id, local_paths_in, public_args, public_dataset_ref, public_model_ref, public_path, public_results,
)


def test_public_names():
    assert public_path('/home/alice/data/fmnist/') == 'fmnist' and public_path('') == '' and public_path(None) is None
    assert public_model_ref('local-dir:/home/alice/zoo/vit_a') == 'local-dir:vit_a'
    assert public_model_ref('hf-hub:org/m', 'abc123') == 'hf-hub:org/m@abc123'
    assert public_model_ref('hf-hub:org/m@v1', 'abc123') == 'hf-hub:org/m@v1'
    assert public_model_ref('pit_b_224.in1k') == 'pit_b_224.in1k'
    assert hub_dataset_id('hfds/org/name') == 'org/name' and hub_dataset_id('hfds//abs/path') is None
    assert hub_dataset_id('torch/fashion_mnist') is None
    assert public_dataset_ref('hfds//home/alice/sets/flowers') == 'hfds/flowers'
    assert public_dataset_ref('torch/fashion_mnist') == 'torch/fashion_mnist'


def test_public_args_reduce_every_path():
    args = {'model': 'local-dir:/home/alice/zoo/vit_a', 'teachers': ['hf-hub:org/t', 'local-dir:/home/alice/zoo/c'],
            'data_dir': '/home/alice/data/fmnist', 'dataset': 'hfds//home/alice/sets/flowers',
            'output': '/home/alice/out', 'class_map': '/home/alice/classes.txt', 'initial_checkpoint': '',
            'resume': '/home/alice/out/run/checkpoints/stage0-epoch1', 'lr': 0.001}
    assert public_args(args) == {
        'model': 'local-dir:vit_a', 'teachers': ['hf-hub:org/t', 'local-dir:c'], 'data_dir': 'fmnist',
        'dataset': 'hfds/flowers', 'output': 'out', 'class_map': 'classes.txt', 'initial_checkpoint': '',
        'resume': 'stage0-epoch1', 'lr': 0.001}


def test_public_results_name_models_by_folder_or_repo_and_revision():
    results = make_results(
        student='local-dir:/home/alice/zoo/vit_a', dataset='hfds//home/alice/sets/flowers',
        student_source={'spec': 'local-dir:/home/alice/zoo/vit_a', 'source': 'local-dir', 'revision': None,
                        'hub_id': None, 'license': None},
        lineage=[{'generation': 1, 'student': 'local-dir:/home/alice/zoo/vit_a',
                  'teachers': ['hf-hub:org/teacher'], 'method': 'kldp'}])
    results['teachers'][0].update(spec='hf-hub:org/teacher', revision='abc123')
    results['epochs'][0]['routed'] = {'local-dir:/home/alice/zoo/convnext_a': 29.0}
    public = public_results(results)
    assert public['epochs'][0]['routed'] == {'local-dir:convnext_a': 29.0}
    assert public['student'] == public['student_source']['spec'] == 'local-dir:vit_a'
    assert public['teachers'][0]['spec'] == 'hf-hub:org/teacher@abc123'
    assert public['lineage'][0] == {'generation': 1, 'student': 'local-dir:vit_a',
                                    'teachers': ['hf-hub:org/teacher@abc123'], 'method': 'kldp'}
    assert public['dataset'] == 'hfds/flowers'
    assert '/home/alice' not in json.dumps(public)
    assert results['student'] == 'local-dir:/home/alice/zoo/vit_a'  # the run folder's copy keeps its paths


def test_local_paths_in_finds_leaks_in_text_files_only(tmp_path):
    (tmp_path / 'README.md').write_text('trained on /home/alice/data/fmnist')
    (tmp_path / 'model.safetensors').write_bytes(b'/home/alice/data/fmnist')
    (tmp_path / 'args.yaml').write_text('data_dir: fmnist')
    assert local_paths_in(tmp_path, ['/home/alice/data/fmnist', '/']) == [('README.md', '/home/alice/data/fmnist')]
