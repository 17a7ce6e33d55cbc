"""``--teacher-cache`` end to end on the micro-zoo (timm_gkt/train.py → engine → cache).

A run that fills an empty cache, a run that reads it and a run without it must report the
same numbers and export the same weights (float32 storage is exact and the augmentation is
replayed, so "the same" means bit for bit); other methods on the same pair read the rows
the first one filled; a sequential stage whose frozen student is another run's stage-1
result must not read that run's rows; resume and two processes keep working. Timings are
printed, never asserted.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from timm_gkt import train

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
QUICK = ['--train-subset', '384', '--eval-subset', '400', '-b', '64', '--seed', '3']
METRICS = ('top1_before', 'top1_after', 'transfer_delta', 'knowledge_gain', 'knowledge_loss', 'p_value', 'teachers')


def spec(zoo: Path, name: str) -> str:
    return f'local-dir:{zoo / name}'


def run(tmp_path, data_dir, experiment, *extra, capsys=None):
    """One ``train.main`` run; returns (exit code, results.json, seconds, 'teacher cache:' lines printed)."""
    t0 = time.perf_counter()
    code = train.main(['--data-dir', str(data_dir), '--output', str(tmp_path / 'runs'), '--experiment', experiment,
                       *QUICK, *extra])
    seconds = time.perf_counter() - t0
    lines = []
    if capsys is not None:
        out = capsys.readouterr().out
        lines = [line.strip() for line in out.splitlines() if 'teacher cache:' in line]
    path = tmp_path / 'runs' / experiment / 'results.json'
    return code, json.loads(path.read_text()) if path.is_file() else None, seconds, lines


def metrics(r: dict) -> dict:
    """What a run found, without what the machine's speed decides (img/s)."""
    epochs = [{k: v for k, v in row.items() if k != 'img_per_s'} for row in r['epochs']]
    return {**{k: r[k] for k in METRICS}, 'epochs': epochs}


def exported(tmp_path, experiment) -> dict:
    from safetensors.torch import load_file
    return load_file(str(tmp_path / 'runs' / experiment / 'export' / 'model.safetensors'))


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def rows_read(line: str, model: str) -> tuple[int, int]:
    """(rows read, rows in all) for one model of a 'teacher cache:' line."""
    m = re.search(rf'{re.escape(model)} (\d+) of (\d+) rows read', line)
    assert m, f'{model} not in {line!r}'
    return int(m.group(1)), int(m.group(2))


def key_folders(cache: Path, kind: str) -> set[str]:
    return {p.parent.name for p in cache.glob('*/key.json') if json.loads(p.read_text())['kind'] == kind}


def test_cached_runs_equal_the_online_run_and_other_methods_reuse_the_rows(tmp_path, micro_zoo, data_dir, capsys):
    cache = tmp_path / 'cache'
    pair = ['--model', spec(micro_zoo, 'q_vit'), '--teachers', spec(micro_zoo, 'q_cnn'), '--epochs', '2',
            '--checkpoint-hist', '5']
    code, online, t_online, _ = run(tmp_path, data_dir, 'online', *pair, capsys=capsys)
    assert code == 0
    code, fill, t_fill, fill_log = run(tmp_path, data_dir, 'fill', *pair, '--teacher-cache', str(cache), capsys=capsys)
    assert code == 0
    train_keys, eval_keys = key_folders(cache, 'train-outputs'), key_folders(cache, 'eval-predictions')
    assert len(train_keys) == 2 and len(eval_keys) == 2  # teacher + frozen student; student + teacher "before"
    code, read, t_read, read_log = run(tmp_path, data_dir, 'read', *pair, '--teacher-cache', str(cache), capsys=capsys)
    assert code == 0
    with capsys.disabled():
        print(f'\nKL+DP, 2 epochs of 384 images: online {t_online:.1f} s, filling the cache {t_fill:.1f} s, '
              f'reading it {t_read:.1f} s')
    # float32 storage and replayed augmentation: the very same numbers and weights, not "close"
    assert metrics(fill) == metrics(online) and metrics(read) == metrics(online)
    assert same_weights(exported(tmp_path, 'fill'), exported(tmp_path, 'online'))
    assert same_weights(exported(tmp_path, 'read'), exported(tmp_path, 'online'))
    assert rows_read(fill_log[0], 'q_cnn') == (0, 768) and rows_read(fill_log[0], 'frozen student') == (0, 768)
    assert rows_read(read_log[0], 'q_cnn') == (768, 768) and rows_read(read_log[0], 'frozen student') == (768, 768)
    assert key_folders(cache, 'train-outputs') == train_keys and key_folders(cache, 'eval-predictions') == eval_keys

    # KL-Dist on the same pair: its teacher rows are the ones KL+DP filled (no frozen student needed)
    code, kl, _, kl_log = run(tmp_path, data_dir, 'kl', *pair, '--transfer-method', 'kl', '--teacher-cache',
                              str(cache), capsys=capsys)
    assert code == 0 and rows_read(kl_log[0], 'q_cnn') == (768, 768) and 'frozen student' not in kl_log[0]
    assert key_folders(cache, 'train-outputs') == train_keys

    # resumed after epoch 1 from the filling run's checkpoint, reading the cache: the same run
    ckpt = tmp_path / 'runs' / 'fill' / 'checkpoints' / 'stage0-epoch1'
    code, resumed, _, resumed_log = run(tmp_path, data_dir, 'fill', *pair, '--teacher-cache', str(cache),
                                        '--resume', str(ckpt), capsys=capsys)
    assert code == 0 and metrics(resumed) == metrics(online)
    assert same_weights(exported(tmp_path, 'fill'), exported(tmp_path, 'online'))
    assert rows_read(resumed_log[0], 'q_cnn') == (384, 384)  # one epoch left, all of it read


