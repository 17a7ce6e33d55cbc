"""Preflight's checks of the models (timm_gkt/cli/checks.py) that need the data: a teacher's classes matched once
the dataset has named an unnamed student, and models far below chance refused after the "before" evaluation,
before the run folder exists. The bad inputs that need no data are rows of tests/test_preflight.py."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import FASHION_LABELS
from timm_gkt import train
from timm_gkt.cli.config import parse_args
from timm_gkt.cli.preflight import preflight

FAST = ['--train-subset', '256', '--eval-subset', '200', '-b', '64', '--epochs', '1', '--seed', '3']


def without_label_names(folder: Path) -> None:
    cfg = json.loads((folder / 'config.json').read_text())
    cfg.pop('label_names', None), cfg.get('pretrained_cfg', {}).pop('label_names', None)
    (folder / 'config.json').write_text(json.dumps(cfg))


def test_a_teachers_permutation_is_decided_after_the_dataset_names_an_unnamed_student(tmp_path, export_tiny,
                                                                                      data_dir, capsys):
    """The student has no label names; --trust-label-order takes Fashion-MNIST's order as its own, so the teacher,
    whose names are in reverse order, must be mapped by them (before: no permutation at all, and a warning)."""
    export_tiny(tmp_path / 'anonymous', seed=0)
    without_label_names(tmp_path / 'anonymous')
    _, teacher = export_tiny(tmp_path / 'reversed', seed=1, label_names=FASHION_LABELS[::-1])
    plan = preflight(parse_args(['--model', f'local-dir:{tmp_path / "anonymous"}', '--teachers', teacher,
                                 '--data-dir', str(data_dir), '--trust-label-order', '--dry-run', *FAST]))
    assert plan.student.label_names == tuple(FASHION_LABELS)  # named by the dataset
    assert plan.teachers[teacher].label_perm.tolist() == list(range(9, -1, -1))
    assert 'note: teacher reversed orders its classes differently' in capsys.readouterr().out


@pytest.fixture
def misnamed_teacher(micro_zoo, tmp_path) -> str:
    """q_mlp with its label names shifted by one class: each prediction is read as the next class, so it is
    right on almost no image, far below the 10% of guessing (a class-order mismatch, not a weak teacher)."""
    folder = tmp_path / 'q_mlp_shifted'
    shutil.copytree(micro_zoo / 'q_mlp', folder)
    cfg = json.loads((folder / 'config.json').read_text())
    names = cfg['label_names'][1:] + cfg['label_names'][:1]
    cfg['label_names'] = names
    cfg.get('pretrained_cfg', {}).pop('label_names', None)
    (folder / 'config.json').write_text(json.dumps(cfg))
    return f'local-dir:{folder}'


@pytest.mark.slow
def test_a_teacher_far_below_chance_is_refused_before_the_run_folder_exists(misnamed_teacher, micro_zoo, data_dir,
                                                                           tmp_path, capsys):
    out = tmp_path / 'out'
    argv = ['--model', f'local-dir:{micro_zoo / "q_cnn"}', '--teachers', misnamed_teacher, '--data-dir', str(data_dir),
            '--output', str(out), '--experiment', 'run', *FAST]
    assert train.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()  # the evaluation's progress bar, then one error line
    assert [line for line in err if 'error:' in line] == [err[-1]]
    assert err[-1].startswith('error: teacher q_mlp_shifted is right on ')
    assert 'of the 200 evaluation images, far below the 10.00% of guessing, which points to classes in another ' \
           'order; fix its label_names (or --class-map), or pass --allow-below-chance' in err[-1]
    assert not out.exists()  # refused after the "before" evaluation, before anything was written
    # forced: it trains (and routes almost nothing to a teacher that is never more confident in the true class)
    assert train.main([*argv, '--allow-below-chance']) == 0
    results = json.loads((out / 'run' / 'results.json').read_text())
    assert results['teachers'][0]['top1'] < 5.0
