"""The model card: typed metadata (``ModelCardData``, ``EvalResult``) and a body rendered from ``hub_cards/model_card.md``.

:func:`card_context` turns a results.json into display strings; the template only lays
them out. :func:`write_card` writes ``export/README.md`` and the plots it shows.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

from ..transfer.methods import METHODS
from ..report.results import (
    before_after_rows, num, pct, pvalue_text, signed, teacher_name, transfer_delta, verdict_of, versus_control_text,
)
from ..models.spec import HF_HUB, parse_spec, short_name
from .plots import GAIN_LOSS_PLOT, PER_CLASS_PLOT, PLOTS, PLOTS_DIR

_HERE = Path(__file__).resolve().parent
_TEMPLATE_CANDIDATES = (
    # a wheel installs hub_cards/ as the package data timm_gkt/hub_cards (see pyproject.toml)
    _HERE.parent / 'hub_cards' / 'model_card.md',
    # a checkout or editable install reads the repository's hub_cards/
    _HERE.parent.parent / 'hub_cards' / 'model_card.md',
)

BIBTEX = r"""@inproceedings{roth2024fantastic,
  title         = {Fantastic Gains and Where to Find Them: On the Existence and Prospect of General Knowledge Transfer between Any Pretrained Model},
  author        = {Roth, Karsten and Thede, Lukas and Koepke, A. Sophia and Vinyals, Oriol and H{\'e}naff, Olivier and Akata, Zeynep},
  booktitle     = {The Twelfth International Conference on Learning Representations (ICLR)},
  year          = {2024},
  eprint        = {2310.17653},
  archivePrefix = {arXiv},
  url           = {https://arxiv.org/abs/2310.17653}
}"""

_GKT_INTRO = ('General Knowledge Transfer (Roth, Thede et al., ICLR 2024) adds the complementary knowledge of a '
              'pretrained teacher to an already trained student without overwriting what the student knows.')
MULTI_TEACHER_DESCRIPTIONS = {
    'sequential': 'Teachers were used one after another (sequential KL + DP); after each stage the current student '
                  'became the frozen student of the next stage.',
    'parallel': 'All teachers were used at once (parallel KL + DP): each image is distilled from the most confident '
                'of the frozen student and the teachers.',
    'soup': 'The student was transferred from each teacher separately and the resulting weights were averaged '
            '(model soup).',
}
PLOT_CAPTIONS = {
    PER_CLASS_PLOT: ('Per-class complementary knowledge',
                     "for each teacher, the share of each class's evaluation images the teacher gets right and "
                     'the student gets wrong (positive flips), before and after transfer.'),
    GAIN_LOSS_PLOT: ('Knowledge gain and loss per epoch',
                     'images the student got wrong before and right after (gain) and the reverse (loss), '
                     'in percent of evaluation images, after every epoch.'),
}

# timm dataset specs -> (Hub dataset id, display name), for the card's `datasets` metadata
_KNOWN_DATASETS = {
    'fashion_mnist': ('zalando-datasets/fashion_mnist', 'Fashion-MNIST'),
    'mnist': ('ylecun/mnist', 'MNIST'),
    'cifar10': ('uoft-cs/cifar10', 'CIFAR-10'),
    'cifar100': ('uoft-cs/cifar100', 'CIFAR-100'),
    'imagenet': ('ILSVRC/imagenet-1k', 'ImageNet-1k'),
}


def hub_dataset(spec: str | None) -> tuple[str | None, str | None]:
    """(Hub dataset id or None, display name) for a timm dataset spec such as ``torch/fashion_mnist``.

    The id is set only for data that is on the Hub: ``hfds/ORG/NAME`` not found on disk, or a
    torchvision dataset whose Hub copy is known; folders and local ``hfds/`` data have none.
    """
    from ..report.public import hub_dataset_id, public_path
    if not spec:
        return None, None
    prefix, _, rest = spec.partition('/')
    if prefix.lower() in ('hfds', 'hfids') and rest:
        hub_id = hub_dataset_id(spec)
        return hub_id, hub_id or public_path(rest)
    name = rest if prefix.lower() in ('torch', 'tfds', 'wds') and rest else spec
    return _KNOWN_DATASETS.get(name.lower(), (None, name))


def results_dataset(results: dict) -> tuple[str | None, str | None]:
    """(Hub dataset id or None, display name) of a run, from what the run recorded about its data when it can."""
    data = results.get('data') or {}
    if data.get('kind') in ('hfds', 'hfids'):
        hub_id = data.get('hub_id')
        return hub_id, hub_id or data.get('name')
    if data.get('kind') == 'folder':
        return None, data.get('name')
    return hub_dataset(results.get('dataset'))


def eval_scope(results: dict) -> dict | None:
    """The seeded subset the top-1 was measured on, when it is not the whole evaluation split."""
    subset = ((results.get('data') or {}).get('eval') or {}).get('subset') or {}
    if subset.get('sampling') in (None, 'all') or subset.get('size') == subset.get('of'):
        return None
    return {'num_samples': subset['size'], 'of': subset['of'], 'seed': subset.get('seed'),
            'sampling': subset['sampling']}


def student_hub_id(results: dict) -> str | None:
    """The student's Hub id when it came from (or is mirrored on) the Hub; a local student has none."""
    source = results.get('student_source') or {}
    if source.get('hub_id'):
        return source['hub_id']
    return parse_spec(source.get('spec') or results.get('student') or '').hub_id


def teacher_tags(results: dict) -> list[str]:
    """One ``teacher:NAME`` tag per teacher (its Hub id when it has one): teachers are lineage, never base_model."""
    tags = []
    for t in results.get('teachers') or []:
        spec = parse_spec(t['spec']) if t.get('spec') else None
        tags.append(f"teacher:{spec.hub_id if spec is not None and spec.source == HF_HUB else teacher_name(t)}")
    return tags


def _template_path() -> Path:
    for path in _TEMPLATE_CANDIDATES:
        if path.is_file():
            return path
    raise FileNotFoundError(f'Model card template not found (looked in {", ".join(map(str, _TEMPLATE_CANDIDATES))}).')


def _lineage(results: dict, export_dir: Path | None = None) -> list[dict]:
    """All generations, oldest first: from results, else the export's config.json, else this run alone."""
    lineage = results.get('lineage')
    if not lineage and export_dir is not None and (export_dir / 'config.json').is_file():
        try:
            lineage = json.loads((export_dir / 'config.json').read_text()).get('timm_gkt', {}).get('lineage')
        except ValueError:
            lineage = None
    if not lineage:
        lineage = [{'generation': 1, 'student': results.get('student'), 'method': results.get('method'),
                    'teachers': [t.get('spec') or t.get('name') for t in results.get('teachers') or []],
                    'transfer_delta': transfer_delta(results), 'top1_after': results.get('top1_after')}]
    return list(lineage)


def _eval_results(results: dict) -> list:
    """model-index entries, for data on the Hub only (the index names a Hub dataset); a top-1 measured on a
    subset says so in its name and in ``dataset_args``."""
    from huggingface_hub import EvalResult
    dataset_id, dataset_name = results_dataset(results)
    scope = eval_scope(results)
    on = (f" on a seeded {scope['sampling']} subset of {scope['num_samples']} of the {scope['of']} images"
          if scope else '')

    def result(metric_type: str, name: str, value: Any) -> EvalResult | None:
        value = num(value)
        if value is None or dataset_id is None:
            return None
        return EvalResult(task_type='image-classification', task_name='Image Classification',
                          dataset_type=dataset_id, dataset_name=dataset_name, dataset_split=results.get('eval_split'),
                          dataset_args=dict(scope) if scope else None,
                          metric_type=metric_type, metric_name=name + on, metric_value=round(value, 4))

    # 'accuracy' is this model's score; the student's score before transfer gets its own type so that
    # leaderboards reading model-index do not mistake it for this model's
    evals = [
        result('accuracy', 'Top-1 accuracy (%)', results.get('top1_after')),
        result('accuracy_before_transfer', 'Top-1 accuracy before transfer (%)', results.get('top1_before')),
        result('transfer_delta', 'Transfer delta (top-1 points)', transfer_delta(results)),
        result('knowledge_gain', 'Knowledge gain (%)', results.get('knowledge_gain')),
        result('knowledge_loss', 'Knowledge loss (%)', results.get('knowledge_loss')),
        result('mcnemar_p_value', 'McNemar p-value of the transfer delta', results.get('p_value')),
    ]
    if results.get('vs_control'):  # the CE control's own score is not this model's: a type of its own
        evals += [result('accuracy_control', 'Top-1 accuracy of the CE control, more training without a teacher (%)',
                         (results.get('control') or {}).get('top1')),
                  result('delta_vs_control', 'Top-1 points against the CE control', results['vs_control'].get('delta')),
                  result('mcnemar_p_value_vs_control', 'Paired McNemar p-value against the CE control',
                         results['vs_control'].get('p_value'))]
    for t in results.get('teachers') or []:
        name = teacher_name(t)
        evals.append(result('positive_flips_delta', f'Positive-flip delta vs {name} (points)', t.get('pos_flips_delta')))
        evals.append(result('negative_flips_delta', f'Negative-flip delta vs {name} (points)', t.get('neg_flips_delta')))
    return [e for e in evals if e is not None]


def card_data(results: dict, repo_id: str | None = None):
    """The card's metadata: library, tags, base model (the student only), datasets, license, model-index."""
    from huggingface_hub import ModelCardData
    dataset_id, _ = results_dataset(results)
    evals = _eval_results(results)
    model_name = repo_id.split('/')[-1] if repo_id else f"{results.get('student_name') or 'student'}-gkt"
    # base_model is the one model these weights were fine-tuned from; a list would mean a merge, so the
    # teachers go in the lineage and the tags instead
    base_model = student_hub_id(results)
    tags = ['timm', 'image-classification', 'knowledge-transfer', 'general-knowledge-transfer']
    if results.get('method'):
        tags.append(results['method'])
    if results.get('multi_teacher'):
        tags.append(f"multi-teacher-{results['multi_teacher']}")
    return ModelCardData(
        library_name='timm',
        pipeline_tag='image-classification',
        tags=tags + teacher_tags(results),
        base_model=base_model,
        base_model_relation='finetune' if base_model else None,
        datasets=[dataset_id] if dataset_id else None,
        license=(results.get('student_source') or {}).get('license'),
        model_name=model_name if evals else None,
        eval_results=evals or None,
    )


def _summary(results: dict, student_name: str, teacher_names: list[str], eval_split_text: str) -> tuple[str, str]:
    """The card's opening sentence and its verdict line."""
    method_title = results.get('method_title') or results.get('method') or 'unknown method'
    summary = (f'`{student_name}` after General Knowledge Transfer ({method_title}) from '
               f"{', '.join(f'`{n}`' for n in teacher_names) or 'no teacher'}: top-1 on the {eval_split_text} "
               f"{pct(results.get('top1_before'))}% → {pct(results.get('top1_after'))}% "
               f"(Δtransf {signed(transfer_delta(results))} points, McNemar p = {pvalue_text(results.get('p_value'))}).")
    v = verdict_of(results)
    return summary, ('The run recorded no transfer delta.' if v.word == 'no result' else f'Verdict: {v.text}.')


def _teacher_row(t: dict) -> dict:
    return {
        'name': f'`{t.get("spec") or teacher_name(t)}`', 'source': t.get('source') or '–',
        'revision': f'`{t["revision"]}`' if t.get('revision') else '–', 'top1': pct(t.get('top1')),
        'rho_pos': pct(t.get('rho_pos')), 'rho_pos_after': pct(t.get('rho_pos_after')),
        'pos_delta': signed(t.get('pos_flips_delta')), 'rho_neg': pct(t.get('rho_neg')),
        'rho_neg_after': pct(t.get('rho_neg_after')), 'neg_delta': signed(t.get('neg_flips_delta')),
        'routed': f"{pct(t.get('routed_share'), 1)}%" if num(t.get('routed_share')) is not None else '–',
    }


def _generations(results: dict, export_dir: Path | None) -> list[dict]:
    rows = []
    for i, g in enumerate(_lineage(results, export_dir), start=1):
        rows.append({
            'generation': g.get('generation', i), 'student': g.get('student') or '?',
            'teachers': ', '.join(f'`{t}`' for t in g.get('teachers') or []) or '–', 'method': g.get('method') or '–',
            'transfer_delta': signed(g.get('transfer_delta')), 'top1_after': pct(g.get('top1_after')),
        })
    return rows


def _control(results: dict) -> str | None:
    """What the CE control was, for the sentence under the results table."""
    control = results.get('control')
    if not control:
        return None
    stages = control.get('stages') or 1
    return (f"the same student trained further with plain cross-entropy and no teacher, from the same start, on the "
            f"same data in the same order with the same seed and budget ({stages} stage{'s' if stages > 1 else ''} "
            f"of {control.get('epochs_per_stage', '?')} epoch(s))")


def _method_description(results: dict) -> str:
    method = METHODS.get(results.get('method') or '')
    return ' '.join(x for x in (
        _GKT_INTRO, method.description if method else '',
        MULTI_TEACHER_DESCRIPTIONS.get(results.get('multi_teacher') or '', '')) if x)


def card_context(results: dict, repo_id: str | None = None, plots: Iterable[str] = (),
                 export_dir: Path | None = None) -> dict:
    """Everything the template shows, as display strings (the template only lays it out)."""
    student_name = results.get('student_name') or short_name(results.get('student') or 'student')
    teachers = results.get('teachers') or []
    teacher_names = [teacher_name(t) for t in teachers]
    _, dataset_name = results_dataset(results)
    dataset_prefix = f'{dataset_name} ' if dataset_name else ''
    eval_samples = results.get('eval_samples')
    eval_split_text = f"{dataset_prefix}{results.get('eval_split') or 'evaluation'} split"
    scope = eval_scope(results)
    if scope:
        eval_split_text += (f" (a seeded {scope['sampling']} subset of {scope['num_samples']} of its "
                            f"{scope['of']} images)")
    elif eval_samples:
        eval_split_text += f' ({eval_samples} images)'
    summary, verdict_line = _summary(results, student_name, teacher_names, eval_split_text)
    hp = results.get('hyperparameters') or {}
    hyperparameters = [(k, v) for k, v in hp.items() if v is not None]
    if results.get('dp_mode'):
        hyperparameters.insert(0, ('dp_mode', results['dp_mode']))
    train_split_text = f"{dataset_prefix}{results.get('train_split') or 'train'} split"
    if hp.get('train_images'):
        train_split_text += f" ({hp['train_images']} images)"
    source = results.get('student_source') or {}
    return {
        'title': f'{student_name} + knowledge from {", ".join(teacher_names) or "no teacher"} (timm_gkt)',
        'summary': summary, 'verdict': verdict_line, 'repo_id': repo_id, 'usage_id': repo_id or 'ORG/REPO',
        'label_names': results.get('label_names') or [],
        'eval_split_text': eval_split_text, 'train_split_text': train_split_text,
        'one_image': f'{100.0 / eval_samples:.2g}' if eval_samples else '–',
        'result_rows': [{'label': r.label, 'before': pct(r.before), 'after': pct(r.after), 'delta': signed(r.delta)}
                        for r in before_after_rows(results)],
        'knowledge_gain': f"{pct(results.get('knowledge_gain'))}%",
        'knowledge_loss': f"{pct(results.get('knowledge_loss'))}%",
        'gains': results.get('gains', '–'), 'losses': results.get('losses', '–'),
        'p_value': pvalue_text(results.get('p_value')),
        'versus_control': versus_control_text(results), 'control': _control(results),
        'teacher_rows': [_teacher_row(t) for t in teachers],
        'plots': [{'path': f'{PLOTS_DIR}/{name}', 'title': PLOT_CAPTIONS[name][0], 'caption': PLOT_CAPTIONS[name][1]}
                  for name in plots],
        'student': {'spec': source.get('spec') or results.get('student') or student_name,
                    'source': source.get('source') or 'unknown source', 'revision': source.get('revision'),
                    'hub_id': student_hub_id(results), 'license': source.get('license')},
        'method_title': results.get('method_title') or results.get('method') or 'unknown method',
        'dp_mode': results.get('dp_mode'), 'multi_teacher': results.get('multi_teacher'),
        'stage_order': ' → '.join(f'`{s}`' for s in results.get('stage_order') or teacher_names) or '–',
        'seed': results.get('seed', '–'), 'generations': _generations(results, export_dir),
        'hyperparameters': hyperparameters,
        'versions': ', '.join(f'{k} {v}' for k, v in (results.get('versions') or {}).items() if v),
        'method_description': _method_description(results), 'bibtex': BIBTEX,
    }


def render_card(results: dict, repo_id: str | None = None, plots: Iterable[str] = (),
                export_dir: Path | None = None):
    """The ModelCard (metadata + body) for a run, from hub_cards/model_card.md."""
    from huggingface_hub import ModelCard
    context = card_context(results, repo_id, plots, export_dir)
    return ModelCard.from_template(card_data(results, repo_id), template_path=str(_template_path()), **context)


def write_card(results: dict, export_dir: str | os.PathLike, repo_id: str | None = None) -> Path:
    """Write export_dir/README.md and the plots it shows (export_dir/plots/*.png); return the README path.

    A plot without data (no epochs, no per-class flips) is skipped and any stale copy removed,
    so the card never shows a picture of another run.
    """
    export_dir = Path(export_dir)
    drawn = []
    for name, draw in PLOTS:
        path = export_dir / PLOTS_DIR / name
        if draw(results, path) is not None:
            drawn.append(name)
        elif path.exists():
            path.unlink()
    card = render_card(results, repo_id, drawn, export_dir)
    readme = export_dir / 'README.md'
    card.save(readme)
    return readme
