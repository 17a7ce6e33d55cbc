"""``python -m timm_gkt.upgrade``: is there an upgraded checkpoint of my backbone on the Hub that beats mine on
my data?

    python -m timm_gkt.upgrade --model hf-hub:ORG/BACKBONE --dataset torch/fashion_mnist --data-dir data
    python -m timm_gkt.upgrade --model hf-hub:ORG/BACKBONE --dataset folder --data-dir /my/images --pull

The Hub's model tree lists the candidates (every model whose card names the backbone as its fine-tuned
``base_model``, :mod:`timm_gkt.hub.upgrades`); each candidate's card claims a top-1 and, from timm_gkt, names its
lineage. Candidates that predict other classes, are no timm model or have no weights are listed with the reason
and not downloaded. The backbone and the others are evaluated in one pass over the user's evaluation split, each
through its own eval transform (:func:`~timm_gkt.evaluation.predictions.predict`), and each candidate is compared
with the backbone on the same images: Δ top-1 and McNemar's exact p, "better / no better / worse than the
backbone" only at p < 0.05. ``--pull`` copies the best significantly better candidate, at the commit that was
evaluated, into a local folder and prints the line that loads it with timm alone; with none, nothing is pulled.

Exit codes: 0 compared (and, with ``--pull``, pulled); 3 ``--pull`` found no candidate significantly better, nothing
pulled; 2 bad input (no such backbone, no candidate, none with the backbone's classes or weights, data), nothing
downloaded but config files; 1 anything unexpected.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import BadInput, ModelSpecError, UpgradeCandidatesError, WeightsUnavailableError
from .boundary import EXIT_NOT_IMPROVED, EXIT_OK, guarded
from .config import DEFAULT_DATA_DIR, DEFAULT_DATASET, check_dataset_named

YARDSTICK, TEST = 'the backbone', 'paired McNemar against the backbone'


def main(argv=None) -> int:
    return guarded(upgrade_command, argv)


def build_parser() -> argparse.ArgumentParser:
    from .flags import OneLineParser
    p = OneLineParser(prog='python -m timm_gkt.upgrade', description=__doc__.split('\n')[0])
    p.add_argument('--model', required=True, help='the backbone: hf-hub:ORG/REPO, or a timm name with Hub weights')
    p.add_argument('--dataset', '-d', default=None, help=f'as for train.py (default: {DEFAULT_DATASET})')
    p.add_argument('--data-dir', default=None, help=f'as for train.py (default: {DEFAULT_DATA_DIR})')
    p.add_argument('--val-split', default=None, help='the evaluation split, as for train.py')
    p.add_argument('--class-map', default='', help='as for train.py')
    p.add_argument('--trust-label-order', action='store_true', help='as for train.py')
    p.add_argument('--eval-subset', type=int, default=0, help='a seeded class-stratified sample of N images (0 = all)')
    p.add_argument('--seed', type=int, default=42, help='seed of the --eval-subset sample')
    p.add_argument('-b', '--batch-size', type=int, default=256)
    p.add_argument('-j', '--workers', type=int, default=0)
    p.add_argument('--pull', action='store_true',
                   help='copy the best candidate that is significantly better than the backbone into --pull-dir')
    p.add_argument('--pull-dir', default='upgrades', help='parent folder of a pulled candidate')
    p.add_argument('--endpoint', default=None, help='Hub endpoint (default: HF_ENDPOINT or https://huggingface.co)')
    p.add_argument('--json', action='store_true', help='print the comparison as JSON instead of a table')
    p.add_argument('--debug', action='store_true', help='show the traceback behind an error')
    return p


def upgrade_command(argv: list[str]) -> int:
    from huggingface_hub import HfApi

    from ..hub.upgrades import backbone_info, pull
    args = build_parser().parse_args(argv)
    check_dataset_named(args.dataset, args.data_dir)
    flags = eval_flags(args)
    check_eval_data(flags)
    backbone_id = backbone_hub_id(args.model)
    api = HfApi(endpoint=args.endpoint)
    backbone_info(api, backbone_id)
    candidates = screened_candidates(api, backbone_id, args)
    rows, backbone = evaluate(args, flags, backbone_id, candidates)
    say = (lambda line: print(line, file=sys.stderr)) if args.json else print
    if args.json:
        print(json.dumps({'backbone': backbone, 'candidates': [{k: v for k, v in r.items() if k != 'candidate'}
                                                               for r in rows]}, indent=2))
    else:
        for line in format_upgrades(backbone, rows):
            print(line)
    best = best_upgrade(rows)
    if not args.pull:
        if best is not None:
            say(f"{best['repo_id']} is better than the backbone on these images; --pull copies it here")
        return EXIT_OK
    if best is None:
        say('nothing pulled: no candidate is significantly better than the backbone on these images')
        return EXIT_NOT_IMPROVED
    target = Path(args.pull_dir) / best['repo_id'].split('/')[-1]
    pull(best['candidate'], target, endpoint=args.endpoint)
    say(f"pulled {best['repo_id']}@{best['sha'][:12]} ({best['verdict']}: {best['delta']:+.2f} points) into "
        f"{target}; it loads with timm alone:")
    say(f"model = timm.create_model('local-dir:{target}', pretrained=True)")
    return EXIT_OK


def eval_flags(args):
    from ..data.plan import EvalFlags
    from ..data.splits import default_val_split
    dataset = args.dataset or DEFAULT_DATASET
    return EvalFlags(dataset, str(args.data_dir or DEFAULT_DATA_DIR), args.val_split or default_val_split(dataset),
                     class_map=args.class_map, trust_label_order=args.trust_label_order, eval_subset=args.eval_subset,
                     seed=args.seed)


def check_eval_data(flags) -> None:
    """The data source and the evaluation split exist (no image read): refused before anything is downloaded."""
    from ..data.plan import check_data_source
    from ..data.splits import resolve_split
    check_data_source(flags)
    resolve_split(flags.dataset, flags.data_dir, flags.val_split)


def backbone_hub_id(model: str) -> str:
    """The Hub id a fine-tune's card names as ``base_model``: the repo of ``hf-hub:``, the weights' repo of a timm
    name (its pretrained config's ``hf_hub_id``, as timm_gkt's cards record it)."""
    from ..models.spec import HF_HUB, LOCAL_DIR, resolve_spec
    spec = resolve_spec(model)
    if spec.source == HF_HUB:
        return spec.hub_id
    if spec.source == LOCAL_DIR:
        raise ModelSpecError(f'{spec.text} is a local folder, which no Hub card can name as its base model; give the '
                             f'backbone as hf-hub:ORG/REPO')
    from timm.models import get_pretrained_cfg
    from ..models.load import check_model_spec
    check_model_spec(spec)
    cfg = get_pretrained_cfg(spec.text)
    if cfg is None or not cfg.hf_hub_id:
        raise ModelSpecError(f'{spec.text} has no weights on the Hub, so no Hub card names it as its base model; give '
                             f'the backbone as hf-hub:ORG/REPO')
    return cfg.hf_hub_id.partition('@')[0]


def screened_candidates(api, backbone_id: str, args) -> list:
    """The backbone's fine-tunes, each with its config and, when it cannot be compared, the reason; bad input when
    none can. Only config files are downloaded here."""
    from ..hub.upgrades import find_candidates, label_space_problem, read_config
    candidates = find_candidates(api, backbone_id)
    if not candidates:
        raise UpgradeCandidatesError(f'the Hub lists no model fine-tuned from {backbone_id} (no card names it as its '
                                  f'base_model); there is nothing to compare it with, so check the id, or push an '
                                  f'upgrade with train.py --push-to-hub')
    backbone_config = read_config(backbone_id, None, args.endpoint)
    if not (backbone_config or {}).get('architecture'):
        raise ModelSpecError(f'backbone {backbone_id} has no timm config.json, so its classes are unknown; give a timm '
                             f'model (config.json and model.safetensors)')
    for c in candidates:
        c.config = read_config(c.repo_id, c.sha, args.endpoint)
        c.problem = label_space_problem(c.config, backbone_config) or weights_problem(c, args.endpoint)
    if all(c.problem for c in candidates):
        raise no_comparable_candidate(backbone_id, candidates)
    return candidates


def weights_problem(candidate, endpoint: str | None) -> str | None:
    """'no weights (...)' when the candidate's repository has no weight file timm reads (one HEAD request)."""
    from ..models.spec import parse_spec
    from ..models.weights import HUB_WEIGHT_FILES, check_hub_files
    try:
        check_hub_files(parse_spec(candidate.spec), candidate.repo_id, candidate.sha, [HUB_WEIGHT_FILES],
                        endpoint=endpoint)
    except WeightsUnavailableError:
        return f'its weights do not load: it has none of {", ".join(HUB_WEIGHT_FILES)}'
    return None


