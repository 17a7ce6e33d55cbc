"""The models a transfer does not train (timm_gkt/frozen.py): FrozenModel, the frozen student's clone, the
label permutation applied in one place, and Teacher's lazy load and release."""
import copy

import pytest
import torch
import torch.nn as nn
from tinynets import (
    PERM, STUDENT_PREP, TEACHER_PREP, ConstantLogits, NoisyNet, TinyStudent, student_batch, vit_teacher,
)

from timm_gkt.models.frozen import FrozenModel, InStudentOrder, Teacher, frozen_copy, stage_frozen_models
from timm_gkt.transfer.methods import get_method
from timm_gkt.errors import LabelSpaceError
from timm_gkt.models.load import load_model

def test_frozen_model_stays_in_eval_mode_when_its_parent_trains():
    net = NoisyNet()
    with torch.no_grad():  # give BN non-trivial statistics first
        net.bn.running_mean.copy_(torch.tensor([0.1, -0.2, 0.3, 0.0]))
        net.bn.running_var.copy_(torch.tensor([1.5, 0.5, 2.0, 1.0]))
    frozen = FrozenModel(net, STUDENT_PREP, STUDENT_PREP, name='frozen')
    parent = nn.ModuleDict({'frozen': frozen, 'other': nn.Dropout(0.5)})
    parent.train()
    assert parent['other'].training  # the parent really is in train mode
    assert not frozen.training and not any(m.training for m in frozen.modules())
    stats = (net.bn.running_mean.clone(), net.bn.running_var.clone(), net.bn.num_batches_tracked.clone())
    x, _ = student_batch()
    first, second = frozen(x), frozen(x)
    assert torch.equal(first, second)  # dropout (p=0.5) inactive
    assert torch.equal(net.bn.running_mean, stats[0])
    assert torch.equal(net.bn.running_var, stats[1])
    assert int(net.bn.num_batches_tracked) == int(stats[2]) == 0
    # and the output is the eval-mode output of the model itself
    with torch.no_grad():
        assert torch.equal(first, copy.deepcopy(net).eval()(x))


def test_frozen_model_has_no_grad_even_for_an_input_that_requires_grad():
    frozen = FrozenModel(TinyStudent(), STUDENT_PREP, STUDENT_PREP)
    assert all(not p.requires_grad for p in frozen.parameters())
    x, _ = student_batch()
    out = frozen(x.requires_grad_(True))
    assert not out.requires_grad and out.grad_fn is None
    assert out.dtype == torch.float32


def test_frozen_model_feeds_the_teacher_its_own_size_channels_and_statistics():
    teacher = vit_teacher(3)
    seen = []
    teacher.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    frozen = FrozenModel(teacher, STUDENT_PREP, TEACHER_PREP)
    # a uniform grey image of pixel value 0.7, normalised the student's way
    value = 0.7
    x = torch.full((2, 1, 8, 8), (value - 0.5) / 0.25)
    frozen(x)
    assert len(seen) == 1 and seen[0].shape == (2, 3, 12, 12)
    expected = [(value - m) / s for m, s in zip(TEACHER_PREP.mean, TEACHER_PREP.std)]  # 1.5, 0.667, 0.25
    for c in range(3):
        assert seen[0][:, c] == pytest.approx(torch.full((2, 12, 12), expected[c]), abs=1e-5)


def test_frozen_model_reorders_teacher_logits_into_student_class_order():
    frozen = FrozenModel(ConstantLogits([1.0, 2.0, 3.0]), STUDENT_PREP, STUDENT_PREP, label_perm=PERM)
    x, _ = student_batch()
    out = frozen(x[:2])
    # student class i is teacher class PERM[i]: [z2, z0, z1]
    assert out.tolist() == [[3.0, 1.0, 2.0], [3.0, 1.0, 2.0]]
    unpermuted = FrozenModel(ConstantLogits([1.0, 2.0, 3.0]), STUDENT_PREP, STUDENT_PREP)
    assert unpermuted(x[:1]).tolist() == [[1.0, 2.0, 3.0]]