def test_a_stage_2_frozen_student_from_another_stage_1_is_not_read(tmp_path, micro_zoo, data_dir, capsys):
    """Sequential KL+DP: stage 2 distils from stage 1's result, so another learning rate is another frozen student."""
    cache = str(tmp_path / 'cache')
    seq = ['--model', spec(micro_zoo, 'q_cnn'), '--teachers', f"{spec(micro_zoo, 'q_mlp')},{spec(micro_zoo, 'q_vit')}",
           '--epochs', '1']
    code, _, _, first = run(tmp_path, data_dir, 'lr-a', *seq, '--teacher-cache', cache, capsys=capsys)
    assert code == 0 and len(first) == 2  # one line per stage
    code, cached, _, second = run(tmp_path, data_dir, 'lr-b', *seq, '--lr', '0.02', '--teacher-cache', cache,
                                  capsys=capsys)
    assert code == 0
    stage1, stage2 = second
    teacher1, teacher2 = re.findall(r'(q_\w+) \d+ of', stage1)[0], re.findall(r'(q_\w+) \d+ of', stage2)[0]
    assert rows_read(stage1, teacher1) == (384, 384) and rows_read(stage1, 'frozen student') == (384, 384)
    assert rows_read(stage2, teacher2) == (384, 384)
    assert rows_read(stage2, 'frozen student') == (0, 384)  # stage 1 ended elsewhere: nothing stale is read
    code, online, _, _ = run(tmp_path, data_dir, 'lr-b-online', *seq, '--lr', '0.02', capsys=capsys)
    assert code == 0 and metrics(cached) == metrics(online)
    assert same_weights(exported(tmp_path, 'lr-b'), exported(tmp_path, 'lr-b-online'))


