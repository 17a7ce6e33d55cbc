"""Multi-teacher planning (timm_gkt/multi.py): teacher order, stages per mode, and the weight soup."""
import pytest
import torch
import torch.nn as nn

from timm_gkt.transfer.stages import MULTI_TEACHER_MODES, TEACHER_ORDERS, Stage, order_teachers, plan_stages, soup

TOP1 = {'a': 80.0, 'b': 70.0, 'c': 80.0, 'd': 60.0}


# --- order_teachers --------------------------------------------------------------------------------

def test_ascending_is_the_default_and_ties_keep_the_given_order():
    assert order_teachers(['a', 'b', 'c', 'd'], TOP1) == ['d', 'b', 'a', 'c']
    assert order_teachers(['c', 'b', 'a', 'd'], TOP1, 'ascending') == ['d', 'b', 'c', 'a']


def test_descending_keeps_the_given_order_among_ties():
    assert order_teachers(['a', 'b', 'c', 'd'], TOP1, 'descending') == ['a', 'c', 'b', 'd']
    assert order_teachers(['c', 'b', 'a', 'd'], TOP1, 'descending') == ['c', 'a', 'b', 'd']


def test_given_order_is_kept_and_needs_no_accuracies():
    teachers = ('d', 'a', 'c')
    ordered = order_teachers(teachers, {}, 'given')
    assert ordered == ['d', 'a', 'c'] and isinstance(ordered, list)


def test_unknown_order_raises_naming_the_choices():
    with pytest.raises(ValueError) as info:
        order_teachers(['a', 'b'], TOP1, 'strongest-first')
    assert "'strongest-first'" in str(info.value)
    for choice in TEACHER_ORDERS:
        assert choice in str(info.value)


# --- plan_stages -----------------------------------------------------------------------------------

@pytest.mark.parametrize('mode', [None, 'sequential', 'parallel', 'soup'])
def test_one_teacher_is_one_stage_in_any_mode(mode):
    assert plan_stages(['t'], mode) == [Stage(0, ('t',), from_initial=False)]


def test_no_teacher_is_one_stage_labelled_as_such():
    (stage,) = plan_stages([], None)
    assert stage == Stage(0, ()) and stage.label == 'no teacher'


def test_sequential_is_one_stage_per_teacher_in_the_given_order_each_continuing():
    stages = plan_stages(['t2', 't0', 't1'], 'sequential')
    assert stages == [Stage(0, ('t2',)), Stage(1, ('t0',)), Stage(2, ('t1',))]
    assert [s.from_initial for s in stages] == [False, False, False]
    assert [s.label for s in stages] == ['t2', 't0', 't1']


def test_parallel_is_one_stage_with_all_teachers():
    stages = plan_stages(['t0', 't1', 't2'], 'parallel')
    assert stages == [Stage(0, ('t0', 't1', 't2'), from_initial=False)]
    assert stages[0].label == 't0 + t1 + t2'


def test_soup_is_one_stage_per_teacher_each_from_the_initial_student():
    stages = plan_stages(['t0', 't1'], 'soup')
    assert stages == [Stage(0, ('t0',), from_initial=True), Stage(1, ('t1',), from_initial=True)]


@pytest.mark.parametrize('mode', [None, 'mixed', 'Sequential'])
def test_several_teachers_need_a_known_mode(mode):
    with pytest.raises(ValueError) as info:
        plan_stages(['t0', 't1'], mode)
    for choice in MULTI_TEACHER_MODES:
        assert choice in str(info.value)


# --- soup ------------------------------------------------------------------------------------------

def test_soup_averages_floating_tensors_and_keeps_integer_buffers_from_the_first():
    parts = [
        {'w': torch.tensor([1.0, 2.0]), 'h': torch.tensor([0.5], dtype=torch.float16), 'n': torch.tensor(3)},
        {'w': torch.tensor([3.0, 6.0]), 'h': torch.tensor([1.5], dtype=torch.float16), 'n': torch.tensor(7)},
        {'w': torch.tensor([5.0, 1.0]), 'h': torch.tensor([4.0], dtype=torch.float16), 'n': torch.tensor(11)},
    ]
    out = soup(parts)
    assert out['w'].tolist() == [3.0, 3.0]
    assert out['h'].dtype == torch.float16 and out['h'].tolist() == [2.0]
    assert out['n'].dtype == torch.int64 and int(out['n']) == 3
    # a new dict of new tensors: the parts are untouched
    out['n'] += 1
    out['w'] += 1
    assert int(parts[0]['n']) == 3 and parts[0]['w'].tolist() == [1.0, 2.0]


def test_soup_of_one_is_that_state():
    part = {'w': torch.tensor([[1.0, -2.0]]), 'n': torch.tensor(5)}
    out = soup([part])
    assert out['w'].tolist() == [[1.0, -2.0]] and int(out['n']) == 5


def test_soup_loads_into_a_batchnorm_model_with_its_running_statistics_averaged():
    """Each part's BatchNorm has seen other data: the soup's running mean and variance are the parts' averages
    (floating buffers belong to the soup as much as the weights do); the step count comes from the first part."""
    def make(seed):
        torch.manual_seed(seed)
        m = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
        m.train()
        m(torch.randn(16, 2) * (1 + 4 * seed) + 3 * seed)  # moves running_mean / running_var away from 0 / 1
        m[1].num_batches_tracked.fill_(seed + 1)
        return m

    models = [make(0), make(1)]
    bn0, bn1 = models[0][1], models[1][1]
    assert not torch.allclose(bn0.running_mean, bn1.running_mean, atol=0.1)
    assert not torch.allclose(bn0.running_var, bn1.running_var, atol=0.1)
    merged = make(2)
    merged.load_state_dict(soup([m.state_dict() for m in models]))
    expected_w = (models[0][0].weight + models[1][0].weight) / 2
    assert torch.allclose(merged[0].weight, expected_w)
    assert torch.allclose(merged[1].running_mean, (bn0.running_mean + bn1.running_mean) / 2)
    assert torch.allclose(merged[1].running_var, (bn0.running_var + bn1.running_var) / 2)
    assert int(merged[1].num_batches_tracked) == 1


def test_empty_soup_raises():
    with pytest.raises(ValueError, match='at least one'):
        soup([])
