"""``--control ce`` end to end on the micro-zoo (timm_gkt/transfer/control.py, timm_gkt/cli/control.py): the control
is the run a user would make with ``--transfer-method ce`` (same start, data order, seed and budget), its paired
McNemar against the transferred student is the hand count, it resumes, and it stays out of the pushed export."""
from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from test_train import QUICK, own_predictions, run_train, spec
from test_train_hub import base_config, hub, train_job  # noqa: F401  (hub is a fixture)

from timm_gkt import train
from timm_gkt.cli import boundary

pytestmark = pytest.mark.slow
# KL-Dist at a high rate pulls the weak ViT far from where more training takes it: a significant paired difference
DIVERGING = ['--train-subset', '1024', '--transfer-method', 'kl', '--lr', '0.05', '--no-aug']


def same_weights(a, b) -> bool:
    from safetensors.torch import load_file
    x, y = load_file(str(a / 'model.safetensors')), load_file(str(b / 'model.safetensors'))
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def test_control_is_the_ce_run_and_its_paired_mcnemar_is_the_hand_count(tmp_path, micro_zoo, data_dir, capsys):
    models = ['--model', spec(micro_zoo, 'q_vit'), '--teachers', spec(micro_zoo, 'q_cnn')]
    code, r = run_train(tmp_path, micro_zoo, data_dir, *models, *DIVERGING, '--control', 'ce')
    out = capsys.readouterr().out
    assert code == boundary.EXIT_OK
    # the cost is said before anything is trained
    assert out.index('It is one more training run') < out.index('stage 1 [q_cnn] epoch 1/1: loss')
    run_dir = tmp_path / 'run'
    # the control is exactly the run a user would make with --transfer-method ce and the same flags
    code, ce = run_train(tmp_path, micro_zoo, data_dir, *models, *DIVERGING, '--transfer-method', 'ce',
                         experiment='ce')
    assert code == 0 and same_weights(run_dir / 'control' / 'export', tmp_path / 'ce' / 'export')
    assert (r['control']['top1'], r['control']['gains'], r['control']['losses']) == \
        (ce['top1_after'], ce['gains'], ce['losses'])
    assert r['control']['stages'] == 1 and r['control']['weights'] == 'control/export'

    # the paired McNemar, by hand from both students' own predictions on the same 400 images
    transferred, target = own_predictions(f'local-dir:{run_dir / "export"}', data_dir)
    control, _ = own_predictions(f'local-dir:{run_dir / "control" / "export"}', data_dir)
    gains = int(((transferred == target) & (control != target)).sum())
    losses = int(((transferred != target) & (control == target)).sum())
    n, k = gains + losses, min(gains, losses)
    p = min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n)
    versus = r['vs_control']
    assert (versus['gains'], versus['losses'], versus['eval_samples']) == (gains, losses, 400)
    assert versus['delta'] == pytest.approx(100 * (gains - losses) / 400)
    assert versus['delta'] == pytest.approx(r['top1_after'] - r['control']['top1'])
    assert versus['p_value'] == pytest.approx(p, rel=1e-9) and p < 0.05 and gains < losses
    assert versus['verdict']['word'] == 'worse than more training'
    assert f"vs more training: {versus['verdict']['text']}" in out

    # the control stays in the run folder: the export (what a push uploads) holds the transferred student only
    assert not same_weights(run_dir / 'export', run_dir / 'control' / 'export')
    assert not (run_dir / 'export' / 'control').exists()
    assert '| control top-1 (more training, CE) |' in (run_dir / 'export' / 'README.md').read_text()
    assert json.loads((run_dir / 'export' / 'results.json').read_text())['vs_control'] == versus
    # args.yaml replays the control too
    argv = ['--data-dir', str(data_dir), '--output', str(tmp_path), '--experiment', 'run', *QUICK, *models,
            *DIVERGING, '--control', 'ce']
    assert train.parse_args(['-c', str(run_dir / 'args.yaml')]) == train.parse_args(argv)


def test_control_has_the_transfers_budget_the_chained_ce_runs_of_the_study(tmp_path, micro_zoo, data_dir):
    """Two sequential teachers are two budgets: the control is one CE run continued for a second one from its
    export (the study's S__ce-x2), to the last bit."""
    teachers = f"{spec(micro_zoo, 'q_cnn')},{spec(micro_zoo, 'q_vit')}"
    code, r = run_train(tmp_path, micro_zoo, data_dir, '--model', spec(micro_zoo, 'q_mlp'), '--teachers', teachers,
                        '--no-aug', '--control', 'ce')
    assert code == 0 and r['control']['stages'] == 2
    assert [(row['stage'], row['teacher']) for row in r['control']['epochs']] == \
        [(0, 'cross-entropy control'), (1, 'cross-entropy control')]
    code, _ = run_train(tmp_path, micro_zoo, data_dir, '--model', spec(micro_zoo, 'q_mlp'), '--transfer-method', 'ce',
                        '--no-aug', experiment='ce1')
    assert code == 0
    code, ce2 = run_train(tmp_path, micro_zoo, data_dir, '--model', f"local-dir:{tmp_path / 'ce1' / 'export'}",
                          '--transfer-method', 'ce', '--no-aug', experiment='ce2')
    assert code == 0 and same_weights(tmp_path / 'run' / 'control' / 'export', tmp_path / 'ce2' / 'export')
    assert r['control']['top1'] == ce2['top1_after']


