"""End-to-end runs of timm_gkt/train.py on the micro-zoo (config → preflight → engine → results → export):
every method, every multi-teacher mode, resume, two processes, preflight errors, args.yaml replay.
Small subsets keep each run to seconds; all of them need the micro-zoo, so the module is ``slow``."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from timm_gkt import train
from timm_gkt.results import verdict

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
QUICK = ['--train-subset', '384', '--eval-subset', '400', '--epochs', '1', '-b', '64', '--seed', '3']


def spec(zoo: Path, name: str) -> str:
    return f'local-dir:{zoo / name}'


def run_train(tmp_path, zoo, data_dir, *extra, experiment='run'):
    argv = ['--data-dir', str(data_dir), '--output', str(tmp_path), '--experiment', experiment, *QUICK, *extra]
    code = train.main(argv)
    results_path = tmp_path / experiment / 'results.json'
    results = json.loads(results_path.read_text()) if results_path.is_file() else None
    return code, results


def check_results_schema(r: dict):
    for key in ('student', 'method', 'top1_before', 'top1_after', 'transfer_delta', 'knowledge_gain',
                'knowledge_loss', 'teachers', 'p_value', 'seed', 'versions'):
        assert key in r, key
    assert abs(r['transfer_delta'] - (r['knowledge_gain'] - r['knowledge_loss'])) < 1e-6
    assert abs(r['top1_after'] - r['top1_before'] - r['transfer_delta']) < 1e-6
    assert 0.0 <= r['p_value'] <= 1.0
    for t in r['teachers']:
        for key in ('name', 'top1', 'rho_pos', 'rho_neg', 'pos_flips_delta', 'neg_flips_delta', 'routed_share'):
            assert key in t, key
        assert abs(t['pos_flips_delta'] - (t['rho_pos_after'] - t['rho_pos'])) < 1e-6
    assert set(r['versions']) >= {'timm', 'torch', 'timm_gkt'}
    assert r['verdict'] == asdict(verdict(r['transfer_delta'], r['p_value'], r['eval_samples']))


@pytest.mark.parametrize('method', ['ce', 'kl', 'xekl', 'xekl-mcl', 'kldp'])
def test_each_method_runs_and_reports(method, tmp_path, micro_zoo, data_dir):
    code, r = run_train(tmp_path, micro_zoo, data_dir, '--model', spec(micro_zoo, 'q_mlp'),
                        '--teachers', spec(micro_zoo, 'q_cnn'), '--transfer-method', method)
    assert code == train.EXIT_OK
    check_results_schema(r)
    assert r['method'] == method
    assert r['eval_samples'] == 400
    routed = r['teachers'][0]['routed_share']
    if method == 'kldp':
        assert 0.0 <= routed <= 100.0
    else:
        assert routed is None
    export = tmp_path / 'run' / 'export'
    assert (export / 'model.safetensors').is_file() and (export / 'README.md').is_file()
    # the export loads with plain timm and reproduces the reported top-1 on the same images
    from timm_gkt.evaluation import predict, top1
    from timm_gkt.data import create_image_dataset
    from timm_gkt.models import load_model
    m = load_model(f'local-dir:{export}')
    ds = torch.utils.data.Subset(create_image_dataset('torch/fashion_mnist', data_dir, 'test'), range(400))
    (pred,), target = predict([m.model], [m.preprocessing], ds, progress=False)
    assert abs(top1(pred, target) - r['top1_after']) < 1e-6


def test_xekl_mcl_exports_the_slow_weights(tmp_path, micro_zoo, data_dir):
    """With τ close to 1 the slow copy barely leaves the initial student; the fast weights do move."""
    code, r = run_train(tmp_path, micro_zoo, data_dir, '--model', spec(micro_zoo, 'q_mlp'),
                        '--teachers', spec(micro_zoo, 'q_cnn'), '--transfer-method', 'xekl-mcl',
                        '--mcl-momentum', '0.999999', '--mcl-interval', '1', '--lr', '0.05')
    assert code == 0
    from safetensors.torch import load_file
    exported = load_file(str(tmp_path / 'run' / 'export' / 'model.safetensors'))
    initial = load_file(str(micro_zoo / 'q_mlp' / 'model.safetensors'))
    drift = max((exported[k].float() - initial[k].float()).abs().max().item() for k in initial)
    assert drift < 1e-3
    assert r['hyperparameters']['mcl_momentum'] == 0.999999


def test_mcl_momentum_is_scaled_to_run_length(tmp_path, micro_zoo, data_dir):
    from timm_gkt.mcl import scaled_mcl_momentum
    code, r = run_train(tmp_path, micro_zoo, data_dir, '--model', spec(micro_zoo, 'q_mlp'),
                        '--teachers', spec(micro_zoo, 'q_cnn'), '--transfer-method', 'xekl-mcl')
    assert code == 0
    steps = 384 // 64  # one epoch of the subset
    assert r['hyperparameters']['mcl_momentum'] == pytest.approx(scaled_mcl_momentum(steps, 2))
    # the derived τ is a result, not a flag: args.yaml replays to the same config
    args_yaml = tmp_path / 'run' / 'args.yaml'
    assert 'mcl_momentum_used' not in args_yaml.read_text()
    replayed = train.parse_args(['-c', str(args_yaml)])
    assert replayed.mcl_momentum is None and replayed.transfer_method == 'xekl-mcl'
    argv = ['--data-dir', str(data_dir), '--output', str(tmp_path), '--experiment', 'run', *QUICK,
            '--model', spec(micro_zoo, 'q_mlp'), '--teachers', spec(micro_zoo, 'q_cnn'), '--transfer-method', 'xekl-mcl']
    assert replayed == train.parse_args(argv)


def test_unsupervised_kldp(tmp_path, micro_zoo, data_dir):
    code, r = run_train(tmp_path, micro_zoo, data_dir, '--model', spec(micro_zoo, 'q_cnn'),
                        '--teachers', spec(micro_zoo, 'q_mlp'), '--dp-mode', 'unsupervised')
    assert code == 0
    assert r['dp_mode'] == 'unsupervised'
    assert 0.0 < r['teachers'][0]['routed_share'] < 100.0


@pytest.mark.parametrize('mode', ['sequential', 'parallel', 'soup'])
def test_multi_teacher_modes(mode, tmp_path, micro_zoo, data_dir):
    code, r = run_train(tmp_path, micro_zoo, data_dir, '--model', spec(micro_zoo, 'q_cnn'),
                        '--teachers', f"{spec(micro_zoo, 'q_mlp')},{spec(micro_zoo, 'q_vit')}",
                        '--multi-teacher', mode)
    assert code == 0
    check_results_schema(r)
    assert r['multi_teacher'] == mode
    # default order: ascending teacher top-1 (q_vit is the weakest micro-zoo model)
    tops = {t['name']: t['top1'] for t in r['teachers']}
    assert r['stage_order'] == sorted(tops, key=tops.get)
    stages = sorted({row['stage'] for row in r['epochs']})
    assert stages == ([0] if mode == 'parallel' else [0, 1])
    if mode == 'parallel':
        shares = [t['routed_share'] for t in r['teachers']]
        assert all(s is not None for s in shares) and sum(shares) <= 100.0 + 1e-6


def test_soup_is_the_average_of_the_stage_students(tmp_path, micro_zoo, data_dir):
    code, r = run_train(tmp_path, micro_zoo, data_dir, '--model', spec(micro_zoo, 'q_cnn'),
                        '--teachers', f"{spec(micro_zoo, 'q_mlp')},{spec(micro_zoo, 'q_vit')}",
                        '--multi-teacher', 'soup')
    from safetensors.torch import load_file
    run = tmp_path / 'run'
    a, b = load_file(str(run / 'stages' / 'stage0.safetensors')), load_file(str(run / 'stages' / 'stage1.safetensors'))
    exported = load_file(str(run / 'export' / 'model.safetensors'))
    key = next(k for k in a if a[k].is_floating_point() and not torch.equal(a[k], b[k]))
    assert torch.allclose(exported[key], (a[key] + b[key]) / 2, atol=1e-6)


def test_resume_from_checkpoint_matches_uninterrupted_run(tmp_path, micro_zoo, data_dir):
    args = ['--model', spec(micro_zoo, 'q_vit'), '--teachers', spec(micro_zoo, 'q_cnn'), '--epochs', '2',
            '--checkpoint-hist', '5']
    code, full = run_train(tmp_path, micro_zoo, data_dir, *args, experiment='full')
    assert code == 0
    ckpt = tmp_path / 'full' / 'checkpoints' / 'stage0-epoch1'
    assert (ckpt / 'run_state.json').is_file()
    code, resumed = run_train(tmp_path, micro_zoo, data_dir, *args, '--resume', str(ckpt), experiment='full')
    assert code == 0
    assert resumed['top1_after'] == full['top1_after']
    assert resumed['epochs'] == full['epochs'] or [e['top1'] for e in resumed['epochs']] == \
        [e['top1'] for e in full['epochs']]


def test_dry_run_checks_and_prints_plan(tmp_path, micro_zoo, data_dir, capsys):
    code, r = run_train(tmp_path, micro_zoo, data_dir, '--model', spec(micro_zoo, 'q_cnn'),
                        '--teachers', f"{spec(micro_zoo, 'q_mlp')},{spec(micro_zoo, 'q_vit')}", '--dry-run')
    out = capsys.readouterr().out
    assert code == 0 and r is None
    assert 'plan:' in out and 'dry run: all checks passed' in out
    assert not (tmp_path / 'run').exists()


@pytest.mark.parametrize('extra, message', [
    (['--teachers', 'test_vitt'], 'Did you mean'),
    (['--teachers', 'local-dir:/nonexistent/teacher'], 'does not exist'),
    (['--teachers', 'TEACHER', '--transfer-method', 'magic'], None),  # argparse rejects it (SystemExit)
    (['--transfer-method', 'kl'], 'needs a teacher'),
    (['--teachers', 'TEACHER', '--transfer-method', 'kl', '--multi-teacher', 'parallel', '--transfer-teacher',
      'TEACHER2'], 'only KL+DP'),
    (['--teachers', 'TEACHER', '--transfer-method', 'xekl', '--dp-mode', 'unsupervised'], 'kldp only'),
])
def test_bad_input_fails_in_one_line_before_training(extra, message, tmp_path, micro_zoo, data_dir, capsys):
    extra = [e.replace('TEACHER2', spec(micro_zoo, 'q_vit')).replace('TEACHER', spec(micro_zoo, 'q_mlp'))
             for e in extra]
    if message is None:
        with pytest.raises(SystemExit) as e:
            run_train(tmp_path, micro_zoo, data_dir, '--model', spec(micro_zoo, 'q_cnn'), *extra)
        assert e.value.code == 2
        return
    code, r = run_train(tmp_path, micro_zoo, data_dir, '--model', spec(micro_zoo, 'q_cnn'), *extra)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == train.EXIT_BAD_INPUT and r is None
    assert len(err) == 1 and err[0].startswith('error: ') and message in err[0]
    assert not (tmp_path / 'run').exists()


def test_teacher_with_other_label_space_is_refused(tmp_path, micro_zoo, data_dir, capsys, export_tiny):
    _, other = export_tiny(tmp_path / 'teacher100', label_names=[f'class{i}' for i in range(100)])
    code, _ = run_train(tmp_path, micro_zoo, data_dir, '--model', spec(micro_zoo, 'q_cnn'), '--teachers', other)
    err = capsys.readouterr().err
    assert code == train.EXIT_BAD_INPUT and '100 classes' in err and 'student predicts 10' in err


def test_teacher_with_permuted_label_names_is_mapped(tmp_path, micro_zoo, data_dir, capsys):
    """Same classes in another order: the teacher's logits are reordered by name, so its top-1 is unchanged."""
    import shutil
    perm_dir = tmp_path / 'q_mlp_permuted'
    shutil.copytree(micro_zoo / 'q_mlp', perm_dir)
    from safetensors.torch import load_file, save_file
    cfg = json.loads((perm_dir / 'config.json').read_text())
    names = cfg['label_names']
    order = list(reversed(range(len(names))))
    cfg['label_names'] = [names[i] for i in order]
    cfg['pretrained_cfg']['label_names'] = cfg['label_names']
    (perm_dir / 'config.json').write_text(json.dumps(cfg))
    sd = load_file(str(perm_dir / 'model.safetensors'))
    sd['head.weight'], sd['head.bias'] = sd['head.weight'][order].contiguous(), sd['head.bias'][order].contiguous()
    save_file(sd, str(perm_dir / 'model.safetensors'))
    code, r_perm = run_train(tmp_path, micro_zoo, data_dir, '--model', spec(micro_zoo, 'q_cnn'),
                             '--teachers', f'local-dir:{perm_dir}', '--dry-run')
    assert 'mapped to the student\'s classes by label name' in capsys.readouterr().out
    code, r_perm = run_train(tmp_path, micro_zoo, data_dir, '--model', spec(micro_zoo, 'q_cnn'),
                             '--teachers', f'local-dir:{perm_dir}', experiment='perm')
    code, r_orig = run_train(tmp_path, micro_zoo, data_dir, '--model', spec(micro_zoo, 'q_cnn'),
                             '--teachers', spec(micro_zoo, 'q_mlp'), experiment='orig')
    assert r_perm['teachers'][0]['top1'] == r_orig['teachers'][0]['top1']
    assert r_perm['teachers'][0]['rho_pos'] == r_orig['teachers'][0]['rho_pos']


