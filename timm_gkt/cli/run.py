"""One transfer run, start to end: preflight -> the "before" evaluation and the stages -> results, export, card, push.

:func:`main` is ``timm_gkt.train``'s (and the launcher's) entry: ``run`` inside the error boundary.
"""
from __future__ import annotations

from .boundary import EXIT_OK, guarded
from .config import TransferConfig, parse_args
from .decisions import control_cost
from .preflight import describe_plan, preflight, stage_count
from .selection import choose_teachers

INTERRUPTED = ('interrupted; continue with the same flags and --resume auto (with --experiment) or '
               '--resume CHECKPOINT')


def run(config: TransferConfig) -> int:
    from .checks import check_above_chance
    from .finish import report_and_publish
    from ..transfer.control import run_control
    from ..transfer.engine import measure_baseline, open_run_dir, order_stages, run_stages
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
