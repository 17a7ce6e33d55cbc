"""What a run found: the results.json dict, its verdict, and the one before/after table every report shows.

``results.json`` holds percent points (see the README's "Where results land"). The
before/after rows (:func:`before_after_rows`) are built once here and laid out by the CLI
(:func:`format_table`), the model card and the CI summary; the verdict (:func:`verdict`)
says "improved" only for a change McNemar's test calls significant.

No torch import at module level: the Hub side (``python -m timm_gkt.push``) reads this.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .. import __version__
from .stats import SIGNIFICANCE  # McNemar p below it calls a change significant (wording only; the gate is the user's)

CONTROL_TEST = 'paired McNemar between the transferred and the control student'


# ----------------------------------------------------------------------------- numbers as text

def num(x: Any) -> float | None:
    """A finite float, or None for missing/NaN values (JSON has no NaN, but older runs may carry None)."""
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def pct(x: Any, digits: int = 2) -> str:
    x = num(x)
    return '–' if x is None else f'{x:.{digits}f}'


def signed(x: Any, digits: int = 2) -> str:
    x = num(x)
    return '–' if x is None else f'{x:+.{digits}f}'


def pvalue_text(p: Any, digits: int = 3) -> str:
    """A p-value to ``digits`` significant digits, more where rounding would carry it across the 5% level.

    "p = 0.05" beside "improved" would read as a contradiction of the rule p < 0.05: 0.0499 stays 0.0499.
    """
    p = num(p)
    if p is None:
        return '–'
    text = f'{p:.{digits}g}'
    for d in range(digits + 1, 7):
        if (float(text) < SIGNIFICANCE) == (p < SIGNIFICANCE):
            break
        text = f'{p:.{d}g}'
    return text


def transfer_delta(results: dict) -> float | None:
    """Δtransf = top-1 after - top-1 before (points), as recorded or recomputed from the two accuracies."""
    delta = num(results.get('transfer_delta'))
    if delta is None:
        before, after = num(results.get('top1_before')), num(results.get('top1_after'))
        if before is not None and after is not None:
            delta = after - before
    return delta


# ----------------------------------------------------------------------------- verdict

@dataclass(frozen=True)
class Verdict:
    """``word`` is 'improved', 'worse', 'no significant change' or 'no result'; ``text`` adds the numbers."""
    word: str
    text: str


def verdict(delta: float | None, p_value: float | None, eval_samples: int | None = None) -> Verdict:
    """The result in words that respect noise: a change is "improved"/"worse" only at McNemar p < 0.05."""
    delta, p_value = num(delta), num(p_value)
    if delta is None:
        return Verdict('no result', 'no result: the run recorded no transfer delta')
    p_text = 'no p-value' if p_value is None else f'p = {pvalue_text(p_value, 2)}'
    significant = p_value is not None and p_value < SIGNIFICANCE
    if significant and delta != 0:
        word = 'improved' if delta > 0 else 'worse'
        return Verdict(word, f'{word}: {delta:+.2f} points ({p_text})')
    one_image = f', one image = {100.0 / eval_samples:.2g}' if eval_samples else ''
    return Verdict('no significant change', f'no significant change: {delta:+.2f} points ({p_text}{one_image})')


def comparison_verdict(delta: float | None, p_value: float | None, yardstick: str, test: str) -> Verdict:
    """One model against a yardstick on the same images: "better than", "no better than" or "worse than"
    ``yardstick``, better or worse only at McNemar p < 0.05 (as :func:`verdict`); ``test`` names the pairing."""
    delta, p_value = num(delta), num(p_value)
    if delta is None:
        return Verdict('no result', f'no result: nothing was compared with {yardstick}')
    if p_value is not None and p_value < SIGNIFICANCE and delta != 0:
        word = f'better than {yardstick}' if delta > 0 else f'worse than {yardstick}'
    else:
        word = f'no better than {yardstick}'
    p_text = 'no p-value' if p_value is None else f'p = {pvalue_text(p_value, 2)}'
    return Verdict(word, f'{delta:+.2f} points ({p_text}, {test}): {word}')


def verdict_of(results: dict) -> Verdict:
    """The verdict stored in results.json, or computed for results written before verdicts were stored."""
    stored = results.get('verdict')
    if isinstance(stored, dict) and stored.get('word') and stored.get('text'):
        return Verdict(stored['word'], stored['text'])
    return verdict(transfer_delta(results), results.get('p_value'), results.get('eval_samples'))


# ----------------------------------------------------------------------------- the before/after table

@dataclass(frozen=True)
class Row:
    """One line of the before/after table: the student's top-1, or ρpos/ρneg against one teacher."""
    quantity: str  # 'student top-1', 'ρpos' or 'ρneg'
    teacher: str | None
    before: float | None
    after: float | None
    delta: float | None

    @property
    def label(self) -> str:
        return self.quantity if self.teacher is None else f'{self.quantity} vs {self.teacher}'


def teacher_name(t: dict) -> str:
    from ..models.spec import short_name
    return t.get('name') or short_name(t.get('spec') or '?')