def no_comparable_candidate(backbone_id: str, candidates: list) -> BadInput:
    """One sentence for the candidates that could not be compared, of the error class of their common reason."""
    from ..errors import LabelSpaceError
    reasons = '; '.join(f'{c.repo_id}: {c.problem}' for c in candidates)

    def what(one: str, many: str) -> str:
        if len(candidates) == 1:
            return f'the only candidate of {backbone_id} {one} ({reasons})'
        return f'none of the {len(candidates)} candidates of {backbone_id} {many} ({reasons})'
    if all('label space' in c.problem for c in candidates):
        return LabelSpaceError(f'{what("does not predict its classes", "predicts its classes")}; an upgrade must '
                               f'predict the backbone\'s classes, so compare models of the same label space')
    if all('weights' in c.problem for c in candidates):
        return WeightsUnavailableError(f'{what("has no weights that load", "has weights that load")}; an upgrade '
                                       f'needs model.safetensors (or pytorch_model.bin) beside its config.json')
    return UpgradeCandidatesError(f'{what("cannot be compared with it", "can be compared with it")}; an upgrade must be '
                               f'a timm model with weights that predicts the backbone\'s classes')


def local_copy(repo_id: str, revision: str | None, endpoint: str | None) -> str:
    """``local-dir:`` of the model's files in the Hugging Face cache, at ``revision`` (what is evaluated is what
    ``--pull`` copies)."""
    from huggingface_hub import snapshot_download

    from ..models.weights import HUB_WEIGHT_FILES
    return 'local-dir:' + snapshot_download(repo_id, revision=revision, endpoint=endpoint,
                                            allow_patterns=['config.json', *HUB_WEIGHT_FILES])


