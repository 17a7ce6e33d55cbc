#!/usr/bin/env python
"""Transfer a teacher's complementary knowledge into a pretrained timm student.

    accelerate launch timm_gkt/train.py --model pit_b --teachers volo_d2,resmlp_36
    python -m timm_gkt.train --model local-dir:zoo/vit_a --teachers local-dir:zoo/convnext_a \\
        --dataset torch/fashion_mnist --data-dir data

Flags (timm's names and meanings) are in :mod:`timm_gkt.config`. Defaults follow METHOD.md:
``--model X --teachers Y`` runs supervised KL+DP, one sequential stage per teacher (weakest first).
The run: preflight (:mod:`~timm_gkt.preflight`) → baseline evaluation and stages
(:mod:`~timm_gkt.engine`) → results (:mod:`~timm_gkt.results`), export, card and push (:mod:`~timm_gkt.hub`).
"""
from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ''):  # run as a file: accelerate launch timm_gkt/train.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = 'timm_gkt'

from timm_gkt.config import TransferConfig, parse_args
from timm_gkt.preflight import BAD_INPUT_ERRORS, Plan, describe_plan, preflight, push_target

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_BAD_INPUT = 2
EXIT_NOT_IMPROVED = 3  # finished, but the gate refused the push


def run(config: TransferConfig) -> int:
    from timm_gkt.engine import measure_baseline, run_stages
    plan = preflight(config)  # everything that can fail fails here, before any compute
    if config.dry_run:
        for line in describe_plan(plan):
            plan.say(line)
        return EXIT_OK
    open_run_dir(plan)
    baseline = measure_baseline(plan)
    ordered, stages = order_stages(plan, baseline)
    transfer = run_stages(plan, baseline, stages)
    code = EXIT_OK
    if plan.accelerator.is_main_process:
        code = report_and_publish(plan, ordered, transfer)
    plan.accelerator.wait_for_everyone()
    plan.accelerator.end_training()
    return code


def open_run_dir(plan: Plan) -> None:
    if plan.accelerator.is_main_process:
        if plan.resume_from is None:
            from timm_gkt.rundir import set_aside_previous_run
            kept = set_aside_previous_run(plan.run_dir)
            if kept is not None:
                plan.say(f'note: {plan.run_dir} held an earlier run; it is kept as {kept}')
        plan.run_dir.mkdir(parents=True, exist_ok=True)
    plan.accelerator.wait_for_everyone()


def order_stages(plan: Plan, baseline):
    """The teachers' stage order (by their measured top-1) and the stages; teachers not needed now are released."""
    from timm_gkt.multi import Stage, order_teachers, plan_stages
    config = plan.config
    ordered = order_teachers(list(plan.teachers), baseline.teacher_top1, config.teacher_order)
    if config.multi != 'parallel':
        for t in plan.teachers.values():
            t.release()
    # the control trains without teachers (one stage); they still serve the flip metrics
    stages = plan_stages(ordered, config.multi) if plan.method.needs_teacher else [Stage(0, ())]
    top1 = baseline.teacher_top1
    plan.say(f'student {plan.student.name}: top-1 {baseline.student_top1:.2f}; '
             + ', '.join(f'teacher {plan.teachers[s].name}: {top1[s]:.2f}' for s in ordered))
    if len(stages) > 1 or (config.multi and plan.method.needs_teacher):
        plan.say(f'{config.multi} transfer, stage order: {" -> ".join(plan.teachers[s].name for s in ordered)}')
    return ordered, stages


def report_and_publish(plan: Plan, ordered: list[str], transfer) -> int:
    """results.json, the export, the table, the card; then the push when asked and allowed. Main process only."""
    from timm_gkt.export import export_student
    from timm_gkt.hub import EXIT_ERROR as PUSH_FAILED, EXIT_NOT_IMPROVED as REFUSED, write_card, write_step_summary
    from timm_gkt.hub.publish import publish
    from timm_gkt.results import build_results, format_table, write_results
    run_dir, export_dir = plan.run_dir, plan.run_dir / 'export'
    results = build_results(plan, ordered, transfer.metrics, transfer.history, transfer.derived)
    export_student(transfer.model.cpu(), plan.student, export_dir, results['lineage'])
    write_results(results, plan.config, run_dir, export_dir)
    plan.say('\n' + format_table(results))
    write_card(results, export_dir)  # without a repo id: a refused or failed push names no repo it never reached
    code, decision = EXIT_OK, 'not pushed (no --push-to-hub)'
    target = push_target(plan.config)
    if target is not None:
        outcome = publish(run_dir, target, results, check_access=False)  # access was checked in preflight
        decision = outcome.message
        if outcome.code == REFUSED:
            code = EXIT_NOT_IMPROVED
        elif outcome.code == PUSH_FAILED:
            code, decision = EXIT_ERROR, f'push failed: {outcome.message}'
            plan.say(f'error: {outcome.message}')
        else:
            results['pushed'] = outcome.url
            write_results(results, plan.config, run_dir, export_dir)
        if outcome.code != PUSH_FAILED:
            plan.say(outcome.message)
    write_step_summary(results, decision)
    plan.say(f'results: {run_dir / "results.json"}; student exported to {export_dir} '
             f"(timm.create_model('local-dir:{export_dir}', pretrained=True))")
    return code


def main(argv=None) -> int:
    config = parse_args(argv)
    try:
        return run(config)
    except BAD_INPUT_ERRORS as e:
        print(f'error: {e}', file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == '__main__':
    sys.exit(main())
