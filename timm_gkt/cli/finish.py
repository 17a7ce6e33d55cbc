"""After the stages: results.json, the export in Hub layout, the card, the before/after table, the push.

Main process only. The export is assembled aside and renamed into place when complete; results.json in the
run folder is written last (a run folder with it is finished).
"""
from __future__ import annotations

from pathlib import Path

from ..errors import ExportFailed
from .boundary import EXIT_ERROR, EXIT_NOT_BETTER_THAN_CONTROL, EXIT_NOT_IMPROVED, EXIT_OK
from .preflight import Plan, push_target


def write_export(plan: Plan, transfer, results: dict, export_dir: Path) -> None:
    """The export (weights, results, args, card, plots), assembled aside and renamed into place when complete."""
    from ..atomic import staged_folder
    from ..hub import write_card
    from ..report.public import public_results
    from ..report.results import write_results
    from ..transfer.rundir import export_student
    try:
        with staged_folder(export_dir) as staging:
            # export/ is what a push uploads: it names local models and data by folder name, never by path
            public = public_results(results)
            export_student(transfer.model.cpu(), plan.student, staging, public['lineage'])
            write_results(results, plan.config, staging, public=True)
            write_card(public, staging)  # without a repo id: a refused or failed push names no repo it never reached
    except OSError as e:
        from ..transfer.rundir import latest_checkpoint
        checkpoint = latest_checkpoint(plan.run_dir)
        again = f'continue with --resume {checkpoint}' if checkpoint is not None else 'run again'
        raise ExportFailed(f'could not write the export to {export_dir} ({e.strerror or e}); nothing was exported or '
                           f'pushed and no partial export/ was left. Free space (or fix the folder) and {again}'
                           ) from None


def report_and_publish(plan: Plan, ordered: list[str], transfer, control=None) -> int:
    """The export, results.json, the table, the card; then the push when asked and allowed. Main process only.

    ``control`` is the CE control of ``--control ce`` (:class:`~timm_gkt.transfer.control.Control`), or None.
    """
    from ..hub import (
        EXIT_ERROR as PUSH_FAILED, EXIT_NOT_BETTER_THAN_CONTROL as NOT_BETTER, EXIT_NOT_IMPROVED as REFUSED,
        write_step_summary,
    )
    from ..hub.publish import publish
    from ..report.results import build_results, format_table, write_results
    run_dir, export_dir = plan.run_dir, plan.run_dir / 'export'
    results = build_results(plan, ordered, transfer.metrics, transfer.history, transfer.derived)
    if control is not None:
        from .control import record_control
        record_control(plan, results, control)
    if plan.selection is not None:
        from .selection import record_selection
        record_selection(plan.selection, results)
    write_export(plan, transfer, results, export_dir)
    # last: a run folder with results.json is finished (--resume auto starts afresh there)
    write_results(results, plan.config, run_dir)
    plan.say('\n' + format_table(results))
    if plan.selection is not None:
        from .selection import stage_lines
        for line in stage_lines(results):
            plan.say(line)
    code, decision = EXIT_OK, 'not pushed (no --push-to-hub)'
    target = push_target(plan.config)
    if target is not None:
        outcome = publish(run_dir, target, results, check_access=False)  # access was checked in preflight
        decision = outcome.message
        refusals = {REFUSED: EXIT_NOT_IMPROVED, NOT_BETTER: EXIT_NOT_BETTER_THAN_CONTROL}
        if outcome.code in refusals:
            code = refusals[outcome.code]
        elif outcome.code == PUSH_FAILED:
            code, decision = EXIT_ERROR, f'push failed: {outcome.message}'
            plan.say(f'error: {outcome.message}')
        else:
            results['pushed'] = outcome.url
            write_results(results, plan.config, run_dir)
            write_results(results, plan.config, export_dir, public=True)
        if outcome.code != PUSH_FAILED:
            plan.say(outcome.message)
    write_step_summary(results, decision)
    plan.say(f'results: {run_dir / "results.json"}; student exported to {export_dir} '
             f"(timm.create_model('local-dir:{export_dir}', pretrained=True))")
    return code
