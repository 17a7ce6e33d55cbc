"""MCL: the slow copy of XEKLMCLTask (timm ModelEmaV3) and the momentum scaling rule in timm_gkt/mcl.py.

METHOD.md: every N optimizer steps θ_slow ← τ·θ_slow + (1-τ)·θ_fast for floating
parameters and buffers, integer buffers copied; θ_slow starts as a clone of the
initial student and is what gets evaluated. The expected slow weights are computed
here from snapshots, with τ = 0.9 so one interpolation is a visible change.
"""
import math

import pytest
import torch
import torch.nn as nn

from timm_gkt.transfer.stages import PAPER_INTERVAL, PAPER_MOMENTUM, retained_share, scaled_mcl_momentum
from timm_gkt.models.load import Preprocessing
from timm_gkt.models.frozen import FrozenModel
from timm_gkt.transfer.tasks import XEKLMCLTask

PREP = Preprocessing(input_size=(1, 8, 8), mean=(0.5,), std=(0.25,))
TAU = 0.9
INTERVAL = 3


class BNNet(nn.Module):
    """Tiny conv + BatchNorm classifier: float buffers (running stats) and an integer one (num_batches_tracked)."""

    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(1, 2, 3)
        self.bn = nn.BatchNorm2d(2)
        self.head = nn.Linear(2 * 6 * 6, 3)

    def forward(self, x):
        return self.head(torch.relu(self.bn(self.conv(x))).flatten(1))


def batch(seed=0, n=8):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 3, (n,), generator=g)


def make_task(momentum=TAU, interval=INTERVAL):
    student = BNNet(0)
    teacher = FrozenModel(BNNet(1), PREP, PREP)
    return XEKLMCLTask(student, teacher, momentum=momentum, interval=interval), student


def move_fast_weights(student, seed=5, bn_batches=4):
    """What training does to the fast model: BN statistics move, the counter counts, weights change."""
    student.train()
    with torch.no_grad():
        for i in range(bn_batches):
            student(batch(seed + i)[0] * 2 + 1)
        g = torch.Generator().manual_seed(seed)
        for p in student.parameters():
            p.add_(torch.randn(p.shape, generator=g))


def snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def assert_interpolated(slow_after, slow_before, fast, tau=TAU):
    floats = [k for k, v in slow_before.items() if v.is_floating_point()]
    assert 'bn.running_mean' in floats and 'bn.running_var' in floats and 'head.weight' in floats
    for k in floats:
        expected = tau * slow_before[k] + (1 - tau) * fast[k]
        assert torch.allclose(slow_after[k], expected, atol=1e-6), k
    assert torch.equal(slow_after['bn.num_batches_tracked'], fast['bn.num_batches_tracked'])


# --- the slow copy ---------------------------------------------------------------------------------

def test_slow_copy_is_a_clone_of_the_initial_student():
    task, student = make_task()
    slow = task.eval_module()
    assert slow is not student
    initial = snapshot(student)
    for (k, vs), vf in zip(slow.state_dict().items(), student.state_dict().values()):
        assert vs.data_ptr() != vf.data_ptr(), k
        assert torch.equal(vs, vf), k
    move_fast_weights(student)
    assert not torch.equal(student.head.weight, initial['head.weight'])
    for k, v in slow.state_dict().items():
        assert torch.equal(v, initial[k]), k


@pytest.mark.parametrize('interval', [1, 2, INTERVAL])
def test_first_interpolation_already_uses_tau_not_a_copy_of_the_fast_weights(interval):
    # interval 1 is where timm's warm-up bites: ModelEmaV3.update(step=1) uses decay 0 (a plain copy)
    task, student = make_task(interval=interval)
    slow_before = snapshot(task.eval_module())
    move_fast_weights(student)
    fast = snapshot(student)
    assert int(fast['bn.num_batches_tracked']) == 4 and int(slow_before['bn.num_batches_tracked']) == 0
    task.after_optimizer_step(interval)  # the first step on which an interpolation happens
    slow_after = snapshot(task.eval_module())
    assert_interpolated(slow_after, slow_before, fast)
    # 90% of the slow copy is still the initial student: far from the fast weights
    assert not torch.allclose(slow_after['head.weight'], fast['head.weight'], atol=1e-2)


@pytest.mark.parametrize('step', [1, 2, 4, 5, 7])
def test_no_interpolation_between_intervals(step):
    task, student = make_task()
    slow_before = snapshot(task.eval_module())
    move_fast_weights(student)
    task.after_optimizer_step(step)
    for k, v in task.eval_module().state_dict().items():
        assert torch.equal(v, slow_before[k]), k


