"""Where to find complementary knowledge: evaluate a student and candidate teachers once, compare.

The command is ``python -m timm_gkt.scan`` (:mod:`timm_gkt.cli.scan`); this module computes and formats.
Every model sees the same evaluation images through its own eval transform, in one
pass. Per teacher: top-1 of both, ρpos (complementary knowledge: teacher right,
student wrong), ρneg, the entropy of the per-class positive flips (low = specialist)
and the classes where the teacher knows most that the student does not.
"""
from __future__ import annotations

import math

from ..data.plan import EvalFlags, head_label_names, open_eval_data
from ..data.unreadable import check_unreadable
from .predictions import predict
from ..models.frozen import InStudentOrder, Teacher
from .metrics import complementary_knowledge, correctness, percent, positive_flips
from ..models.load import check_model_spec, check_usable, label_permutation, load_model
from ..models.spec import resolve_spec
from ..models.weights import check_weights_available


def scan(student: str, teachers: list[str], dataset: str, data_dir: str, split: str | None = None,
         batch_size: int = 256, workers: int = 0, eval_subset: int = 0, class_map: str = '',
         trust_label_order: bool = False, seed: int = 42, say=print, **reader_keys) -> dict:
    """Evaluate once, compare. The split, label matching and seeded subset are those of a transfer run with the
    same flags (:func:`timm_gkt.data.plan.open_eval_data`), so the numbers are the ones train.py starts from, and
    the models pass train.py's checks. ``reader_keys``: ``input_key`` / ``target_key`` of hfds/ columns."""
    s, *resolved = load_checked([student, *teachers], say)
    flags = _eval_flags(dataset, data_dir, split, eval_subset, class_map, trust_label_order, seed, reader_keys)
    data, perms = _open_and_align(flags, s, resolved, say)
    out = scan_models(s, [Teacher(t, perm) for t, perm in zip(resolved, perms)], data.dataset,
                      batch_size=batch_size, num_workers=workers)
    check_unreadable(data, None, say)
    return {'student': out.pop('student'), 'student_name': out.pop('student_name'), 'dataset': dataset,
            'split': flags.val_split, **out}


def scan_models(student, teachers, dataset, **predict_kwargs) -> dict:
    """The scan of loaded models on one dataset, in one pass: ``student`` a ResolvedModel, ``teachers``
    :class:`~timm_gkt.models.frozen.Teacher` objects (answering in the student's class order)."""
    models = [student.model] + [t.network for t in teachers]
    preds, target = predict(models, [student.preprocessing] + [t.preprocessing for t in teachers], dataset,
                            desc='scan', **predict_kwargs)
    out = {'student': student.spec.text, 'student_name': student.name, 'eval_samples': int(target.numel()),
           'student_top1': percent(correctness(preds[0], target)), 'teachers': []}
    for t, pred in zip(teachers, preds[1:]):
        ck = complementary_knowledge(pred, preds[0], target, student.num_classes, student.label_names)
        out['teachers'].append({'name': t.name, 'spec': t.spec.text, **ck})
    return out


def load_checked(specs: list[str], say=print) -> list:
    """Each model resolved, its weights checked (a broken config.json or a truncated safetensors is one sentence,
    as in train.py), created and checked for channels, a head and finite weights; the first is the student."""
    resolved = [resolve_spec(spec) for spec in specs]
    for spec in resolved:
        if spec.note:
            say(spec.note)
        check_model_spec(spec)
        check_weights_available(spec)
    models = [load_model(spec) for spec in resolved]
    for i, m in enumerate(models):
        check_usable(m, 'student' if i == 0 else 'teacher')
    return models


def _open_and_align(flags: EvalFlags, student, others, say):
    """The evaluation split matched to ``student``; each other model's label permutation onto the student's
    classes, decided once the dataset has named a student without label names."""
    split = open_eval_data(flags, student, say)
    names = head_label_names(student, split.labels)
    student.label_names = names
    perms = [label_permutation(names, m.label_names, student.num_classes, m.num_classes, teacher=f'teacher {m.name}',
                               trust_order=flags.trust_label_order) for m in others]
    return split, perms


