#!/usr/bin/env python
"""Transfer a teacher's complementary knowledge into a pretrained timm student.

    accelerate launch timm_gkt/train.py --model pit_b --teachers volo_d2,resmlp_36
    python -m timm_gkt.train --model local-dir:zoo/vit_a --teachers local-dir:zoo/convnext_a \\
        --dataset torch/fashion_mnist --data-dir data

Flags (timm's names and meanings) are in :mod:`timm_gkt.cli.flags`. Defaults follow METHOD.md:
``--model X --teachers Y`` runs supervised KL+DP, one sequential stage per teacher (weakest first).
The run: preflight (:mod:`timm_gkt.cli.preflight`) -> the "before" evaluation and the stages
(:mod:`timm_gkt.transfer.engine`) -> results, export, card and push (:mod:`timm_gkt.cli.finish`).
"""
from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ''):  # run as a file: accelerate launch timm_gkt/train.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = 'timm_gkt'

from timm_gkt.cli.boundary import EXIT_OK, guarded
from timm_gkt.cli.config import TransferConfig, parse_args
from timm_gkt.cli.decisions import control_cost
from timm_gkt.cli.preflight import describe_plan, preflight, stage_count
from timm_gkt.cli.selection import choose_teachers

INTERRUPTED = ('interrupted; continue with the same flags and --resume auto (with --experiment) or '
               '--resume CHECKPOINT')


def run(config: TransferConfig) -> int:
    from timm_gkt.cli.checks import check_above_chance
    from timm_gkt.cli.finish import report_and_publish
    from timm_gkt.transfer.control import run_control
    from timm_gkt.transfer.engine import measure_baseline, open_run_dir, order_stages, run_stages
    plan = preflight(config)  # everything that can fail fails here, before any compute
    if config.auto_teachers:
        plan = choose_teachers(plan)  # scans the pool on its selection split and says why (a dry run too)
    if config.dry_run:
        for line in describe_plan(plan):
            plan.say(line)
        return EXIT_OK
    if config.control:  # its cost, before it is spent
        plan.say(control_cost(config, stage_count(plan)).strip())
    baseline = measure_baseline(plan)
    check_above_chance(plan, baseline)  # before the run folder exists: a refusal writes nothing
    open_run_dir(plan)
    ordered, stages = order_stages(plan, baseline)
    transfer = run_stages(plan, baseline, stages)
    control = run_control(plan, baseline, transfer, stages) if config.control else None
    code = EXIT_OK
    if plan.accelerator.is_main_process:
        code = report_and_publish(plan, ordered, transfer, control)
    plan.accelerator.wait_for_everyone()
    plan.accelerator.end_training()
    return code


def main(argv=None) -> int:
    """``run`` inside the error boundary (:mod:`timm_gkt.cli.boundary`): one ``error:`` line and an exit code."""
    return guarded(lambda args: run(parse_args(args)), argv, INTERRUPTED)


if __name__ == '__main__':
    sys.exit(main())
