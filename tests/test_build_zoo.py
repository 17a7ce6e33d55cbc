"""scripts/build_zoo.py: the micro-zoo it trains is in Hub layout, indexed, and reproduces its recorded top-1."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow  # the micro-zoo is trained (or read from TIMM_GKT_MICRO_ZOO) and verified
ROOT = Path(__file__).resolve().parent.parent


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


def test_verify_reloads_each_model_and_reproduces_its_top1(micro_zoo, data_dir):
    proc = subprocess.run([sys.executable, str(ROOT / 'scripts' / 'build_zoo.py'), '--verify', '--out', str(micro_zoo),
                           '--data-dir', str(data_dir)], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count(' ok') == 3


def test_verify_fails_on_a_wrong_record(micro_zoo, data_dir, tmp_path):
    import shutil
    zoo = tmp_path / 'zoo'
    shutil.copytree(micro_zoo, zoo)
    index = json.loads((zoo / 'index.json').read_text())
    index['models'] = index['models'][:1]
    index['models'][0]['test_top1'] += 0.5
    (zoo / 'index.json').write_text(json.dumps(index))
    proc = subprocess.run([sys.executable, str(ROOT / 'scripts' / 'build_zoo.py'), '--verify', '--out', str(zoo),
                           '--data-dir', str(data_dir)], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 1 and 'MISMATCH' in proc.stdout


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