def _eval_flags(dataset, data_dir, split, eval_subset, class_map, trust_label_order, seed, reader_keys) -> EvalFlags:
    from ..data.splits import default_val_split
    return EvalFlags(dataset, str(data_dir), split or default_val_split(dataset), class_map=class_map,
                     trust_label_order=trust_label_order, eval_subset=eval_subset, seed=seed, **reader_keys)


def pairwise_matrix(specs: list[str], dataset: str, data_dir: str, split: str | None = None, batch_size: int = 256,
                    workers: int = 0, eval_subset: int = 0, class_map: str = '', trust_label_order: bool = False,
                    seed: int = 42, say=print, **reader_keys) -> dict:
    """ρpos(teacher=row, student=column) for every pair, from one pass over the evaluation split."""
    models = load_checked(specs, say)
    ref = models[0]
    flags = _eval_flags(dataset, data_dir, split, eval_subset, class_map, trust_label_order, seed, reader_keys)
    data, perms = _open_and_align(flags, ref, models, say)
    preds, target = predict([InStudentOrder(m.model, perm) for m, perm in zip(models, perms)],
                            [m.preprocessing for m in models], data.dataset, batch_size=batch_size,
                            num_workers=workers, desc='scan')
    check_unreadable(data, None, say)
    correct = [correctness(p, target) for p in preds]
    names = [m.name for m in models]
    return {
        'names': names,
        'top1': [percent(c) for c in correct],
        'rho_pos': [[percent(positive_flips(ct, cs)) for cs in correct] for ct in correct],
        'eval_samples': int(target.numel()),
    }


def format_scan(result: dict) -> str:
    lines = [f"student {result['student_name']}: top-1 {result['student_top1']:.2f} on {result['eval_samples']} "
             f"{result['dataset']} {result['split']} images",
             f"{'teacher':16s}{'top-1':>8s}{'ρpos':>8s}{'ρneg':>8s}{'entropy':>9s}  top classes of its expertise "
             f"(positive flips per class)"]
    max_entropy = None
    for t in sorted(result['teachers'], key=lambda t: -t['rho_pos']):
        n = len(t['per_class_pos_flips'])
        max_entropy = math.log(n)
        top = ', '.join(f"{c['class']} {c['pos_flip_rate']:.1f}%" for c in t['top_classes'])
        lines.append(f"{t['name']:16s}{t['teacher_top1']:8.2f}{t['rho_pos']:8.2f}{t['rho_neg']:8.2f}"
                     f"{t['flip_entropy']:9.3f}  {top}")
    if max_entropy is not None:
        lines.append(f'ρ in % of images; entropy in nats (uniform over classes = {max_entropy:.3f}; lower = specialist)')
    return '\n'.join(lines)


def format_matrix(m: dict, markdown: bool = False) -> str:
    names = m['names']
    if markdown:
        head = '| teacher \\ student | ' + ' | '.join(names) + ' |'
        sep = '|---|' + '---:|' * len(names)
        rows = [f"| **{n}** ({m['top1'][i]:.2f}) | " + ' | '.join(
            '—' if i == j else f"{m['rho_pos'][i][j]:.2f}" for j in range(len(names))) + ' |'
            for i, n in enumerate(names)]
        return '\n'.join([head, sep] + rows)
    width = max(8, max(len(n) for n in names) + 2)  # '-12.34' must not touch its neighbour
    lines = [' ' * (width + 8) + ''.join(f'{n:>{width}s}' for n in names)]
    for i, n in enumerate(names):
        lines.append(f'{n:>{width}s}{m["top1"][i]:8.2f}' + ''.join(
            f'{"-":>{width}s}' if i == j else f'{m["rho_pos"][i][j]:{width}.2f}' for j in range(len(names))))
    lines.append('rows: teacher (with its top-1), columns: student; cell: ρpos(teacher, student) in %')
    return '\n'.join(lines)
