"""Transfer tasks (timm_gkt/tasks.py): the TrainingTask contract, losses against objectives.py.

Every loss is recomputed here from the student's returned logits and the teacher /
frozen-student logits obtained independently (raw model, InputAdaptor, label
permutation), then compared with what the task returned. Models are tiny and built
in memory; nothing trains beyond a backward pass.
"""
import argparse

import pytest
import torch
from timm.task import TrainingTask
from tinynets import BATCH, NUM_CLASSES, PERM, STUDENT_PREP, TEACHER_PREP, TinyStudent, student_batch, vit_teacher
from tinynets import teacher_logits_by_hand

from timm_gkt.models.frozen import FrozenModel, frozen_copy
from timm_gkt.transfer.objectives import (
    cross_entropy, kl_div_loss, kldp_loss, parallel_kldp_loss, route_among, route_to_teacher, xekl_loss,
)
from timm_gkt.transfer.tasks import (
    CrossEntropyTask, KLDistillationTask, KLDPTask, ParallelKLDPTask, XEKLMCLTask, XEKLTask,
)


@pytest.fixture
def setup():
    """Student (already moved away from its frozen copy), two teachers, frozen student, a batch."""
    student = TinyStudent()
    frozen = frozen_copy(student, STUDENT_PREP)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(7)))
    raw_teachers = [vit_teacher(11), vit_teacher(12)]
    teachers = [FrozenModel(m, STUDENT_PREP, TEACHER_PREP, PERM, name=f't{i}') for i, m in enumerate(raw_teachers)]
    x, y = student_batch()
    return argparse.Namespace(student=student, frozen=frozen, teachers=teachers, raw_teachers=raw_teachers, x=x, y=y)


# --- the TrainingTask contract and the losses ------------------------------------------------------

def build(name, s):
    if name == 'ce':
        return CrossEntropyTask(s.student)
    if name == 'kl':
        return KLDistillationTask(s.student, s.teachers[0], temperature=2.0)
    if name == 'xekl':
        return XEKLTask(s.student, s.teachers[0], temperature=2.0, xe_weight=0.25)
    if name == 'xekl-mcl':
        return XEKLMCLTask(s.student, s.teachers[0], temperature=2.0, xe_weight=0.25, momentum=0.9, interval=2)
    if name == 'kldp':
        return KLDPTask(s.student, s.teachers[0], s.frozen, temperature=2.0)
    if name == 'kldp-unsupervised':
        return KLDPTask(s.student, s.teachers[0], s.frozen, temperature=2.0, dp_mode='unsupervised')
    if name == 'parallel':
        return ParallelKLDPTask(s.student, s.teachers, s.frozen, temperature=2.0)
    if name == 'parallel-unsupervised':
        return ParallelKLDPTask(s.student, s.teachers, s.frozen, temperature=2.0, dp_mode='unsupervised')
    raise KeyError(name)


ALL_TASKS = ['ce', 'kl', 'xekl', 'xekl-mcl', 'kldp', 'kldp-unsupervised', 'parallel', 'parallel-unsupervised']


@pytest.mark.parametrize('name', ALL_TASKS)
def test_task_follows_the_training_task_contract(name, setup):
    task = build(name, setup)
    assert isinstance(task, TrainingTask)
    assert task.trainable_module is setup.student
    task.train()
    out = task(setup.x, setup.y)
    assert out['loss'].dim() == 0 and out['loss'].requires_grad
    assert out['output'].shape == (BATCH, NUM_CLASSES)
    assert torch.equal(out['output'], setup.student(setup.x))
    # logged parts are detached numbers
    assert all(not v.requires_grad for k, v in out.items() if k not in ('loss', 'output'))
    # teachers and the frozen student stayed frozen while the task trains
    for frozen in list(getattr(task, 'teachers', [])) + [getattr(task, 'teacher', None),
                                                         getattr(task, 'frozen_student', None)]:
        if frozen is not None:
            assert not any(m.training for m in frozen.modules())
    assert setup.student.training