def test_an_interrupted_control_resumes_from_its_own_checkpoint(tmp_path, micro_zoo, data_dir):
    args = ['--model', spec(micro_zoo, 'q_vit'), '--teachers', spec(micro_zoo, 'q_cnn'), '--epochs', '2',
            '--checkpoint-hist', '5', '--control', 'ce', '--resume', 'auto']
    code, full = run_train(tmp_path, micro_zoo, data_dir, *args)
    assert code == 0
    run_dir = tmp_path / 'run'
    control_export = run_dir / 'control' / 'export'
    before = {p.name: p.read_bytes() for p in control_export.iterdir()}
    # as if the process died during the control's second epoch: its last checkpoint, its results and export gone
    for path in (run_dir / 'results.json', run_dir / 'control' / 'checkpoints' / 'stage0-epoch2',
                 run_dir / 'control' / 'stages', control_export):
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    code, resumed = run_train(tmp_path, micro_zoo, data_dir, *args)
    assert code == 0

    def without_throughput(r):
        rows = lambda rs: [{k: v for k, v in e.items() if k != 'img_per_s'} for e in rs]  # noqa: E731
        return {**r, 'epochs': rows(r['epochs']), 'control': {**r['control'], 'epochs': rows(r['control']['epochs'])}}
    assert without_throughput(resumed) == without_throughput(full)
    assert {p.name: p.read_bytes() for p in control_export.iterdir()} == before


@pytest.mark.parametrize('extra, words', [
    (['--push-beat-control'], '--push-beat-control compares the student with the CE control, which only --control ce '
                              'trains; add --control ce'),
    (['--control', 'ce', '--transfer-method', 'ce'], '--control ce compares a transfer with more training, and '
                                                     '--transfer-method ce is that training already'),
])
def test_control_flags_that_cannot_work_are_refused_in_one_sentence(tmp_path, micro_zoo, data_dir, capsys, extra,
                                                                   words):
    code, r = run_train(tmp_path, micro_zoo, data_dir, '--model', spec(micro_zoo, 'q_cnn'), '--teachers',
                        spec(micro_zoo, 'q_mlp'), *extra)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == boundary.EXIT_BAD_INPUT and r is None and not (tmp_path / 'run').exists()
    assert len(err) == 1 and err[0].startswith(f'error: {words}')


def test_dry_run_states_the_cost_of_the_control(tmp_path, micro_zoo, data_dir, capsys):
    teachers = f"{spec(micro_zoo, 'q_mlp')},{spec(micro_zoo, 'q_vit')}"
    code, _ = run_train(tmp_path, micro_zoo, data_dir, '--model', spec(micro_zoo, 'q_cnn'), '--teachers', teachers,
                        '--control', 'ce', '--dry-run')
    out = capsys.readouterr().out
    assert code == 0 and not (tmp_path / 'run').exists()
    assert ('  control: plain cross-entropy from the same student, data order, seed and budget (2 stage(s) of 1 '
            'epoch(s))') in out
    assert 'one more training run' in out and 'the teacher cache does not help it' in out


def test_ci_job_that_does_not_beat_more_training_exits_4_and_creates_nothing(tmp_path, hub, micro_zoo,  # noqa: F811
                                                                             data_dir):
    """The gate's start requirement passes (min delta -100), the control requirement does not: exit 4, not 3."""
    cfg = base_config(micro_zoo, data_dir, tmp_path, model=spec(micro_zoo, 'q_vit'),
                      teachers=[spec(micro_zoo, 'q_cnn')], transfer_method='kl', lr=0.05, train_subset=1024,
                      eval_subset=400, seed=3, no_aug=True, control='ce', push_to_hub='alice/q_vit-gkt',
                      push_min_delta=-100.0, push_beat_control=True)
    proc = train_job(tmp_path, hub, cfg)
    assert proc.returncode == boundary.EXIT_NOT_BETTER_THAN_CONTROL == 4, proc.stderr[-3000:]
    assert 'Not pushed: the student is no better than more training: -8.75 points against the CE control' \
        in proc.stdout
    summary = (tmp_path / 'job_summary.md').read_text()
    assert '| control top-1 (more training, CE) |' in summary and '**vs more training:** -8.75 points' in summary
    assert '**Decision:** Not pushed: the student is no better than more training' in summary
    assert not any('repos/create' in c or 'commit' in c for c in hub.calls())


def test_control_none_turns_off_the_control_of_a_config_file(tmp_path):
    config = tmp_path / 'job.yaml'
    config.write_text('model: resnet18\nteachers: [resnet34]\ncontrol: ce\n')
    assert train.parse_args(['-c', str(config)]).control == 'ce'
    assert train.parse_args(['-c', str(config), '--control', 'none']).control is None