def before_after_rows(results: dict) -> list[Row]:
    rows = [Row('student top-1', None, num(results.get('top1_before')), num(results.get('top1_after')),
                transfer_delta(results))]
    control = results.get('control')
    if control:  # --control ce: the same student trained further without a teacher, from the same "before"
        rows.append(Row(CONTROL_ROW, None, num(results.get('top1_before')), num(control.get('top1')),
                        num(control.get('transfer_delta'))))
    for t in results.get('teachers') or []:
        name = teacher_name(t)
        rows.append(Row('ρpos', name, num(t.get('rho_pos')), num(t.get('rho_pos_after')),
                        num(t.get('pos_flips_delta'))))
        rows.append(Row('ρneg', name, num(t.get('rho_neg')), num(t.get('rho_neg_after')),
                        num(t.get('neg_flips_delta'))))
    return rows


def markdown_rows(rows: list[Row]) -> list[str]:
    return [f'| {r.label} | {pct(r.before)} | {pct(r.after)} | {signed(r.delta)} |' for r in rows]


CONTROL_ROW = 'control top-1 (more training, CE)'
_CLI_LABELS = {'student top-1': 'student top-1', 'ρpos': '  ρpos, complementary knowledge', 'ρneg': '  ρneg',
               CONTROL_ROW: CONTROL_ROW}


def versus_control_text(results: dict) -> str | None:
    """'+0.21 points (p = 0.004, paired McNemar ...): better than more training' for a run with ``--control``;
    every report shows it after 'vs more training:'."""
    versus = results.get('vs_control')
    if not versus:
        return None
    stored = versus.get('verdict') or {}
    return stored.get('text') or comparison_verdict(versus.get('delta'), versus.get('p_value'), 'more training',
                                                    CONTROL_TEST).text


def eval_images_text(results: dict) -> str:
    """'10000 eval images', or '400 eval images (a seeded subset of the 10000 of test)' when only part was used."""
    subset = ((results.get('data') or {}).get('eval') or {}).get('subset') or {}
    text = f"{results['eval_samples']} eval images"
    if subset.get('sampling') not in (None, 'all') and subset.get('size') != subset.get('of'):
        text += f" (a seeded subset of the {subset['of']} of {results.get('eval_split') or 'the evaluation split'})"
    return text


def format_table(results: dict) -> str:
    """The before/after table the CLI prints at the end of a run."""
    mode = f", {results['multi_teacher']}" if results.get('multi_teacher') else ''
    rows = before_after_rows(results)

    def line(r: Row) -> str:
        return f'{_CLI_LABELS[r.quantity]:34s}{r.before:9.2f}{r.after:9.2f}{r.delta:+9.2f}'

    title = results.get('method_title') or results['method']
    lines = [f"Transfer into {results['student_name']} from {', '.join(results['stage_order']) or 'no teacher'} "
             f"({title}{mode}, {results['hyperparameters']['epochs']} epoch(s) per stage, {eval_images_text(results)})",
             f"{'':34s}{'before':>9s}{'after':>9s}{'Δ':>9s}",
             line(rows[0]),
             f"{'  knowledge gained / lost':34s}{'':9s}{'':9s}  +{results['knowledge_gain']:.2f} / "
             f"-{results['knowledge_loss']:.2f}  (McNemar p = {results['p_value']:.3g})"]
    lines += [line(r) for r in rows[1:] if r.quantity == CONTROL_ROW]
    for t in results['teachers']:
        lines.append(f"teacher {t['name']} (top-1 {t['top1']:.2f})"
                     + (f", routed {t['routed_share']:.1f}%" if t.get('routed_share') is not None else ''))
        lines += [line(r) for r in rows[1:] if r.teacher == t['name']]
    unreadable = [f"{role} {u['count']} of {u['of']}" for role in ('train', 'eval')
                  for u in [((results.get('data') or {}).get(role) or {}).get('unreadable') or {}] if u.get('count')]
    if unreadable:
        lines.append(f"unreadable images, each replaced by the next readable one: {', '.join(unreadable)}")
    lines.append(f'result: {verdict_of(results).text}')
    versus = versus_control_text(results)
    return '\n'.join(lines + ([f'vs more training: {versus}'] if versus else []))


# ----------------------------------------------------------------------------- results.json

def versions() -> dict:
    import accelerate
    import huggingface_hub
    import timm
    import torch
    return {'timm_gkt': __version__, 'timm': timm.__version__, 'torch': torch.__version__,
            'accelerate': accelerate.__version__, 'huggingface_hub': huggingface_hub.__version__}


def routed_shares(history: list[dict]) -> dict[str, dict]:
    """Per teacher spec, from the last epoch of the stage that used it: the share of samples routed to
    it, and (single-teacher KL+DP) the shares of positive- and negative-flip samples routed to it."""
    shares = {}
    for row in history:
        for spec, share in (row.get('routed') or {}).items():
            flips = row.get('routed_flips') or {}
            shares[spec] = {'routed_share': share, 'routed_pos_flips': flips.get('routed_pos_flips'),
                            'routed_neg_flips': flips.get('routed_neg_flips')}
    return shares


