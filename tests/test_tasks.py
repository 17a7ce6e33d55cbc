"""Transfer tasks (timm_gkt/tasks.py): frozen models, the TrainingTask contract, losses against objectives.py.

Every loss is recomputed here from the student's returned logits and the teacher /
frozen-student logits obtained independently (raw model, InputAdaptor, label
permutation), then compared with what the task returned. Models are tiny and built
in memory; nothing trains beyond a backward pass.
"""
import argparse
import copy

import pytest
import timm
import torch
import torch.nn as nn
from timm.task import TrainingTask

from timm_gkt.models import InputAdaptor, Preprocessing
from timm_gkt.objectives import (
    cross_entropy,
    kl_div_loss,
    kldp_loss,
    parallel_kldp_loss,
    route_among,
    route_to_teacher,
    xekl_loss,
)
from timm_gkt.tasks import (
    TASKS,
    CrossEntropyTask,
    FrozenModel,
    KLDistillationTask,
    KLDPTask,
    ParallelKLDPTask,
    XEKLMCLTask,
    XEKLTask,
    create_task,
    frozen_copy,
)

NUM_CLASSES = 3
BATCH = 16
STUDENT_PREP = Preprocessing(input_size=(1, 8, 8), mean=(0.5,), std=(0.25,))
# the teacher was "trained" on larger RGB images with other statistics
TEACHER_PREP = Preprocessing(input_size=(3, 12, 12), mean=(0.4, 0.5, 0.6), std=(0.2, 0.3, 0.4))
PERM = torch.tensor([2, 0, 1])


class TinyStudent(nn.Module):
    """Deterministic student (no dropout, no BN) so ``output`` can be compared with a plain forward."""

    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.fc1 = nn.Linear(64, 16)
        self.fc2 = nn.Linear(16, NUM_CLASSES)

    def forward(self, x):
        return self.fc2(torch.tanh(self.fc1(x.flatten(1))))


class NoisyNet(nn.Module):
    """BatchNorm and dropout: outputs change between calls and BN statistics move in train mode."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.5)
        self.head = nn.Linear(4 * 8 * 8, NUM_CLASSES)

    def forward(self, x):
        return self.head(self.drop(torch.relu(self.bn(self.conv(x))).flatten(1)))


class ConstantLogits(nn.Module):
    def __init__(self, row):
        super().__init__()
        self.bias = nn.Parameter(torch.tensor(row))

    def forward(self, x):
        return self.bias.expand(x.shape[0], -1) + 0 * x.flatten(1).sum(1, keepdim=True)


def vit_teacher(seed, scale=6.0):
    torch.manual_seed(seed)
    model = timm.create_model('test_vit', num_classes=NUM_CLASSES, in_chans=3, img_size=12, patch_size=4, depth=1)
    with torch.no_grad():
        # sharper logits so routing decisions differ from sample to sample
        model.head.weight.mul_(scale)
    return model.eval()


def student_batch(seed=1):
    g = torch.Generator().manual_seed(seed)
    pixels = torch.rand(BATCH, 1, 8, 8, generator=g)
    target = torch.randint(0, NUM_CLASSES, (BATCH,), generator=g)
    return (pixels - 0.5) / 0.25, target


def teacher_logits_by_hand(model, x, perm=PERM):
    """What the task's teacher must answer: adapted input, raw model, reordered classes."""
    with torch.no_grad():
        return model(InputAdaptor(STUDENT_PREP, TEACHER_PREP)(x))[:, perm].float()


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


# --- FrozenModel ---------------------------------------------------------------------------------

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


# --- registry and factory --------------------------------------------------------------------------

def task_args(**overrides):
    args = dict(kd_temperature=2.0, xe_weight=0.25, mcl_momentum=0.9, mcl_interval=3, dp_mode='unsupervised')
    args.update(overrides)
    return argparse.Namespace(**args)


def test_registry_covers_every_method():
    assert set(TASKS) == {'ce', 'kl', 'xekl', 'xekl-mcl', 'kldp'}


def test_create_task_rejects_unknown_method_naming_the_choices(setup):
    with pytest.raises(ValueError) as info:
        create_task('kl-dp', setup.student, setup.teachers[:1], setup.frozen, task_args())
    message = str(info.value)
    assert "'kl-dp'" in message
    for method in ('ce', 'kl', 'xekl', 'xekl-mcl', 'kldp'):
        assert method in message


def test_create_task_builds_each_method_with_its_arguments(setup):
    s, args = setup, task_args()
    ce = create_task('ce', s.student, [], None, args)
    assert type(ce) is CrossEntropyTask
    kl = create_task('kl', s.student, s.teachers[:1], None, args)
    assert type(kl) is KLDistillationTask and kl.teacher is s.teachers[0] and kl.temperature == 2.0
    xekl = create_task('xekl', s.student, s.teachers[:1], None, args)
    assert type(xekl) is XEKLTask and xekl.xe_weight == 0.25 and xekl.temperature == 2.0
    mcl = create_task('xekl-mcl', s.student, s.teachers[:1], None, args)
    assert type(mcl) is XEKLMCLTask and mcl.momentum == 0.9 and mcl.interval == 3 and mcl.xe_weight == 0.25
    assert mcl.get_trainable_module(ema=True).decay == 0.9
    kldp = create_task('kldp', s.student, s.teachers[:1], s.frozen, args)
    assert type(kldp) is KLDPTask and kldp.frozen_student is s.frozen and kldp.dp_mode == 'unsupervised'
    parallel = create_task('kldp', s.student, tuple(s.teachers), s.frozen, args)
    assert type(parallel) is ParallelKLDPTask and list(parallel.teachers) == s.teachers
    assert parallel.dp_mode == 'unsupervised' and parallel.temperature == 2.0
    for task in (ce, kl, xekl, kldp, parallel):
        assert task.trainable_module is s.student and task.eval_module() is s.student
