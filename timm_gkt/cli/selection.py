"""``--teachers auto --teacher-pool A,B,C --max-teachers K``: the run chooses its teachers and their order.

Preflight has loaded the student and every candidate (labels matched). Here the pool is scanned in one pass
(:func:`~timm_gkt.evaluation.scans.scan_models`) on a *selection split*: a seeded class-stratified sample of the
transfer split, ``--selection-subset`` images, never the evaluation split (choosing on the images the result is
reported on would flatter it). The candidates are ranked by the predicted KL+DP gain of ``scan``'s predictor, or by
ρpos where none is fitted (:func:`~timm_gkt.evaluation.selection.rank_teachers`); the chosen ones run as a
sequential transfer in ``--teacher-order`` of their top-1 on the selection split (ascending by default, METHOD.md).
The choice is printed with its reasons before any training, also by ``--dry-run``; results.json records the pool,
the scan, the choice and, per stage, the predicted against the realised Δ (:func:`record_selection`).

The selection images are transfer images too; a student that was trained on them is more often right there than on
held-out images, so ρpos is smaller and the predicted gains shift: the ranking is what is used.
"""
from __future__ import annotations

import dataclasses

from .preflight import Plan


def carve_selection(plan: Plan):
    """(the selection split, its record): a seeded class-stratified sample of the transfer split."""
    from ..data.plan import subset_record
    from ..errors import SubsetError
    config = plan.config
    try:
        ds, record = subset_record(plan.train_ds, config.selection_subset, config.seed, '--selection-subset')
    except SubsetError as e:
        raise SubsetError(f'--selection-subset {config.selection_subset}: {e}') from None
    return ds, {'carved_from': config.train_split, **record}


def choose_teachers(plan: Plan) -> Plan:
    """Scan the pool, choose, say why; the plan with the chosen teachers in stage order (the others released)."""
    from ..evaluation.predictor import Predictor
    from ..evaluation.scans import scan_models
    from ..evaluation.selection import rank_teachers
    from ..transfer.stages import order_teachers
    config = plan.config
    selection, record = carve_selection(plan)  # a subset that cannot be taken is refused before any compute
    pool = [plan.teachers[t.text] for t in config.teacher_pool]
    for model in [plan.student.model] + [t.model for t in pool]:
        model.to(plan.accelerator.device)
    scan = scan_models(plan.student, pool, selection, batch_size=config.eval_batch_size, accelerator=plan.accelerator)
    choice = rank_teachers(scan, Predictor.load(), config.max_teachers)
    top1 = {c['spec']: c['top1'] for c in choice['candidates']}
    order = choice['chosen'] if config.teacher_order == 'given' else \
        order_teachers(choice['chosen'], top1, config.teacher_order)
    choice.update(pool=[t.text for t in config.teacher_pool], max_teachers=config.max_teachers, selection=record,
                  order=order, order_rule=_order_rule(config.teacher_order))
    for line in describe_choice(choice, plan.student.name, {spec: t.name for spec, t in plan.teachers.items()}):
        plan.say(line)
    for spec, teacher in plan.teachers.items():
        if spec not in order:
            teacher.release()
    specs = {t.text: t for t in config.teacher_pool}
    return dataclasses.replace(plan, config=dataclasses.replace(config, teachers=tuple(specs[s] for s in order)),
                               teachers={s: plan.teachers[s] for s in order}, selection=choice)


def _order_rule(teacher_order: str) -> str:
    if teacher_order == 'given':
        return 'in the order of the ranking (--teacher-order given)'
    return f'{teacher_order} top-1 on the selection split'


def describe_choice(choice: dict, student: str, names: dict[str, str]) -> list[str]:
    """The choice as printed before training: the ranking with each candidate's numbers and reason, then the run."""
    from ..evaluation.selection import BY_PREDICTION
    sel = choice['selection']
    part = 'all' if sel['sampling'] == 'all' else f"a seeded class-stratified sample of {sel['size']}"
    if choice['ranked_by'] == BY_PREDICTION:
        on = (choice['predictor'] or {}).get('fitted_on') or {}
        how = (f"ranked by the predicted KL+DP gain (scan's ridge predictor, fitted on {on.get('pairs', '?')} pairs of "
               f"the zoo study; read it as a ranking)")
    else:
        how = 'ranked by ρpos (no gain predictor is fitted in this installation)'
    lines = [f"teachers auto: {len(choice['candidates'])} candidates scanned on {part} of the {sel['of']} images of "
             f"{sel['carved_from']} (the selection split; the evaluation split is not used to choose), {how}",
             f"  student {student}: top-1 {choice['student_top1']:.2f} on the selection split",
             f"  {'candidate':16s}{'top-1':>8s}{'ρpos':>8s}{'ρneg':>8s}{'predicted Δ':>14s}  decision"]
    for c in choice['candidates']:
        predicted = '–' if c['predicted_delta'] is None else f"{c['predicted_delta']:+.2f}"
        lines.append(f"  {names.get(c['spec'], c['name']):16s}{c['top1']:8.2f}{c['rho_pos']:8.2f}{c['rho_neg']:8.2f}"
                     f"{predicted:>14s}  {c['reason']}")
    chosen = ' -> '.join(names.get(s, s) for s in choice['order'])
    lines.append(f"teachers chosen: {chosen} (sequential, {choice['order_rule']}; at most --max-teachers "
                 f"{choice['max_teachers']})")
    return lines


def record_selection(choice: dict, results: dict) -> None:
    """results.json's ``teacher_selection``: the choice, and per stage the predicted and the realised Δ.

    The realised Δ of a stage is its last epoch's top-1 minus the one before the stage, on the evaluation split;
    the predicted one is the candidate's single-teacher KL+DP prediction from the initial student (a later stage
    starts from a student that has changed).
    """
    last = {}
    for row in results.get('epochs') or []:
        last[row['stage']] = row['top1']
    by_spec = {c['spec']: c for c in choice['candidates']}
    before, stages = results['top1_before'], []
    for index, spec in enumerate(choice['order']):
        after = last.get(index)
        stages.append({'stage': index, 'teacher': by_spec[spec]['name'], 'spec': spec,
                       'predicted_delta': by_spec[spec]['predicted_delta'],
                       'realised_delta': None if after is None else round(after - before, 2)})
        before = after if after is not None else before
    results['teacher_selection'] = {**choice, 'stages': stages}


def stage_lines(results: dict) -> list[str]:
    """Under the table: what the scan predicted for each stage and what the stage did."""
    selection = results.get('teacher_selection') or {}
    lines = []
    for stage in selection.get('stages') or []:
        predicted = '–' if stage['predicted_delta'] is None else f"{stage['predicted_delta']:+.2f}"
        realised = '–' if stage['realised_delta'] is None else f"{stage['realised_delta']:+.2f}"
        lines.append(f"stage {stage['stage'] + 1} ({stage['teacher']}): predicted Δ {predicted}, realised {realised} "
                     f"points")
    return lines