@pytest.mark.parametrize('name', ALL_TASKS)
def test_gradients_reach_only_the_student(name, setup):
    task = build(name, setup)
    task.train()
    task(setup.x, setup.y)['loss'].backward()
    student_params = list(setup.student.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in student_params)
    student_ids = {id(p) for p in student_params}
    others = [p for p in task.parameters() if id(p) not in student_ids]
    others += [p for m in setup.raw_teachers for p in m.parameters()] + list(setup.frozen.parameters())
    assert others  # the check below is about something
    assert all(p.grad is None for p in others)


def test_cross_entropy_task_loss(setup):
    out = build('ce', setup)(setup.x, setup.y)
    expected = cross_entropy(out['output'].detach(), setup.y)
    assert out['loss'].item() == pytest.approx(expected.item(), rel=1e-6)
    assert out['ce'].item() == pytest.approx(expected.item(), rel=1e-6)
    # cross-entropy on logits, by hand: mean of -log softmax at the true class
    manual = -torch.log_softmax(out['output'].detach(), -1)[torch.arange(BATCH), setup.y].mean()
    assert out['loss'].item() == pytest.approx(manual.item(), rel=1e-6)


def test_kl_distillation_task_loss_uses_the_adapted_permuted_teacher_and_temperature(setup):
    out = build('kl', setup)(setup.x, setup.y)
    z_t = teacher_logits_by_hand(setup.raw_teachers[0], setup.x)
    expected = kl_div_loss(out['output'].detach(), z_t, 2.0).item()
    assert out['loss'].item() == pytest.approx(expected, rel=1e-5)
    # neither the unadapted-order logits nor temperature 1 give the same number
    assert expected != pytest.approx(kl_div_loss(out['output'].detach(), z_t, 1.0).item(), rel=1e-3)
    wrong_order = teacher_logits_by_hand(setup.raw_teachers[0], setup.x, perm=torch.arange(3))
    assert expected != pytest.approx(kl_div_loss(out['output'].detach(), wrong_order, 2.0).item(), rel=1e-3)


@pytest.mark.parametrize('name', ['xekl', 'xekl-mcl'])
def test_xekl_task_loss_and_parts(name, setup):
    out = build(name, setup)(setup.x, setup.y)
    z_s = out['output'].detach()
    z_t = teacher_logits_by_hand(setup.raw_teachers[0], setup.x)
    loss, kl, ce = xekl_loss(z_s, z_t, setup.y, xe_weight=0.25, temperature=2.0)
    assert out['loss'].item() == pytest.approx(loss.item(), rel=1e-5)
    assert out['kl'].item() == pytest.approx(kl_div_loss(z_s, z_t, 2.0).item(), rel=1e-5)
    assert out['ce'].item() == pytest.approx(cross_entropy(z_s, setup.y).item(), rel=1e-5)
    assert out['loss'].item() == pytest.approx(0.75 * out['kl'].item() + 0.25 * out['ce'].item(), rel=1e-5)


def test_kldp_task_routes_like_route_to_teacher_and_matches_kldp_loss(setup):
    out = build('kldp', setup)(setup.x, setup.y)
    z_s = out['output'].detach()
    z_t = teacher_logits_by_hand(setup.raw_teachers[0], setup.x)
    with torch.no_grad():
        z_st = setup.frozen.model(setup.x)
    mask = route_to_teacher(z_t, z_st, setup.y)
    n = int(mask.sum())
    assert 0 < n < BATCH  # a mixed batch: both targets are in play
    assert out['routed_share'].item() == pytest.approx(mask.float().mean().item())
    assert out['route_counts'].tolist() == [BATCH - n, n]
    expected, _ = kldp_loss(z_s, z_t, z_st, setup.y, 2.0)
    assert out['loss'].item() == pytest.approx(expected.item(), rel=1e-5)
    # and by the definition: KL towards teacher rows where routed, frozen-student rows elsewhere
    by_rows = kl_div_loss(z_s, torch.where(mask[:, None], z_t, z_st), 2.0)
    assert out['loss'].item() == pytest.approx(by_rows.item(), rel=1e-5)
    # flips counted from the teacher's and the frozen student's own predictions
    pos = (z_t.argmax(-1) == setup.y) & (z_st.argmax(-1) != setup.y)
    neg = (z_st.argmax(-1) == setup.y) & (z_t.argmax(-1) != setup.y)
    assert out['flip_counts'].tolist() == [int(pos.sum()), int((pos & mask).sum()),
                                           int(neg.sum()), int((neg & mask).sum())]