def test_two_processes_match_one(tmp_path, micro_zoo, data_dir):
    """accelerate launch --multi_gpu --num_processes 2 on CPU: two gloo processes, same result as one.

    LayerNorm student (BatchNorm statistics are per process); no augmentation (each process
    draws its own random crops); per-process batch halved so the global batch is the same.
    """
    common = ['timm_gkt/train.py', '--model', spec(micro_zoo, 'q_vit'), '--teachers', spec(micro_zoo, 'q_cnn'),
              '--data-dir', str(data_dir), '--output', str(tmp_path), '--no-aug', '--train-subset', '384',
              '--eval-subset', '400', '--epochs', '1', '--seed', '3', '-j', '0']
    env = dict(os.environ, OMP_NUM_THREADS='1', ACCELERATE_USE_CPU='1')
    accelerate = [sys.executable, '-m', 'accelerate.commands.launch']
    one = subprocess.run([*accelerate, '--num_processes', '1', '--num_machines', '1', '--mixed_precision', 'no',
                          '--dynamo_backend', 'no', *common, '-b', '64', '--experiment', 'one'],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([*accelerate, '--multi_gpu', '--num_processes', '2', '--num_machines', '1',
                          '--mixed_precision', 'no', '--dynamo_backend', 'no', *common, '-b', '32',
                          '--experiment', 'two'], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-2000:]
    r1 = json.loads((tmp_path / 'one' / 'results.json').read_text())
    r2 = json.loads((tmp_path / 'two' / 'results.json').read_text())
    assert r1['hyperparameters']['num_processes'] == 1
    assert r2['hyperparameters']['num_processes'] == 2
    assert r2['eval_samples'] == r1['eval_samples'] == 400  # gather_for_metrics drops the padding samples
    assert r2['top1_before'] == r1['top1_before']
    # float reductions differ in order across processes: allow one image of difference
    assert abs(r2['top1_after'] - r1['top1_after']) <= 100.0 / 400 + 1e-9
    assert abs(r2['teachers'][0]['routed_share'] - r1['teachers'][0]['routed_share']) <= 1.0


def test_resume_auto_after_a_finished_run_starts_afresh_and_keeps_the_old_run(tmp_path, micro_zoo, data_dir):
    args = ['--model', spec(micro_zoo, 'q_cnn'), '--teachers', spec(micro_zoo, 'q_mlp'), '--resume', 'auto']
    code, first = run_train(tmp_path, micro_zoo, data_dir, *args, experiment='job')
    assert code == 0
    code, second = run_train(tmp_path, micro_zoo, data_dir, *args, experiment='job')
    assert code == 0
    kept = [p for p in tmp_path.iterdir() if p.name.startswith('job-')]
    assert len(kept) == 1 and (kept[0] / 'results.json').is_file()
    assert json.loads((kept[0] / 'results.json').read_text()) == first
    assert len(second['epochs']) == 1  # trained again, not "resumed" at the end


def test_ce_control_is_one_stage_even_with_several_teachers(tmp_path, micro_zoo, data_dir):
    code, r = run_train(tmp_path, micro_zoo, data_dir, '--model', spec(micro_zoo, 'q_cnn'), '--transfer-method', 'ce',
                        '--teachers', f"{spec(micro_zoo, 'q_mlp')},{spec(micro_zoo, 'q_vit')}")
    assert code == 0
    assert [row['stage'] for row in r['epochs']] == [0]
    assert len(r['teachers']) == 2 and all(t['routed_share'] is None for t in r['teachers'])
