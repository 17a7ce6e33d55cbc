"""studies/zoo/build.py: the micro-zoo it trains is in Hub layout, indexed, and reproduces its recorded top-1."""
from __future__ import annotations

import importlib

import json

import pytest
import torch

pytestmark = pytest.mark.slow  # one micro-zoo model is trained, the committed ones are verified


def test_micro_zoo_index_describes_three_families(micro_zoo):
    index = json.loads((micro_zoo / 'index.json').read_text())
    models = index['models']
    assert {m['family'] for m in models} == {'CNN', 'Transformer', 'MLP'}
    for m in models:
        folder = micro_zoo / m['name']
        assert (folder / 'config.json').is_file() and (folder / 'model.safetensors').is_file()
        cfg = json.loads((folder / 'config.json').read_text())
        assert cfg['architecture'] == m['architecture']
        assert cfg['label_names'] == index['label_names']
        assert list(cfg['pretrained_cfg']['input_size']) == m['input_size']
        assert list(cfg['pretrained_cfg']['mean']) == m['mean']
        assert 'tag' not in cfg['pretrained_cfg']  # the architecture's ImageNet tag does not describe these weights
        assert 0 < m['parameters'] < 2_000_000 and 10.0 < m['test_top1'] <= 100.0


def test_builder_makes_the_committed_micro_vit(micro_zoo, data_dir, tmp_path, capsys):
    """`build_zoo.py --quick --only q_vit` trains the ViT of the committed micro-zoo again: same layout, same
    recipe in the index, a top-1 within a point of the committed one (thread counts may change the last bits)."""
    build_zoo = importlib.import_module('studies.zoo.build')
    threads = torch.get_num_threads()
    try:
        build_zoo.main(['--quick', '--only', 'q_vit', '--out', str(tmp_path / 'zoo'), '--data-dir', str(data_dir),
                        '--threads', '1'])
    finally:
        torch.set_num_threads(threads)
    built = json.loads((tmp_path / 'zoo' / 'index.json').read_text())['models']
    committed = {m['name']: m for m in json.loads((micro_zoo / 'index.json').read_text())['models']}['q_vit']
    assert [m['name'] for m in built] == ['q_vit']
    assert built[0]['recipe'] == committed['recipe'] and built[0]['parameters'] == committed['parameters']
    assert abs(built[0]['test_top1'] - committed['test_top1']) <= 1.0, (built[0]['test_top1'], committed['test_top1'])
    ours = json.loads((tmp_path / 'zoo' / 'q_vit' / 'config.json').read_text())
    assert ours == json.loads((micro_zoo / 'q_vit' / 'config.json').read_text())
    assert 'zoo in' in capsys.readouterr().out


def test_verify_reloads_each_model_and_reproduces_its_top1(micro_zoo, data_dir, capsys):
    assert importlib.import_module('studies.zoo.build').verify(micro_zoo, data_dir) is True
    assert capsys.readouterr().out.count(' ok') == 3


def test_verify_fails_on_a_wrong_record(micro_zoo, data_dir, tmp_path, capsys, monkeypatch):
    """The comparison only: the evaluation returns the true record (the test above reproduces it for real)."""
    import shutil
    zoo = tmp_path / 'zoo'
    shutil.copytree(micro_zoo, zoo)
    index = json.loads((zoo / 'index.json').read_text())
    index['models'] = [m for m in index['models'] if m['name'] == 'q_vit']
    true_top1 = index['models'][0]['test_top1']
    index['models'][0]['test_top1'] += 0.5
    (zoo / 'index.json').write_text(json.dumps(index))
    build_zoo = importlib.import_module('studies.zoo.build')
    monkeypatch.setattr(build_zoo, 'evaluate', lambda model, preprocessing, dataset: true_top1)
    assert build_zoo.verify(zoo, data_dir) is False
    assert 'MISMATCH' in capsys.readouterr().out
    monkeypatch.setattr(build_zoo, 'evaluate', lambda model, preprocessing, dataset: true_top1 + 0.5)
    assert build_zoo.verify(zoo, data_dir) is True


def test_reloaded_zoo_model_gives_identical_logits(micro_zoo):
    import timm
    from safetensors.torch import load_file
    cfg = json.loads((micro_zoo / 'q_vit' / 'config.json').read_text())
    rebuilt = timm.create_model(cfg['architecture'], **cfg['model_args']).eval()
    rebuilt.load_state_dict(load_file(str(micro_zoo / 'q_vit' / 'model.safetensors')))
    loaded = timm.create_model(f'local-dir:{micro_zoo / "q_vit"}', pretrained=True).eval()
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), loaded(x))
