"""The method registry (timm_gkt/methods.py): what each method needs, and create_task with named arguments."""
import argparse

import pytest
import torch
import torch.nn as nn

from timm_gkt.models.frozen import FrozenModel, frozen_copy
from timm_gkt.transfer.methods import METHODS, create_task, get_method, methods_using
from timm_gkt.models.load import Preprocessing
from timm_gkt.transfer.tasks import (
    CrossEntropyTask, KLDistillationTask, KLDPTask, ParallelKLDPTask, XEKLMCLTask, XEKLTask,
)

PREP = Preprocessing(input_size=(1, 8, 8), mean=(0.5,), std=(0.25,))
HYPER = dict(kd_temperature=2.0, xe_weight=0.25, mcl_momentum=0.9, mcl_interval=3, dp_mode='unsupervised')


@pytest.fixture
def setup():
    torch.manual_seed(0)
    student = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    teachers = [FrozenModel(nn.Sequential(nn.Flatten(), nn.Linear(64, 3)), PREP, PREP, name=f't{i}') for i in range(2)]
    return argparse.Namespace(student=student, teachers=teachers, frozen=frozen_copy(student, PREP))


def test_registry_covers_every_method():
    assert set(METHODS) == {'ce', 'kl', 'xekl', 'xekl-mcl', 'kldp'}


def test_what_each_method_needs():
    needs = {name: (m.needs_teacher, m.needs_frozen_student, m.routes_samples) for name, m in METHODS.items()}
    assert needs == {'ce': (False, False, False), 'kl': (True, False, False), 'xekl': (True, False, False),
                     'xekl-mcl': (True, False, False), 'kldp': (True, True, True)}
    assert methods_using('dp_mode') == ['kldp'] and methods_using('mcl_momentum') == ['xekl-mcl']
    assert methods_using('xe_weight') == ['xekl', 'xekl-mcl', 'kldp']
    assert methods_using('dp_routing') == methods_using('dp_calibration') == ['kldp']
    assert not get_method('ce').uses('kd_temperature')


def test_every_method_has_a_title_and_a_card_description():
    for m in METHODS.values():
        assert m.title and m.description.endswith('.') and len(m.description) > 40


def test_create_task_rejects_unknown_method_naming_the_choices(setup):
    with pytest.raises(ValueError) as info:
        create_task('kl-dp', setup.student, setup.teachers[:1], setup.frozen, **HYPER)
    message = str(info.value)
    assert "'kl-dp'" in message
    for method in ('ce', 'kl', 'xekl', 'xekl-mcl', 'kldp'):
        assert method in message


def test_create_task_builds_each_method_with_its_arguments(setup):
    s, args = setup, HYPER
    ce = create_task('ce', s.student, [], None, **args)
    assert type(ce) is CrossEntropyTask
    kl = create_task('kl', s.student, s.teachers[:1], None, **args)
    assert type(kl) is KLDistillationTask and kl.teacher is s.teachers[0] and kl.temperature == 2.0
    xekl = create_task('xekl', s.student, s.teachers[:1], None, **args)
    assert type(xekl) is XEKLTask and xekl.xe_weight == 0.25 and xekl.temperature == 2.0
    mcl = create_task('xekl-mcl', s.student, s.teachers[:1], None, **args)
    assert type(mcl) is XEKLMCLTask and mcl.momentum == 0.9 and mcl.interval == 3 and mcl.xe_weight == 0.25
    assert mcl.get_trainable_module(ema=True).decay == 0.9
    unlabelled = {**args, 'xe_weight': None}  # KL+DP's label term needs the labels unsupervised routing does not use
    kldp = create_task('kldp', s.student, s.teachers[:1], s.frozen, **unlabelled)
    assert type(kldp) is KLDPTask and kldp.frozen_student is s.frozen and kldp.dp_mode == 'unsupervised'
    assert kldp.xe_weight == 0.0 and kldp.routing == 'two-way' and kldp.calibration == (1.0, 1.0)
    labelled = create_task('kldp', s.student, s.teachers[:1], s.frozen, **{**args, 'dp_mode': 'supervised',
                                                                           'dp_routing': 'three-way'})
    assert labelled.xe_weight == 0.25 and labelled.routing == 'three-way'
    calibrated = create_task('kldp', s.student, s.teachers[:1], s.frozen, calibration=(1.5, 0.8),
                             **{**args, 'dp_mode': 'supervised', 'dp_calibration': 'temperature'})
    assert calibrated.calibration == (1.5, 0.8)
    assert calibrated.derived == {'calibration': {'teacher': 1.5, 'frozen_student': 0.8}}
    parallel = create_task(get_method('kldp'), s.student, tuple(s.teachers), s.frozen, **unlabelled)
    assert type(parallel) is ParallelKLDPTask and list(parallel.teachers) == s.teachers
    assert parallel.dp_mode == 'unsupervised' and parallel.temperature == 2.0
    for task in (ce, kl, xekl, kldp, parallel):
        assert task.trainable_module is s.student and task.eval_module() is s.student


def test_create_task_uses_method_defaults_for_what_is_not_given(setup):
    task = create_task('xekl-mcl', setup.student, setup.teachers[:1], None)
    assert task.temperature == 1.0 and task.xe_weight == 0.3 and task.momentum == 0.9999 and task.interval == 2


def test_a_run_with_this_projects_options_is_not_titled_as_the_papers_method():
    kldp = get_method('kldp')
    assert kldp.title_with({'xe_weight': 0.0, 'dp_routing': 'two-way', 'dp_calibration': 'none'}) == 'KL + DP'
    assert kldp.title_with({'xe_weight': 0.3, 'dp_routing': 'three-way', 'dp_calibration': 'temperature'}) == \
        "KL + DP (0.3 CE, three-way routing, calibrated routing; this project's extension)"
    assert get_method('xekl').title_with({'xe_weight': 0.3}) == 'XE-KL'
