"""What a run with ``--control ce`` records of its control: results.json's ``control`` and ``vs_control``, and the
control student in Hub layout under ``RUN_DIR/control/export`` (in the run folder, never in the pushed export).

The control itself is trained by :mod:`timm_gkt.transfer.control`; the report lines that show it are
:func:`timm_gkt.report.results.versus_control_text`'s.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from ..errors import ExportFailed
from ..report.results import CONTROL_TEST, comparison_verdict, verdict
from .preflight import Plan

CONTROL_EXPORT = Path('control') / 'export'


def record_control(plan: Plan, results: dict, control) -> None:
    """Add the control and the paired comparison to ``results`` and export the control student (main process)."""
    m, versus = control.result.metrics, control.versus
    results['control'] = {
        'method': 'ce', 'stages': control.stages, 'epochs_per_stage': plan.config.epochs, 'top1': m['top1_after'],
        **{k: m[k] for k in ('transfer_delta', 'knowledge_gain', 'knowledge_loss', 'gains', 'losses', 'p_value')},
        'verdict': asdict(verdict(m['transfer_delta'], m['p_value'], m['eval_samples'])),
        'weights': CONTROL_EXPORT.as_posix(), 'epochs': control.result.history,
    }
    results['vs_control'] = {
        **{k: versus[k] for k in ('delta', 'gains', 'losses', 'p_value', 'eval_samples')}, 'test': CONTROL_TEST,
        'verdict': asdict(comparison_verdict(versus['delta'], versus['p_value'], 'more training', CONTROL_TEST)),
    }
    export_control(plan, control, results)


def export_control(plan: Plan, control, results: dict) -> None:
    """The control student where a user can load it (``local-dir:RUN_DIR/control/export``) and no push reaches."""
    from ..atomic import staged_folder
    from ..transfer.rundir import export_student
    generations = list(plan.student_config.get('timm_gkt', {}).get('lineage', []))
    generations.append({'generation': len(generations) + 1, 'student': plan.config.model.text, 'teachers': [],
                        'method': 'ce', 'transfer_delta': round(results['control']['transfer_delta'], 4),
                        'top1_after': round(results['control']['top1'], 4)})
    folder = plan.run_dir / CONTROL_EXPORT
    try:
        with staged_folder(folder) as staging:
            export_student(control.result.model.cpu(), plan.student, staging, generations)
    except OSError as e:
        raise ExportFailed(f'could not write the control student to {folder} ({e.strerror or e}); nothing was '
                           f'exported or pushed. Free space (or fix the folder) and run again with --resume auto'
                           ) from None