def test_two_processes_fill_their_shards_and_one_process_reads_them_all(tmp_path, micro_zoo, data_dir, capsys):
    """accelerate launch --multi_gpu --num_processes 2 on CPU (gloo): each rank fills its shard's rows; a
    one-process run then reads every row. Replay gives both the same pixels, augmentation included."""
    cache = str(tmp_path / 'cache')
    common = ['timm_gkt/train.py', '--model', spec(micro_zoo, 'q_vit'), '--teachers', spec(micro_zoo, 'q_cnn'),
              '--data-dir', str(data_dir), '--output', str(tmp_path), '--train-subset', '384', '--eval-subset', '400',
              '--epochs', '1', '--seed', '3', '-j', '0', '--teacher-cache', cache]
    env = dict(os.environ, OMP_NUM_THREADS='1', ACCELERATE_USE_CPU='1')
    accelerate = [sys.executable, '-m', 'accelerate.commands.launch', '--num_machines', '1', '--mixed_precision', 'no',
                  '--dynamo_backend', 'no']
    two = subprocess.run([*accelerate, '--multi_gpu', '--num_processes', '2', *common, '-b', '32',
                          '--experiment', 'two'], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert two.returncode == 0, two.stderr[-2000:]
    capsys.readouterr()
    # the one-process reader runs in this process: a third interpreter importing torch would add a minute to CI
    assert train.main([*common[1:], '-b', '64', '--experiment', 'one']) == 0
    (line,) = [x for x in capsys.readouterr().out.splitlines() if 'teacher cache:' in x]
    assert rows_read(line, 'q_cnn') == (384, 384) and rows_read(line, 'frozen student') == (384, 384)
    r1 = json.loads((tmp_path / 'one' / 'results.json').read_text())
    r2 = json.loads((tmp_path / 'two' / 'results.json').read_text())
    assert r2['hyperparameters']['num_processes'] == 2
    assert r1['top1_before'] == r2['top1_before'] and r1['teachers'][0]['top1'] == r2['teachers'][0]['top1']
    # float reductions differ in order across processes: allow one image of difference
    assert abs(r2['top1_after'] - r1['top1_after']) <= 100.0 / 400 + 1e-9


def test_in_memory_runs_are_the_per_image_runs_and_share_their_cache(tmp_path, micro_zoo, data_dir, capsys):
    """--data-in-memory replays the per-image loader's batches bit for bit, across epochs and sequential stages:
    the same numbers and weights as the per-image run, and it reads the rows a per-image run filled (and the
    other way round), because both key the same augmentation."""
    cache = tmp_path / 'cache'
    seq = ['--model', spec(micro_zoo, 'q_vit'), '--teachers', f"{spec(micro_zoo, 'q_cnn')},{spec(micro_zoo, 'q_mlp')}",
           '--epochs', '2', '--scale', '1', '1', '--ratio', '1', '1']
    code, per_image, _, _ = run(tmp_path, data_dir, 'per-image', *seq, '--teacher-cache', str(cache), capsys=capsys)
    assert code == 0
    code, memory, _, memory_log = run(tmp_path, data_dir, 'memory', *seq, '--data-in-memory', '--teacher-cache',
                                      str(cache), capsys=capsys)
    assert code == 0
    assert metrics(memory) == metrics(per_image)
    assert same_weights(exported(tmp_path, 'memory'), exported(tmp_path, 'per-image'))
    # both stages read every row the per-image run filled: the teachers' and the frozen students'
    assert [rows_read(line, 'frozen student') for line in memory_log] == [(768, 768), (768, 768)]
    code, online, _, _ = run(tmp_path, data_dir, 'memory-online', *seq, '--data-in-memory', capsys=capsys)
    assert code == 0 and metrics(online) == metrics(per_image)


def test_in_memory_runs_keep_their_decoded_images_in_the_cache(tmp_path, micro_zoo, data_dir, capsys, monkeypatch):
    """With --teacher-cache the decoded training images are stored once: a later in-memory run (a new process,
    here: the in-process copy dropped) reads them instead of decoding, and finds the same numbers and weights."""
    from timm_gkt.data import memory
    cache = tmp_path / 'cache'
    pair = ['--model', spec(micro_zoo, 'q_vit'), '--teachers', spec(micro_zoo, 'q_cnn'), '--epochs', '1',
            '--data-in-memory', '--teacher-cache', str(cache)]
    memory._DECODED.clear()
    code, first, _, _ = run(tmp_path, data_dir, 'decode', *pair, capsys=capsys)
    assert code == 0
    stored = [p for folder in key_folders(cache, 'decoded-images') for p in (cache / folder).glob('arrays.*.npz')]
    assert len(stored) == 1
    memory._DECODED.clear()

    def no_decoding(*args):
        raise AssertionError('decoded again although the cache holds the images')
    monkeypatch.setattr(memory, 'decode', no_decoding)
    code, second, _, _ = run(tmp_path, data_dir, 'read', *pair, capsys=capsys)
    assert code == 0 and metrics(second) == metrics(first)
    assert same_weights(exported(tmp_path, 'read'), exported(tmp_path, 'decode'))