def evaluate(args, flags, backbone_id: str, candidates: list) -> tuple[list[dict], dict]:
    """Load the backbone and every comparable candidate, predict in one pass, compare each with the backbone."""
    from ..data.plan import open_eval_data
    from ..evaluation.predictions import predict
    from ..models.frozen import Teacher
    from ..models.load import load_model
    from ..models.spec import parse_spec
    from safetensors import SafetensorError
    say = lambda line: print(line, file=sys.stderr)  # noqa: E731
    backbone = load_model(local_copy(backbone_id, None, args.endpoint))
    backbone.spec = parse_spec(f'hf-hub:{backbone_id}')  # named as the user named it, not by its cache folder
    data = open_eval_data(flags, backbone, say)
    loaded = []
    for c in candidates:
        if c.problem is None:
            try:  # a candidate answers in the backbone's class order (its names may be in another order)
                loaded.append((c, Teacher.load(local_copy(c.repo_id, c.sha, args.endpoint), backbone)))
            except (BadInput, OSError, RuntimeError, ValueError, SafetensorError) as e:
                c.problem = f'its weights do not load ({str(e).splitlines()[0][:80]})'
    if not loaded:
        raise no_comparable_candidate(backbone_id, candidates)
    preds, target = predict([backbone.model] + [t.network for _, t in loaded],
                            [backbone.preprocessing] + [t.preprocessing for _, t in loaded], data.dataset,
                            batch_size=args.batch_size, num_workers=args.workers, desc='upgrade')
    rows = [compare(c, preds[0], pred, target, backbone.num_classes) for (c, _), pred in zip(loaded, preds[1:])]
    rows.sort(key=lambda r: -r['top1'])
    rows += [row_of(c) for c in candidates if c.problem is not None]
    top1 = 100.0 * (preds[0] == target).double().mean().item()
    return rows, {'repo_id': backbone_id, 'top1': top1, 'eval_samples': int(target.numel()),
                  'dataset': flags.dataset, 'split': flags.val_split, 'subset': data.subset}


def row_of(candidate) -> dict:
    from ..hub.upgrades import lineage_text
    return {'repo_id': candidate.repo_id, 'sha': candidate.sha, 'claimed_top1': candidate.claimed_top1,
            'claimed_on': candidate.claimed_on, 'lineage': lineage_text(candidate), 'top1': None, 'delta': None,
            'gains': None, 'losses': None, 'p_value': None, 'verdict': None, 'problem': candidate.problem,
            'candidate': candidate}


def compare(candidate, backbone_pred, pred, target, num_classes: int) -> dict:
    """One candidate against the backbone on the same images: McNemar on the images one gets right and the other
    wrong."""
    from ..evaluation.metrics import transfer_metrics
    from ..report.results import comparison_verdict
    m = transfer_metrics(backbone_pred, pred, {}, target, num_classes)
    return {**row_of(candidate), 'top1': m['top1_after'], 'delta': m['transfer_delta'], 'gains': m['gains'],
            'losses': m['losses'], 'p_value': m['p_value'],
            'verdict': comparison_verdict(m['transfer_delta'], m['p_value'], YARDSTICK, TEST).word}


def best_upgrade(rows: list[dict]) -> dict | None:
    """The significantly better candidate with the highest top-1 on these images, if any."""
    better = [r for r in rows if r['verdict'] == f'better than {YARDSTICK}']
    return max(better, key=lambda r: r['top1']) if better else None


def format_upgrades(backbone: dict, rows: list[dict]) -> list[str]:
    from ..report.results import pct, pvalue_text
    subset = backbone['subset']
    part = '' if subset['sampling'] == 'all' else f" (a seeded subset of its {subset['of']})"
    lines = [f"backbone {backbone['repo_id']}: top-1 {backbone['top1']:.2f} on {backbone['eval_samples']} images of "
             f"{backbone['dataset']} {backbone['split']}{part}",
             f"{'candidate':28s}{'claimed':>9s}{'here':>8s}  {'Δ vs backbone (McNemar p)':27s}{'verdict':29s}lineage"]
    for r in rows:
        if r['problem']:
            lines.append(f"{r['repo_id']:28s}{pct(r['claimed_top1']):>9s}{'–':>8s}  {'–':27s}not compared: "
                         f"{r['problem']}")
            continue
        delta = f"{r['delta']:+.2f} (p = {pvalue_text(r['p_value'])})"
        lines.append(f"{r['repo_id']:28s}{pct(r['claimed_top1']):>9s}{r['top1']:8.2f}  {delta:27s}{r['verdict']:29s}"
                     f"{r['lineage']}")
    lines.append("claimed: the top-1 the candidate's card states (its model-index, on its own evaluation data); here: "
                 "on these images, every model through its own eval transform")
    return lines