def test_interpolations_compound_every_interval_steps():
    task, student = make_task()
    expected = snapshot(task.eval_module())
    for step in range(1, 3 * INTERVAL + 1):
        move_fast_weights(student, seed=10 * step, bn_batches=1)
        fast = snapshot(student)
        task.after_optimizer_step(step)
        if step % INTERVAL == 0:
            slow = snapshot(task.eval_module())
            assert_interpolated(slow, expected, fast)
            expected = slow
    assert int(expected['bn.num_batches_tracked']) == 3 * INTERVAL


def test_eval_module_returns_the_slow_weights():
    task, student = make_task()
    slow_before = snapshot(task.eval_module())
    move_fast_weights(student)
    fast = snapshot(student)
    task.after_optimizer_step(INTERVAL)
    reference = BNNet(0)
    reference.load_state_dict({k: TAU * slow_before[k] + (1 - TAU) * fast[k] if v.is_floating_point() else fast[k]
                               for k, v in slow_before.items()})
    x, _ = batch(42)
    evaluated = task.eval_module().eval()
    with torch.no_grad():
        assert torch.allclose(evaluated(x), reference.eval()(x), atol=1e-5)
        assert not torch.allclose(evaluated(x), student.eval()(x), atol=1e-3)
    assert evaluated is task.get_trainable_module(ema=True).module


@pytest.mark.parametrize('interval', [1, 2])
def test_mcl_training_steps_update_slow_copy_and_train_only_the_fast_weights(interval):
    """A few real optimizer steps through the task: the loop calls after_optimizer_step(num_updates) from 1."""
    task, student = make_task(interval=interval)
    optimizer = torch.optim.SGD(student.parameters(), lr=0.5)
    expected = snapshot(task.eval_module())
    task.train()
    for step in range(1, 5):
        x, y = batch(step)
        out = task(x, y)
        out['loss'].backward()
        assert all(p.grad is None for p in task.eval_module().parameters())
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        fast = snapshot(student)
        task.after_optimizer_step(step)
        if step % interval == 0:
            expected = {k: TAU * v + (1 - TAU) * fast[k] if v.is_floating_point() else fast[k]
                        for k, v in expected.items()}
    for k, v in task.eval_module().state_dict().items():
        assert torch.allclose(v, expected[k], atol=1e-6), k
    assert not torch.allclose(task.eval_module().head.weight, student.head.weight, atol=1e-4)


# --- scaling τ to the run length -------------------------------------------------------------------

def test_paper_setting_maps_to_itself():
    assert scaled_mcl_momentum(10000, 2) == pytest.approx(0.9999, abs=1e-12)
    assert scaled_mcl_momentum(10000, PAPER_INTERVAL) == pytest.approx(PAPER_MOMENTUM, abs=1e-12)


@pytest.mark.parametrize('updates', [1, 7, 250, 5000, 123456])
def test_scaled_momentum_keeps_the_papers_share_of_the_initial_student(updates):
    tau = scaled_mcl_momentum(updates * 2, 2)
    assert 0 < tau < 1
    assert retained_share(tau, updates) == pytest.approx(0.9999 ** 5000, rel=1e-9)
    assert retained_share(tau, updates) == pytest.approx(math.exp(-0.5), rel=1e-4)


def test_longer_runs_get_momentum_closer_to_one():
    taus = [scaled_mcl_momentum(steps, 2) for steps in (10, 100, 1000, 10000, 100000)]
    assert taus == sorted(taus) and len(set(taus)) == len(taus)
    assert taus[-1] < 1.0
    # what the docstring promises: a 500-step run at τ=0.9999 would keep 97.5%; scaled, it keeps ~61%
    assert retained_share(0.9999, 250) == pytest.approx(0.975, abs=1e-3)
    assert retained_share(scaled_mcl_momentum(500, 2), 250) == pytest.approx(0.6065, abs=1e-4)


def test_momentum_depends_on_the_number_of_interpolations():
    assert scaled_mcl_momentum(2000, 4) == pytest.approx(scaled_mcl_momentum(1000, 2), abs=1e-15)
    # a run shorter than one interval still gets one interpolation's worth, not a division by zero
    assert scaled_mcl_momentum(1, 2) == pytest.approx(0.9999 ** 5000, rel=1e-9)
    assert scaled_mcl_momentum(10, 0) == pytest.approx(scaled_mcl_momentum(10, 1), abs=1e-15)


def test_retained_share_is_tau_to_the_number_of_updates():
    assert retained_share(0.9, 3) == pytest.approx(0.729, abs=1e-12)
    assert retained_share(0.5, 0) == 1.0