def build_results(plan, ordered: list[str], metrics: dict, history: list[dict], derived: dict) -> dict:
    """The results.json dict of a finished run.

    ``ordered`` is the teachers' stage order (specs), ``metrics`` :func:`~timm_gkt.metrics.transfer_metrics` of
    the final student, ``derived`` the values the run computed from the config (e.g. ``mcl_momentum``).
    """
    config, student, method = plan.config, plan.student, plan.method
    routed = routed_shares(history)
    results = {
        'student': config.model.text,
        'student_name': student.name,
        'method': method.name,
        'method_title': method.title_with(config.task_hyperparameters()),
        'dp_mode': config.dp_mode if method.uses('dp_mode') else None,
        'multi_teacher': config.multi,
        'stage_order': [plan.teachers[s].name for s in ordered],
        'dataset': config.dataset, 'train_split': config.train_split, 'eval_split': config.val_split,
        'eval_samples': metrics['eval_samples'],
        'data': plan.data.record(),  # splits as read, seeded subsets, how the labels were matched
        'label_names': list(student.label_names) if student.label_names else None,
        **{k: metrics[k] for k in ('top1_before', 'top1_after', 'transfer_delta', 'knowledge_gain', 'knowledge_loss',
                                   'gains', 'losses', 'p_value')},
        'verdict': asdict(verdict(metrics['transfer_delta'], metrics['p_value'], metrics['eval_samples'])),
        'teachers': [teacher_entry(plan.teachers[s], metrics['teachers'][s], routed.get(s)) for s in ordered],
        'epochs': history,
        'hyperparameters': hyperparameters(plan, derived),
        'seed': config.seed,
        'versions': versions(),
        'student_source': student_source(plan),
        'lineage': lineage(plan, ordered, metrics),
        'pushed': None,
    }
    return results


def teacher_entry(teacher, teacher_metrics: dict, routed: dict | None) -> dict:
    routed = routed or {}
    return {'name': teacher.name, 'spec': teacher.spec.text, 'source': teacher.source, 'revision': teacher.revision,
            **teacher_metrics, 'routed_share': routed.get('routed_share'),
            'routed_pos_flips': routed.get('routed_pos_flips'), 'routed_neg_flips': routed.get('routed_neg_flips')}


def hyperparameters(plan, derived: dict) -> dict:
    config, method = plan.config, plan.method

    def own(name):  # a method's own hyperparameters are reported only for that method
        return derived.get(name, config.hyperparameter(name)) if method.uses(name) else None

    temperatures = derived.get('calibration')
    return {
        'epochs': config.epochs, 'lr': config.learning_rate, 'opt': config.opt, 'momentum': config.momentum,
        'weight_decay': config.weight_decay, 'batch_size': config.batch_size, 'sched': config.sched,
        'kd_temperature': config.kd_temperature, 'xe_weight': own('xe_weight'), 'mcl_momentum': own('mcl_momentum'),
        'mcl_interval': own('mcl_interval'), 'dp_routing': own('dp_routing'), 'dp_calibration': own('dp_calibration'),
        'dp_calibration_temperatures': None if not temperatures else '; '.join(
            f"stage {i + 1}: teacher {t['teacher']:.3f}, frozen student {t['frozen_student']:.3f}"
            for i, t in enumerate(temperatures)),
        'train_images': len(plan.train_ds), 'mixup': config.mixup, 'cutmix': config.cutmix,
        'num_processes': plan.accelerator.num_processes,
        'num_processes_requested': getattr(plan, 'processes_requested', None),
        'mixed_precision': plan.accelerator.mixed_precision,
    }


def student_source(plan) -> dict:
    spec, cfg = plan.config.model, plan.student.model.pretrained_cfg
    return {'spec': spec.text, 'source': spec.source, 'revision': plan.student.revision,
            'hub_id': spec.hub_id or cfg.get('hf_hub_id'), 'license': cfg.get('license')}


def lineage(plan, ordered: list[str], metrics: dict) -> list[dict]:
    """Every generation so far: the student's own lineage (from its config.json) plus this transfer."""
    generations = list(plan.student_config.get('timm_gkt', {}).get('lineage', []))
    generations.append({'generation': len(generations) + 1, 'student': plan.config.model.text, 'teachers': ordered,
                        'method': plan.method.name, 'transfer_delta': round(metrics['transfer_delta'], 4),
                        'top1_after': round(metrics['top1_after'], 4)})
    return generations


def write_results(results: dict, config, *folders: Path, public: bool = False) -> None:
    """results.json and args.yaml (the run's flags, a ``-c`` config for the same run) into each folder.

    ``public``: the copies a push uploads, with local paths reduced to names (:mod:`timm_gkt.public`).
    """
    import yaml
    from ..atomic import write_text_atomic
    args = config.to_yaml_dict()
    if public:
        from .public import public_args, public_results
        results, args = public_results(results), public_args(args)
    for path in folders:
        path.mkdir(parents=True, exist_ok=True)
        # args.yaml first: results.json marks a finished run, and neither is ever half written
        write_text_atomic(path / 'args.yaml', yaml.safe_dump(args, sort_keys=False))
        write_text_atomic(path / 'results.json', json.dumps(results, indent=2))
