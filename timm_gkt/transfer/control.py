"""The CE control (``--control ce``): the same student trained further with plain cross-entropy, the yardstick of
every transfer. The zoo study found every transfer method behind it; a run that trains it can say so itself.

It is the study's ``ce_control`` run inside the transfer's run: the same start (the initial student), the same data
in the same order (each sample's augmentation is replayed from (seed, epoch, index) and Accelerate's seedable
sampler draws from the run's seed), the global RNG seeded again as a separate ``--transfer-method ce`` run would
be, and the same budget: one CE stage per transfer stage, each with the transfer's epochs and a fresh schedule,
continuing the previous one (the study's chained controls ``S__ce-xK``). It has no teacher, so the teacher cache
cannot serve it: it costs one more training run.

It keeps its own folder, ``RUN_DIR/control`` (checkpoints, stage results, summary.csv, and the student in Hub layout
under ``control/export``), so an interrupted control resumes like the transfer, and nothing of it is pushed.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from ..evaluation.metrics import transfer_metrics
from .engine import Baseline, Transfer, run_stages
from .rundir import latest_checkpoint
from .stages import Stage

CONTROL_METHOD = 'ce'
CONTROL_DIR = 'control'


def control_stages(transfer_stages: list[Stage]) -> list[Stage]:
    """One CE stage per transfer stage, each continuing the last: the same number of optimizer updates."""
    return [Stage(i, ()) for i in range(len(transfer_stages))]


def control_plan(plan):
    """The transfer's plan with plain cross-entropy, no teacher and no cache, in its own folder.

    On a resumed run the control continues from its own latest checkpoint; it does not depend on the transfer's,
    so wherever the transfer was resumed from, the control's finished epochs stay valid.
    """
    run_dir = plan.run_dir / CONTROL_DIR
    # no teachers: a chain of CE stages is never a soup, and the stages load no teacher
    config = dataclasses.replace(plan.config, transfer_method=CONTROL_METHOD, teachers=())
    resume_from = latest_checkpoint(run_dir) if plan.resume_from is not None else None
    return dataclasses.replace(plan, config=config, run_dir=run_dir, resume_from=resume_from, teachers={},
                               cache=None)


@dataclass
class Control:
    """The trained control (its student, predictions, metrics against the start) and the paired comparison."""
    result: Transfer
    versus: dict
    stages: int


def run_control(plan, baseline: Baseline, transfer: Transfer, transfer_stages: list[Stage]) -> Control:
    """Train the CE control, evaluate it against the same "before" predictions, compare it with ``transfer``."""
    from accelerate.utils import set_seed
    control = control_plan(plan)
    if control.accelerator.is_main_process:
        control.run_dir.mkdir(parents=True, exist_ok=True)
    control.accelerator.wait_for_everyone()
    # the RNG state a separate --transfer-method ce run starts from; the data order does not depend on it
    set_seed(plan.config.seed)
    stages = control_stages(transfer_stages)
    plan.say(f'control: {len(stages)} stage(s) of plain cross-entropy from the initial student')
    result = run_stages(control, baseline, stages)
    return Control(result, versus_control(baseline, transfer.pred, result.pred), len(stages))


def versus_control(baseline: Baseline, transfer_pred: torch.Tensor, control_pred: torch.Tensor) -> dict:
    """The paired comparison on the same evaluation images: gains are images the transferred student gets right
    and the control wrong, losses the reverse; McNemar's exact test on them."""
    m = transfer_metrics(control_pred, transfer_pred, {}, baseline.target, baseline.num_classes)
    return {'delta': m['transfer_delta'], 'gains': m['gains'], 'losses': m['losses'], 'p_value': m['p_value'],
            'top1': m['top1_after'], 'control_top1': m['top1_before'], 'eval_samples': int(baseline.target.numel())}