def test_kldp_unsupervised_ignores_the_target(setup):
    task = build('kldp-unsupervised', setup)
    out = task(setup.x, setup.y)
    shuffled = setup.y[torch.randperm(BATCH, generator=torch.Generator().manual_seed(3))]
    other = (setup.y + 1) % NUM_CLASSES
    for target in (shuffled, other):
        again = task(setup.x, target)
        assert torch.equal(again['loss'], out['loss'])
        assert torch.equal(again['route_counts'], out['route_counts'])
    z_t = teacher_logits_by_hand(setup.raw_teachers[0], setup.x)
    with torch.no_grad():
        z_st = setup.frozen.model(setup.x)
    mask = route_to_teacher(z_t, z_st, None)
    assert out['routed_share'].item() == pytest.approx(mask.float().mean().item())
    expected, _ = kldp_loss(out['output'].detach(), z_t, z_st, None, 2.0)
    assert out['loss'].item() == pytest.approx(expected.item(), rel=1e-5)
    # the supervised task does use the target: the other labels change its routing
    supervised = build('kldp', setup)
    assert not torch.equal(supervised(setup.x, setup.y)['route_counts'], supervised(setup.x, other)['route_counts'])


def test_kldp_task_rejects_unknown_dp_mode(setup):
    with pytest.raises(ValueError, match='supervised or unsupervised'):
        KLDPTask(setup.student, setup.teachers[0], setup.frozen, dp_mode='unsupervized')


def test_parallel_kldp_task_rejects_unknown_dp_mode(setup):
    with pytest.raises(ValueError):
        ParallelKLDPTask(setup.student, setup.teachers, setup.frozen, dp_mode='unsupervized')


@pytest.mark.parametrize('dp_mode', ['supervised', 'unsupervised'])
def test_parallel_kldp_task_matches_parallel_kldp_loss(dp_mode, setup):
    task = build('parallel' if dp_mode == 'supervised' else 'parallel-unsupervised', setup)
    out = task(setup.x, setup.y)
    with torch.no_grad():
        z_st = setup.frozen.model(setup.x)
    candidates = torch.stack([z_st] + [teacher_logits_by_hand(m, setup.x) for m in setup.raw_teachers])
    target = setup.y if dp_mode == 'supervised' else None
    choice = route_among(candidates, target)
    counts = out['route_counts']
    assert counts.shape == (3,) and int(counts.sum()) == BATCH
    assert counts.tolist() == torch.bincount(choice, minlength=3).tolist()
    assert out['routed_share'].item() == pytest.approx((choice > 0).float().mean().item())
    expected, _ = parallel_kldp_loss(out['output'].detach(), candidates, target, 2.0)
    assert out['loss'].item() == pytest.approx(expected.item(), rel=1e-5)
    if dp_mode == 'unsupervised':
        again = task(setup.x, (setup.y + 1) % NUM_CLASSES)
        assert torch.equal(again['loss'], out['loss']) and torch.equal(again['route_counts'], counts)


def test_parallel_routing_uses_more_than_one_candidate(setup):
    counts = build('parallel', setup)(setup.x, setup.y)['route_counts']
    assert (counts > 0).sum() >= 2  # otherwise the tests above would not tell candidates apart
