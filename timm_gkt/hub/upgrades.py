"""Upgraded checkpoints of a backbone on the Hub: the models whose card names it as their ``base_model``.

The Hub's own model tree answers the question: a card with ``base_model: ORG/BACKBONE`` (and
``base_model_relation: finetune``, as every card timm_gkt pushes has) is listed under the tag
``base_model:finetune:ORG/BACKBONE``, which ``HfApi.list_models(filter=...)`` searches. Each candidate's card data
comes with the listing (``cardData=True``): its ``model-index`` states the top-1 it claims. Its ``config.json`` (one
small file, never the weights) says its classes and, for a timm_gkt model, its lineage; whether it has weights is
one HEAD request. No weights are downloaded here, and nothing here imports torch.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelSpecError

FINETUNE_FILTER = 'base_model:finetune:{}'
CONFIG = 'config.json'
# what a pulled candidate keeps: what timm loads and what documents it (the card, the run's results and flags)
PULLED_FILES = ['config.json', 'model.safetensors', 'pytorch_model.bin', 'README.md', 'results.json', 'args.yaml']


@dataclass
class Candidate:
    """A Hub model whose card names the backbone as what it was fine-tuned from."""
    repo_id: str
    sha: str | None
    claimed_top1: float | None = None
    claimed_on: str | None = None  # 'DATASET SPLIT' of the claimed top-1, as the card's model-index names them
    config: dict | None = None
    problem: str | None = None  # why it cannot be compared (set by the checks); None: it can

    @property
    def spec(self) -> str:
        return f'hf-hub:{self.repo_id}' + (f'@{self.sha}' if self.sha else '')

    @property
    def lineage(self) -> list[dict]:
        return list(((self.config or {}).get('timm_gkt') or {}).get('lineage') or [])


def backbone_info(api, repo_id: str):
    """The backbone's model info; one sentence when the Hub does not know it."""
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError
    try:
        return api.model_info(repo_id)
    except (RepositoryNotFoundError, RevisionNotFoundError):
        raise ModelSpecError(f'backbone {repo_id} is not on the Hub (or is private); check the repository id, or '
                             f'log in with a token that can read it') from None


def find_candidates(api, backbone_id: str) -> list[Candidate]:
    """Every fine-tune of ``backbone_id`` the Hub lists, with the top-1 its card claims."""
    found = api.list_models(filter=FINETUNE_FILTER.format(backbone_id), cardData=True)
    candidates = []
    for info in found:
        if info.id == backbone_id:
            continue
        value, on = claimed_top1(info.card_data)
        candidates.append(Candidate(info.id, info.sha, value, on))
    return candidates


def claimed_top1(card_data) -> tuple[float | None, str | None]:
    """The first ``accuracy`` of the card's model-index (a timm_gkt card's top-1 after transfer), and on what."""
    for result in getattr(card_data, 'eval_results', None) or []:
        if result.metric_type == 'accuracy':
            on = ' '.join(x for x in (result.dataset_name or result.dataset_type, result.dataset_split) if x)
            return float(result.metric_value), on or None
    return None, None


def read_config(repo_id: str, revision: str | None, endpoint: str | None = None, token=None) -> dict | None:
    """A model's config.json (one small download), or None when it has none or it is not JSON."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError
    try:
        path = hf_hub_download(repo_id, CONFIG, revision=revision, endpoint=endpoint, token=token)
        data = json.loads(Path(path).read_text())
    except (EntryNotFoundError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def label_space(config: dict | None) -> tuple[int | None, tuple[str, ...] | None]:
    """(class count, class names) a timm config.json states."""
    config = config or {}
    names = config.get('label_names') or (config.get('pretrained_cfg') or {}).get('label_names')
    count = config.get('num_classes') or (len(names) if names else None)
    return count, tuple(str(n) for n in names) if names else None


def label_space_problem(candidate: dict | None, backbone: dict | None) -> str | None:
    """Why a candidate's head does not predict the backbone's classes; None when it does (in any order)."""
    if not candidate or not candidate.get('architecture'):
        return 'not a timm model (its config.json names no architecture)'
    count, names = label_space(candidate)
    ref_count, ref_names = label_space(backbone)
    if count != ref_count:
        return f'another label space: {count} classes, the backbone {ref_count}'
    if names and ref_names and set(names) != set(ref_names):
        other = sorted(set(names) - set(ref_names))[:2]
        return f'another label space: classes such as {", ".join(map(repr, other))} are not the backbone\'s'
    return None


def lineage_text(candidate: Candidate) -> str:
    """The last generation of a timm_gkt lineage in a few words ('KL + DP from q_cnn, gen 2'); '–' for other models."""
    lineage = candidate.lineage
    if not lineage:
        return '–'
    from ..models.spec import short_name
    from ..transfer.methods import METHODS
    last = lineage[-1]
    method = METHODS.get(last.get('method') or '')
    generation = f"gen {last.get('generation', len(lineage))}"
    if method is not None and not method.needs_teacher:  # a CE run lists teachers only for its flip metrics
        return f'{method.title}, {generation}'
    teachers = ', '.join(short_name(t) for t in last.get('teachers') or []) or 'no teacher'
    return f"{method.title if method else last.get('method') or '?'} from {teachers}, {generation}"


def pull(candidate: Candidate, folder: Path, endpoint: str | None = None, token=None) -> Path:
    """The candidate at the evaluated commit, as a local folder timm loads (``local-dir:FOLDER``)."""
    from huggingface_hub import snapshot_download
    return Path(snapshot_download(candidate.repo_id, revision=candidate.sha, local_dir=folder,
                                  allow_patterns=PULLED_FILES, endpoint=endpoint, token=token))