def test_frozen_copy_is_a_clone_not_an_alias():
    student = TinyStudent()
    student.train()
    frozen = frozen_copy(student, STUDENT_PREP)
    x, _ = student_batch()
    before = frozen(x)
    for ps, pf in zip(student.parameters(), frozen.model.parameters()):
        assert ps.data_ptr() != pf.data_ptr()
        assert torch.equal(ps, pf)
    with torch.no_grad():
        student.fc2.weight.add_(1.0)
        student.fc2.bias.sub_(2.0)
    assert torch.equal(frozen(x), before)
    assert not torch.equal(student(x), before)
    # freezing the copy left the student trainable and in train mode
    assert all(p.requires_grad for p in student.parameters())
    assert student.training

# --- the label permutation, in one place -----------------------------------------------------------

def test_in_student_order_reorders_logits_and_keeps_the_models_mode():
    net = ConstantLogits([1.0, 2.0, 3.0]).eval()
    x, _ = student_batch()
    wrapped = InStudentOrder(net, PERM)
    assert not wrapped.training  # predict() restores each model's mode: the wrapper must report the model's
    assert wrapped(x[:1]).tolist() == [[3.0, 1.0, 2.0]]
    assert InStudentOrder(net)(x[:1]).tolist() == [[1.0, 2.0, 3.0]]
    # FrozenModel goes through the same module
    frozen = FrozenModel(net, STUDENT_PREP, STUDENT_PREP, label_perm=PERM)
    assert isinstance(frozen.net, InStudentOrder) and frozen.model is net


# --- Teacher ----------------------------------------------------------------------------------------


@pytest.fixture(scope='module')
def folders(tmp_path_factory, export_tiny):
    """A student and a teacher with the same classes in reverse order (and another input size)."""
    from conftest import FASHION_LABELS
    root = tmp_path_factory.mktemp('frozen')
    _, student = export_tiny(root / 'student', seed=0)
    _, teacher = export_tiny(root / 'teacher', seed=3, label_names=FASHION_LABELS[::-1], size=32, patch=8,
                             head_scale=5.0)
    _, other = export_tiny(root / 'other', seed=4, label_names=[f'c{i}' for i in range(10)])
    return student, teacher, other


def test_teacher_maps_its_classes_onto_the_students_once(folders):
    student_spec, teacher_spec, _ = folders
    student = load_model(student_spec)
    teacher = Teacher.load(teacher_spec, student)
    assert teacher.name == 'teacher' and teacher.spec.text == teacher_spec
    assert teacher.label_perm.tolist() == list(range(9, -1, -1))
    assert teacher.preprocessing.input_size == (1, 32, 32) and teacher.num_classes == 10
    x = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        own = teacher.model(x)
        assert torch.equal(teacher.network(x), own.flip(-1))  # evaluation: student order
        adapted = teacher.frozen(student.preprocessing)  # training: the student's 28 px batch, student order
        z = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(1))
        assert torch.equal(adapted(z), teacher.model(adapted.adaptor(z)).flip(-1))


def test_teacher_with_other_label_names_is_refused(folders):
    student_spec, _, other = folders
    with pytest.raises(LabelSpaceError, match='other label names'):
        Teacher.load(other, load_model(student_spec))


def test_a_released_teacher_is_loaded_again_from_its_spec_with_the_same_weights(folders):
    student_spec, teacher_spec, _ = folders
    teacher = Teacher.load(teacher_spec, load_model(student_spec))
    before = {k: v.clone() for k, v in teacher.model.state_dict().items()}
    teacher.release()
    assert not teacher.loaded
    reloaded = teacher.model
    assert teacher.loaded and not reloaded.training
    assert all(torch.equal(before[k], v) for k, v in reloaded.state_dict().items())


def test_stage_frozen_models_builds_what_the_method_needs(folders):
    student_spec, teacher_spec, _ = folders
    student = load_model(student_spec)
    teacher = Teacher.load(teacher_spec, student)
    for method, n_teachers, has_frozen in (('kldp', 1, True), ('kl', 1, False), ('ce', 0, False)):
        frozen = stage_frozen_models(get_method(method), student.model, student.preprocessing, [teacher], 'cpu')
        assert len(frozen.teachers) == n_teachers and (frozen.frozen_student is not None) == has_frozen
    kldp = stage_frozen_models(get_method('kldp'), student.model, student.preprocessing, [teacher], 'cpu')
    clone = kldp.frozen_student.model
    assert clone is not student.model and all(
        torch.equal(a, b) for a, b in zip(clone.parameters(), student.model.parameters()))
