"""Preflight's checks of the models themselves: teachers are held to what a student is held to.

Before anything is evaluated (and in a dry run): no model twice, a teacher's classes matched to the student's
by name once the dataset has named them (or taken on trust only with ``--trust-label-order``), every model
with 1 or 3 input channels, a classifier head and finite weights, and one forward pass on the first evaluation
images that answers one finite logit per class. After the "before" evaluation, before training: no model far
below chance on the evaluation split (a class-order mismatch) unless ``--allow-below-chance``.
"""
from __future__ import annotations

from ..errors import ConfigError, LabelSpaceError, ModelSpecError


def check_distinct_models(config) -> None:
    """The student is not also a teacher, and no teacher is listed twice (however the specs are written)."""
    seen = {config.model.identity: 'the student'}
    for spec in config.teacher_candidates:
        where = seen.get(spec.identity)
        if where == 'the student':
            raise ConfigError(f'teacher {spec.text} is the student itself, which has no knowledge to add to itself; '
                              f'name another teacher (or use --transfer-method ce to train the student further)')
        if where is not None:
            raise ConfigError(f'teacher {spec.text} is listed twice (also as {where}); list each teacher once')
        seen[spec.identity] = spec.text


def align_teachers(config, student, teachers: dict, say) -> None:
    """Each teacher's classes onto the student's, by name, now that the dataset may have named the student."""
    for t in teachers.values():
        t.align(student.label_names, student.num_classes, trust_order=config.trust_label_order)
        if t.label_perm is not None:
            say(f'note: teacher {t.name} orders its classes differently; its logits are mapped to the student\'s '
                f'classes by label name')
        elif not (student.label_names and t.label_names):
            say(f'warning: {"student" if not student.label_names else "teacher " + t.name} has no label names; '
                f'its {t.num_classes} classes are taken to be in the same order (--trust-label-order)')


def check_models(student, teachers: dict, weights_loaded: dict) -> None:
    """:func:`~timm_gkt.models.load.check_usable` for every model, before its classes are matched to anything
    (``weights_loaded``: spec text -> whether its weights were loaded)."""
    from ..models.load import check_usable
    for role, m in [('student', student)] + [('teacher', t) for t in teachers.values()]:
        check_usable(m, role, weights_loaded.get(m.spec.text, True))


def check_models_answer(student, teachers: dict, eval_dataset, weights_loaded: dict) -> None:
    """One forward pass on the first evaluation images: one finite logit per class from each model."""
    from ..evaluation.predictions import first_batch_outputs
    models = [('student', student)] + [('teacher', t) for t in teachers.values()]
    outputs = first_batch_outputs([m.model for _, m in models], [m.preprocessing for _, m in models], eval_dataset)
    for (role, m), out in zip(models, outputs):
        if out.ndim != 2 or out.shape[1] != m.num_classes:
            raise ModelSpecError(f'{role} {m.name} answers a batch with shape {tuple(out.shape)}, not one logit per '
                                 f'class ({m.num_classes}); use a timm classifier whose forward returns logits')
        if weights_loaded.get(m.spec.text, True) and not bool(out.isfinite().all()):
            raise ModelSpecError(f'{role} {m.name} answers NaN or inf on the first evaluation images although its '
                                 f'weights are finite; check the model, or drop it')


def check_not_student_weights(student, teachers: dict) -> None:
    """A teacher that is a copy of the student under another name has nothing to add either."""
    mine = student.model.state_dict()
    for t in teachers.values():
        theirs = t.model.state_dict()
        if theirs.keys() == mine.keys() and all(
                theirs[k].shape == mine[k].shape and bool((theirs[k] == mine[k]).all()) for k in mine):
            raise ConfigError(f'teacher {t.name} has exactly the student\'s weights, so it has no knowledge to add; '
                              f'name another teacher')


def check_above_chance(plan, baseline) -> None:
    """No model far below chance on the evaluation split unless the user says so (``--allow-below-chance``)."""
    from ..evaluation.metrics import correctness, far_below_chance
    if plan.config.allow_below_chance:
        return
    named = [('student', plan.student.name, baseline.student_pred)] + [
        ('teacher', plan.teachers[s].name, pred) for s, pred in baseline.teacher_preds.items()]
    chance = 100.0 / baseline.num_classes
    for role, name, pred in named:
        correct = correctness(pred, baseline.target)
        if far_below_chance(correct, baseline.num_classes):
            top1 = 100.0 * correct.double().mean().item()
            raise LabelSpaceError(f'{role} {name} is right on {top1:.2f}% of the {correct.numel()} evaluation images, '
                                  f'far below the {chance:.2f}% of guessing, which points to classes in another '
                                  f'order; fix its label_names (or --class-map), or pass --allow-below-chance to '
                                  f'train with it anyway')
