"""studies/benchmark: every contender runs and reports; --device cuda without a GPU is one sentence, exit 2.

Timings are not asserted (a busy test machine decides them); the structure of the
report, the cache being read without a miss and float32 storage being exact are.
"""
import importlib
import json
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope='module')
def benchmark():
    return importlib.import_module('studies.benchmark.run')


def test_cuda_without_a_gpu_is_one_sentence_and_exit_2(benchmark, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    with pytest.raises(SystemExit) as e:
        benchmark.main(['--device', 'cuda', '--amp', '--random-init', '--student', 'pit_b_224',
                        '--teacher', 'volo_d2_224'])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith('error: --device cuda needs a CUDA GPU') and err.count('\n') == 0 and '; ' in err


@pytest.mark.parametrize('extra', [[], ['--amp', '--channels-last']])
def test_every_contender_reports(benchmark, micro_zoo, data_dir, capsys, extra):
    code = benchmark.main([
        '--student', f'local-dir:{micro_zoo}/q_vit', '--teacher', f'local-dir:{micro_zoo}/q_cnn',
        '--teacher2', f'local-dir:{micro_zoo}/q_mlp', '--data-dir', str(data_dir), '-b', '8', '--repeats', '2',
        '--warmup', '1', '--epoch-images', '16', '--epoch-repeats', '1', '--exactness', '--json', *extra])
    assert code == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(report['ratio_to_plain']) == {'timm_kd', 'kldp_online', 'kldp_cached', 'kldp_seq2_online',
                                             'kldp_seq2_cached'}
    assert all(v > 0 for v in report['ratio_to_plain'].values())
    assert {'part_student_step', 'part_teacher_fwd', 'part_frozen_student_fwd'} <= set(report['steps'])
    assert set(report['epochs']) == {'epoch_plain', 'epoch_plain_no_replay', 'epoch_kldp_online', 'epoch_kldp_fill',
                                     'epoch_kldp_cached'}
    assert report['cached_misses_while_timed'] == 0
    assert report['cache_size']['bytes_per_10k_per_view_by_storage']['float32'] == 10_000 * (1 + 4 * 10)
    assert len(report['cache_size']['measured_bytes_per_10k_per_view']) == 2  # teacher and frozen student
    if not extra:
        assert report['exactness']['kldp']['float32']['max_rel'] == 0.0
        assert report['exactness']['kl']['float32']['max_rel'] == 0.0
    assert report['peak_rss_mb'] > 0
