"""The Hub loop: model cards, the push gate, access checks, gated pushes and CI summaries.

A run folder (``output/train/<experiment>/``) holds ``results.json`` and ``export/``, a
folder in Hub layout (``config.json`` + ``model.safetensors`` from
``timm.models.save_for_hf``). This module

- renders ``export/README.md`` from ``hub_cards/model_card.md`` through huggingface_hub's
  ``ModelCard``/``ModelCardData``/``EvalResult`` and draws ``export/plots/*.png``;
- decides whether a run may be pushed (``push_gate``: Δtransf on the eval split must beat
  a minimum, optionally with a McNemar p-value bound);
- checks, before any training, that a token exists and may write to the repository
  (``check_push_access``), without creating anything;
- pushes the export in one commit (``push_export``), creating the repository (and branch)
  only then, retrying transient failures with exponential back-off;
- writes a GitHub Actions step summary (``write_step_summary``).

Nothing here imports torch: ``python -m timm_gkt.push`` stays quick.
"""
from __future__ import annotations

import json
import logging
import math
import os
import shlex
import time
from pathlib import Path
from typing import Any, Iterable

from .spec import short_name

_logger = logging.getLogger(__name__)

EXIT_PUSHED = 0
EXIT_ERROR = 1
EXIT_NOT_IMPROVED = 3  # 2 is argparse's usage error

# the card template lives next to the package in a source checkout; a wheel would carry it as package data
_TEMPLATE_CANDIDATES = (
    # a wheel installs hub_cards/ as the package data timm_gkt/hub_cards (see pyproject.toml)
    Path(__file__).resolve().parent / 'hub_cards' / 'model_card.md',
    # a checkout or editable install reads the repository's hub_cards/
    Path(__file__).resolve().parent.parent / 'hub_cards' / 'model_card.md',
)
PLOTS_DIR = 'plots'
PER_CLASS_PLOT = 'per_class_knowledge.png'
GAIN_LOSS_PLOT = 'gain_loss.png'

# Exactly what a push uploads; anything else in the export folder (a stray .env, a token file) stays local.
PUSHED_FILES = ('config.json', 'model.safetensors', 'README.md', 'results.json', 'args.yaml', f'{PLOTS_DIR}/*.png')
REQUIRED_FILES = ('config.json', 'model.safetensors')

# Org roles allowed to create repositories in an org ('read' members cannot; contributors can create their own).
WRITE_ROLES = frozenset({'admin', 'write', 'contributor'})
# HTTP answers worth another try: rate limits and server-side failures; 4xx means the request itself is wrong.
TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
LOGIN_FIX = 'run `hf auth login` (or set HF_TOKEN) with a token that has write access'

PAPER_URL = 'https://arxiv.org/abs/2310.17653'
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
METHOD_DESCRIPTIONS = {
    'kldp': 'KL + DP (data partitioning): every training image is distilled from whichever of the teacher and the '
            'frozen initial student is more confident (in the true class when supervised), so the student learns '
            'from the teacher only where the teacher knows better and keeps its own predictions elsewhere.',
    'kl': 'KL-Dist: the student is distilled towards the teacher on every image; without a safeguard this can '
          'overwrite what the student knew.',
    'xekl': 'XE-KL: distillation towards the teacher mixed with cross-entropy on the labels.',
    'xekl-mcl': 'XE-KL + MCL: XE-KL on a fast copy of the student while a slow copy, updated by momentum '
                'interpolation of the weights, is evaluated and exported, which limits forgetting.',
    'ce': 'CE control: the student trained further with plain cross-entropy and no teacher, the baseline that tells '
          'transfer apart from more training.',
}
MULTI_TEACHER_DESCRIPTIONS = {
    'sequential': 'Teachers were used one after another (sequential KL + DP); after each stage the current student '
                  'became the frozen student of the next stage.',
    'parallel': 'All teachers were used at once (parallel KL + DP): each image is distilled from the most confident '
                'of the frozen student and the teachers.',
    'soup': 'The student was transferred from each teacher separately and the resulting weights were averaged '
            '(model soup).',
}

# timm dataset specs -> (Hub dataset id, display name), for the card's `datasets` metadata
_KNOWN_DATASETS = {
    'fashion_mnist': ('zalando-datasets/fashion_mnist', 'Fashion-MNIST'),
    'mnist': ('ylecun/mnist', 'MNIST'),
    'cifar10': ('uoft-cs/cifar10', 'CIFAR-10'),
    'cifar100': ('uoft-cs/cifar100', 'CIFAR-100'),
    'imagenet': ('ILSVRC/imagenet-1k', 'ImageNet-1k'),
}

# indirection so tests can stand in for the back-off waits
_sleep = time.sleep


class PushAccessError(RuntimeError):
    """The token is missing or may not write to the repository: fail before any training."""


class PushError(RuntimeError):
    """Pushing an export failed; the message names the command that retries it."""


# ----------------------------------------------------------------------------- small pure helpers

def _num(x: Any) -> float | None:
    """A finite float, or None for missing/NaN values (JSON has no NaN, but older runs may carry None)."""
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _pct(x: Any, digits: int = 2) -> str:
    x = _num(x)
    return '–' if x is None else f'{x:.{digits}f}'


def _signed(x: Any, digits: int = 2) -> str:
    x = _num(x)
    return '–' if x is None else f'{x:+.{digits}f}'


def _pvalue(p: Any) -> str:
    p = _num(p)
    return '–' if p is None else f'{p:.3g}'


def hub_dataset(spec: str | None) -> tuple[str | None, str | None]:
    """(Hub dataset id, display name) for a timm dataset spec such as ``torch/fashion_mnist`` or ``hfds/org/name``."""
    if not spec:
        return None, None
    prefix, _, rest = spec.partition('/')
    if prefix in ('hfds', 'hfids') and rest:
        return rest, rest
    name = rest if prefix in ('torch', 'tfds', 'wds') and rest else spec
    return _KNOWN_DATASETS.get(name.lower(), (name, name))


def transfer_delta(results: dict) -> float | None:
    """Δtransf = top-1 after - top-1 before (points), as recorded or recomputed from the two accuracies."""
    delta = _num(results.get('transfer_delta'))
    if delta is None:
        before, after = _num(results.get('top1_before')), _num(results.get('top1_after'))
        if before is not None and after is not None:
            delta = after - before
    return delta


def student_hub_id(results: dict) -> str | None:
    """The student's Hub id when it came from (or is mirrored on) the Hub; a local student has none."""
    source = results.get('student_source') or {}
    if source.get('hub_id'):
        return source['hub_id']
    spec = source.get('spec') or results.get('student') or ''
    if spec.startswith('hf-hub:'):
        return spec[len('hf-hub:'):].split('@')[0]
    return None


def resolve_token(token: str | None = None) -> str | None:
    """The explicit token, else huggingface_hub's (HF_TOKEN, then the saved `hf auth login`)."""
    if token:
        return token
    from huggingface_hub import get_token
    return get_token()


def retry_command(
        run_dir: str | os.PathLike,
        repo_id: str,
        *,
        private: bool = False,
        revision: str | None = None,
        create_pr: bool = False,
        endpoint: str | None = None,
) -> str:
    """The shell command that pushes (or retries pushing) a finished run."""
    parts = ['python', '-m', 'timm_gkt.push', str(run_dir), repo_id]
    if private:
        parts.append('--private')
    if revision:
        parts += ['--revision', revision]
    if create_pr:
        parts.append('--create-pr')
    if endpoint:
        parts += ['--endpoint', endpoint]
    return ' '.join(shlex.quote(p) for p in parts)


# ----------------------------------------------------------------------------- push gate

def push_gate(results: dict, min_delta: float = 0.0, max_p_value: float | None = None) -> tuple[bool, str]:
    """May this run be pushed? Δtransf on the eval split must be strictly greater than ``min_delta`` and,
    when ``max_p_value`` is given, McNemar's p-value at most that. Returns (decision, one-sentence reason)."""
    split = results.get('eval_split') or 'eval'
    delta = transfer_delta(results)
    if delta is None:
        return False, 'Not pushed: the results record no transfer delta (top-1 before and after), so there is nothing to gate on.'
    accuracies = f"{_pct(results.get('top1_before'))}% -> {_pct(results.get('top1_after'))}%"
    if not delta > min_delta:
        return False, (f'Not pushed: Δtransf = {delta:+.2f} points on the {split} split ({accuracies}) '
                       f'is not greater than the minimum {min_delta:+.2f}.')
    p = _num(results.get('p_value'))
    if max_p_value is not None:
        if p is None:
            return False, (f'Not pushed: Δtransf = {delta:+.2f} points on the {split} split but the results record '
                           f'no McNemar p-value to compare with the maximum {max_p_value:g}.')
        if p > max_p_value:
            return False, (f'Not pushed: Δtransf = {delta:+.2f} points on the {split} split ({accuracies}) could be '
                           f'noise: McNemar p = {p:.3g} > {max_p_value:g}.')
    p_text = '' if p is None else f', McNemar p = {p:.3g}' + (f' <= {max_p_value:g}' if max_p_value is not None else '')
    return True, (f'Push: Δtransf = {delta:+.2f} points on the {split} split ({accuracies}) '
                  f'> {min_delta:+.2f}{p_text}.')


# ----------------------------------------------------------------------------- access check

def _http_status(error: BaseException) -> int | None:
    response = getattr(error, 'response', None)
    return getattr(response, 'status_code', None)


def _is_network_error(error: BaseException) -> bool:
    try:  # huggingface_hub 2.x speaks httpx2, 1.x httpx
        from httpx2 import TransportError
    except ImportError:
        from httpx import TransportError
    return isinstance(error, (TransportError, ConnectionError, TimeoutError))


def check_push_options(revision: str | None = None, create_pr: bool = False) -> None:
    """Option combinations the Hub cannot honour, caught before training."""
    if create_pr and revision not in (None, 'main'):
        raise PushAccessError(f'A pull request is always opened against main, so --hub-create-pr cannot be combined '
                              f'with --hub-revision {revision}; drop one of the two.')


def check_push_access(
        repo_id: str,
        token: str | None = None,
        endpoint: str | None = None,
        *,
        revision: str | None = None,
        create_pr: bool = False,
) -> None:
    """Raise PushAccessError unless a token exists and may write to ``repo_id``; creates nothing.

    An existing repository is asked directly (``auth_check(write=True)``). A repository that
    does not exist yet (404) is pushable when its namespace is the token's user or one of
    its orgs with a role that may create repositories, and the token is not read-only.
    """
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, HFValidationError, RepositoryNotFoundError
    from huggingface_hub.utils import validate_repo_id

    check_push_options(revision, create_pr)
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise PushAccessError(f'{repo_id!r} is not a valid repository id; use NAMESPACE/NAME such as alice/vit-gkt.') from None
    if '/' not in repo_id:
        raise PushAccessError(f'{repo_id!r} names no namespace; use NAMESPACE/NAME (your user name or an org).')
    token = resolve_token(token)
    if not token:
        raise PushAccessError(f'No Hugging Face token found to push to {repo_id}; {LOGIN_FIX}.')
    api = HfApi(endpoint=endpoint, token=token)
    where = api.endpoint

    try:
        api.auth_check(repo_id, write=True)
        return
    except GatedRepoError:  # a subclass of RepositoryNotFoundError: ask first
        raise PushAccessError(f'{repo_id} is gated and your token has no access to it; {LOGIN_FIX} to it.') from None
    except RepositoryNotFoundError:
        pass  # not there yet (or hidden from us): decide from the namespace below
    except Exception as e:  # noqa: BLE001 - every failure becomes one sentence naming the fix
        status = _http_status(e)
        if status == 401:
            raise PushAccessError(f'The Hugging Face token was rejected by {where}; {LOGIN_FIX}.') from None
        if status == 403:
            raise PushAccessError(f'Your token may not write to {repo_id}; {LOGIN_FIX} to {repo_id}, '
                                  f'or push to a repository you own.') from None
        if _is_network_error(e) or status is not None:
            raise PushAccessError(f'Could not check write access to {repo_id} at {where} ({_describe(e)}); '
                                  f'check the connection and HF_ENDPOINT, then run again.') from None
        raise

    try:
        me = api.whoami()
    except Exception as e:  # noqa: BLE001
        if _http_status(e) == 401:
            raise PushAccessError(f'The Hugging Face token was rejected by {where}; {LOGIN_FIX}.') from None
        raise PushAccessError(f'Could not ask {where} who the token belongs to ({_describe(e)}); '
                              f'check the connection and HF_ENDPOINT, then run again.') from None

    token_role = ((me.get('auth') or {}).get('accessToken') or {}).get('role')
    if token_role == 'read':
        raise PushAccessError(f'Your Hugging Face token is read-only, so it cannot create {repo_id}; {LOGIN_FIX}.')
    namespace = repo_id.split('/')[0]
    if namespace == me.get('name'):
        return
    roles = {org.get('name'): org.get('roleInOrg') for org in me.get('orgs') or []}
    if namespace not in roles:
        raise PushAccessError(f'{repo_id} does not exist and {namespace!r} is neither your user name '
                              f'({me.get("name")}) nor one of your organisations; push under your own namespace '
                              f'or join {namespace}.')
    if roles[namespace] not in WRITE_ROLES:
        raise PushAccessError(f'{repo_id} does not exist and your role in {namespace} ({roles[namespace]}) cannot '
                              f'create repositories; ask an admin of {namespace} for the write role or push under '
                              f'your own namespace.')


# ----------------------------------------------------------------------------- push

def _describe(error: BaseException) -> str:
    """A one-line description of an HTTP/network error (never headers, so never the token)."""
    status = _http_status(error)
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if status is not None and str(status) not in text:
        text = f'HTTP {status}: {text}'
    return text


def _is_transient(error: BaseException) -> bool:
    status = _http_status(error)
    if status is not None:
        return status in TRANSIENT_STATUS or status >= 500
    return _is_network_error(error)


def _files_to_push(export_dir: Path) -> list[Path]:
    from fnmatch import fnmatch
    files = [p for p in sorted(export_dir.rglob('*')) if p.is_file()]
    return [p for p in files if any(fnmatch(p.relative_to(export_dir).as_posix(), pat) for pat in PUSHED_FILES)]


def _check_no_secret(files: Iterable[Path], token: str) -> None:
    needle = token.encode()
    for path in files:
        if path.suffix == '.safetensors':
            continue  # weights, not text a token could have been written into
        if needle in path.read_bytes():
            raise PushError(f'{path} contains your Hugging Face token; remove it from the file before pushing.')


def _default_commit_message(export_dir: Path) -> str:
    try:
        results = json.loads((export_dir / 'results.json').read_text())
    except (OSError, ValueError):
        return 'Upload knowledge-transfer student (timm_gkt)'
    teachers = ', '.join(t.get('name', '?') for t in results.get('teachers') or []) or 'no teacher'
    return (f"{results.get('student_name', 'student')} + {teachers}: {results.get('method', 'transfer')}, "
            f"Δtransf {_signed(transfer_delta(results))} (timm_gkt)")


def push_export(
        export_dir: str | os.PathLike,
        repo_id: str,
        *,
        token: str | None = None,
        endpoint: str | None = None,
        private: bool = False,
        revision: str | None = None,
        create_pr: bool = False,
        retries: int = 3,
        backoff: float = 1.0,
        commit_message: str | None = None,
        run_dir: str | os.PathLike | None = None,
) -> str:
    """Push an export folder to ``repo_id`` in one commit and return the commit URL.

    The repository (and the ``revision`` branch) is created here, at push time, so a run
    refused by the gate leaves nothing on the Hub. The card is re-rendered with the real
    repository id first (when ``results.json`` is there) so its usage snippet is right.
    Transient failures (5xx, 429, connection errors) are retried ``retries`` times,
    waiting ``backoff * 2**k`` seconds; every step is idempotent, so a retry after a commit
    whose answer was lost uploads nothing new. On final failure the export is left as it
    was and ``PushError`` names the command that retries.
    """
    from huggingface_hub import HfApi

    export_dir = Path(export_dir)
    run_dir = Path(run_dir) if run_dir is not None else export_dir.parent
    retry = retry_command(run_dir, repo_id, private=private, revision=revision, create_pr=create_pr,
                          endpoint=endpoint)
    try:
        check_push_options(revision, create_pr)
    except PushAccessError as e:
        raise PushError(str(e)) from None
    missing = [name for name in REQUIRED_FILES if not (export_dir / name).is_file()]
    if missing:
        raise PushError(f'{export_dir} lacks {", ".join(missing)}; export the student first '
                        f'(timm.models.save_for_hf), then run: {retry}')
    token = resolve_token(token)
    if not token:
        raise PushError(f'No Hugging Face token found; {LOGIN_FIX}, then run: {retry}')

    results_path = export_dir / 'results.json'
    if results_path.is_file():
        write_card(json.loads(results_path.read_text()), export_dir, repo_id)
    files = _files_to_push(export_dir)
    _check_no_secret(files, token)
    commit_message = commit_message or _default_commit_message(export_dir)

    api = HfApi(endpoint=endpoint, token=token)
    attempts = max(1, retries + 1)
    for attempt in range(1, attempts + 1):
        try:
            api.create_repo(repo_id, private=private, exist_ok=True)
            if revision and revision != 'main' and not revision.startswith('refs/pr/'):
                api.create_branch(repo_id, branch=revision, exist_ok=True)
            info = api.upload_folder(
                repo_id=repo_id, folder_path=export_dir, allow_patterns=list(PUSHED_FILES),
                revision=revision, create_pr=create_pr, commit_message=commit_message,
            )
        except Exception as e:  # noqa: BLE001 - classified below, re-raised as PushError
            transient = _is_transient(e)
            if transient and attempt < attempts:
                delay = backoff * 2 ** (attempt - 1)
                _logger.warning('Push of %s to %s failed (%s); retry %d/%d in %.1fs.',
                                export_dir, repo_id, _describe(e), attempt, attempts - 1, delay)
                _sleep(delay)
                continue
            tried = f' after {attempt} attempts' if attempt > 1 else ''
            fix = f'{LOGIN_FIX} to {repo_id}, then ' if _http_status(e) in (401, 403) else ''
            raise PushError(f'Pushing {export_dir} to {repo_id} failed{tried} ({_describe(e)}); the local export is '
                            f'intact, {fix}retry with: {retry}') from e
        if info.pr_url:
            _logger.info('Opened pull request %s', info.pr_url)
        return info.commit_url
    raise AssertionError('unreachable')


def push_run(
        run_dir: str | os.PathLike,
        repo_id: str,
        *,
        private: bool = False,
        revision: str | None = None,
        create_pr: bool = False,
        min_delta: float = 0.0,
        max_p_value: float | None = None,
        force: bool = False,
        token: str | None = None,
        endpoint: str | None = None,
        retries: int = 3,
        backoff: float = 1.0,
) -> tuple[int, str]:
    """Gate, check access and push a finished run folder: (exit code, one-line message).

    What ``python -m timm_gkt.push`` and ``train.py --push-to-hub`` both do after training.
    """
    run_dir = Path(run_dir)
    export_dir = run_dir / 'export'
    try:
        results = json.loads((run_dir / 'results.json').read_text())
    except FileNotFoundError:
        return EXIT_ERROR, f'{run_dir / "results.json"} does not exist; give the folder of a finished train.py run.'
    except ValueError as e:
        return EXIT_ERROR, f'{run_dir / "results.json"} is not valid JSON ({e}); re-run the evaluation to rewrite it.'
    if not export_dir.is_dir():
        return EXIT_ERROR, f'{export_dir} does not exist; give the folder of a finished train.py run.'

    ok, reason = push_gate(results, min_delta, max_p_value)
    if not ok and not force:
        return EXIT_NOT_IMPROVED, reason
    try:
        check_push_access(repo_id, token, endpoint, revision=revision, create_pr=create_pr)
        url = push_export(export_dir, repo_id, token=token, endpoint=endpoint, private=private, revision=revision,
                          create_pr=create_pr, retries=retries, backoff=backoff, run_dir=run_dir)
    except (PushAccessError, PushError) as e:
        return EXIT_ERROR, str(e)
    forced = ' (gate overridden with --force)' if not ok else ''
    return EXIT_PUSHED, f'Pushed {export_dir} to {repo_id}{forced}: {url}'


# ----------------------------------------------------------------------------- model card

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


def card_data(results: dict, repo_id: str | None = None):
    """The card's metadata: library, tags, base model, datasets, license and model-index results."""
    from huggingface_hub import EvalResult, ModelCardData

    dataset_id, dataset_name = hub_dataset(results.get('dataset'))
    split = results.get('eval_split')
    model_name = repo_id.split('/')[-1] if repo_id else f"{results.get('student_name') or 'student'}-gkt"

    def result(metric_type: str, name: str, value: Any) -> EvalResult | None:
        value = _num(value)
        if value is None or dataset_id is None:
            return None
        return EvalResult(task_type='image-classification', task_name='Image Classification',
                          dataset_type=dataset_id, dataset_name=dataset_name, dataset_split=split,
                          metric_type=metric_type, metric_name=name, metric_value=round(value, 4))

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
    for t in results.get('teachers') or []:
        name = t.get('name') or short_name(t.get('spec') or '?')
        evals.append(result('positive_flips_delta', f'Positive-flip delta vs {name} (points)', t.get('pos_flips_delta')))
        evals.append(result('negative_flips_delta', f'Negative-flip delta vs {name} (points)', t.get('neg_flips_delta')))
    evals = [e for e in evals if e is not None]

    base_model = student_hub_id(results)
    tags = ['timm', 'image-classification', 'knowledge-transfer', 'general-knowledge-transfer']
    if results.get('method'):
        tags.append(results['method'])
    if results.get('multi_teacher'):
        tags.append(f"multi-teacher-{results['multi_teacher']}")
    license_ = (results.get('student_source') or {}).get('license')
    return ModelCardData(
        library_name='timm',
        pipeline_tag='image-classification',
        tags=tags,
        base_model=base_model,
        base_model_relation='finetune' if base_model else None,
        datasets=[dataset_id] if dataset_id else None,
        license=license_,
        model_name=model_name if evals else None,
        eval_results=evals or None,
    )


def card_context(results: dict, repo_id: str | None = None, plots: Iterable[str] = (),
                 export_dir: Path | None = None) -> dict:
    """Everything the template shows, as display strings (the template only lays it out)."""
    student_name = results.get('student_name') or short_name(results.get('student') or 'student')
    teachers = results.get('teachers') or []
    teacher_names = [t.get('name') or short_name(t.get('spec') or '?') for t in teachers]
    method_title = results.get('method_title') or results.get('method') or 'unknown method'
    _, dataset_name = hub_dataset(results.get('dataset'))
    dataset_prefix = f'{dataset_name} ' if dataset_name else ''
    eval_samples = results.get('eval_samples')
    delta = transfer_delta(results)

    eval_split_text = f"{dataset_prefix}{results.get('eval_split') or 'evaluation'} split"
    if eval_samples:
        eval_split_text += f' ({eval_samples} images)'
    summary = (f'`{student_name}` after General Knowledge Transfer ({method_title}) from '
               f"{', '.join(f'`{n}`' for n in teacher_names) or 'no teacher'}: top-1 on the {eval_split_text} "
               f"{_pct(results.get('top1_before'))}% → {_pct(results.get('top1_after'))}% "
               f"(Δtransf {_signed(delta)} points, McNemar p = {_pvalue(results.get('p_value'))}).")
    if delta is None:
        verdict = 'The run recorded no transfer delta.'
    elif delta > 0:
        verdict = 'The transfer improved the student.'
    else:
        verdict = 'The transfer did not improve the student; this export is kept for the record.'

    result_rows = [
        {'label': 'student top-1', 'before': _pct(results.get('top1_before')), 'after': _pct(results.get('top1_after')),
         'delta': _signed(delta)},
    ]
    teacher_rows = []
    for name, t in zip(teacher_names, teachers):
        result_rows.append({'label': f'ρpos vs {name}', 'before': _pct(t.get('rho_pos')),
                            'after': _pct(t.get('rho_pos_after')), 'delta': _signed(t.get('pos_flips_delta'))})
        result_rows.append({'label': f'ρneg vs {name}', 'before': _pct(t.get('rho_neg')),
                            'after': _pct(t.get('rho_neg_after')), 'delta': _signed(t.get('neg_flips_delta'))})
        teacher_rows.append({
            'name': f'`{t.get("spec") or name}`', 'source': t.get('source') or '–',
            'revision': f'`{t["revision"]}`' if t.get('revision') else '–', 'top1': _pct(t.get('top1')),
            'rho_pos': _pct(t.get('rho_pos')), 'rho_pos_after': _pct(t.get('rho_pos_after')),
            'pos_delta': _signed(t.get('pos_flips_delta')), 'rho_neg': _pct(t.get('rho_neg')),
            'rho_neg_after': _pct(t.get('rho_neg_after')), 'neg_delta': _signed(t.get('neg_flips_delta')),
            'routed': f"{_pct(t.get('routed_share'), 1)}%" if _num(t.get('routed_share')) is not None else '–',
        })

    generations = []
    for i, g in enumerate(_lineage(results, export_dir), start=1):
        g_teachers = g.get('teachers') or []
        generations.append({
            'generation': g.get('generation', i), 'student': g.get('student') or '?',
            'teachers': ', '.join(f'`{t}`' for t in g_teachers) or '–', 'method': g.get('method') or '–',
            'transfer_delta': _signed(g.get('transfer_delta')), 'top1_after': _pct(g.get('top1_after')),
        })

    hp = results.get('hyperparameters') or {}
    hyperparameters = [(k, v) for k, v in hp.items() if v is not None]
    if results.get('dp_mode'):
        hyperparameters.insert(0, ('dp_mode', results['dp_mode']))
    versions = ', '.join(f'{k} {v}' for k, v in (results.get('versions') or {}).items() if v)

    method = results.get('method')
    method_description = ' '.join(x for x in (
        _GKT_INTRO, METHOD_DESCRIPTIONS.get(method, ''),
        MULTI_TEACHER_DESCRIPTIONS.get(results.get('multi_teacher') or '', '')) if x)

    plot_info = {
        PER_CLASS_PLOT: ('Per-class complementary knowledge',
                         "for each teacher, the share of each class's evaluation images the teacher gets right and "
                         'the student gets wrong (positive flips), before and after transfer.'),
        GAIN_LOSS_PLOT: ('Knowledge gain and loss per epoch',
                         'images the student got wrong before and right after (gain) and the reverse (loss), '
                         'in percent of evaluation images, after every epoch.'),
    }
    plot_rows = [{'path': f'{PLOTS_DIR}/{name}', 'title': plot_info[name][0], 'caption': plot_info[name][1]}
                 for name in plots]

    source = results.get('student_source') or {}
    train_split_text = f"{dataset_prefix}{results.get('train_split') or 'train'} split"
    if hp.get('train_images'):
        train_split_text += f" ({hp['train_images']} images)"
    one_image = f'{100.0 / eval_samples:.2g}' if eval_samples else '–'
    return {
        'title': f'{student_name} + knowledge from {", ".join(teacher_names) or "no teacher"} (timm_gkt)',
        'summary': summary,
        'verdict': verdict,
        'repo_id': repo_id,
        'usage_id': repo_id or 'ORG/REPO',
        'label_names': results.get('label_names') or [],
        'eval_split_text': eval_split_text,
        'train_split_text': train_split_text,
        'one_image': one_image,
        'result_rows': result_rows,
        'knowledge_gain': f"{_pct(results.get('knowledge_gain'))}%",
        'knowledge_loss': f"{_pct(results.get('knowledge_loss'))}%",
        'gains': results.get('gains', '–'),
        'losses': results.get('losses', '–'),
        'p_value': _pvalue(results.get('p_value')),
        'teacher_rows': teacher_rows,
        'plots': plot_rows,
        'student': {'spec': source.get('spec') or results.get('student') or student_name,
                    'source': source.get('source') or 'unknown source', 'revision': source.get('revision'),
                    'hub_id': student_hub_id(results), 'license': source.get('license')},
        'method_title': method_title,
        'dp_mode': results.get('dp_mode'),
        'multi_teacher': results.get('multi_teacher'),
        'stage_order': ' → '.join(f'`{s}`' for s in results.get('stage_order') or teacher_names) or '–',
        'seed': results.get('seed', '–'),
        'generations': generations,
        'hyperparameters': hyperparameters,
        'versions': versions,
        'method_description': method_description,
        'bibtex': BIBTEX,
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
    plots_dir = export_dir / PLOTS_DIR
    drawn = []
    for name, draw in ((PER_CLASS_PLOT, plot_per_class_knowledge), (GAIN_LOSS_PLOT, plot_gain_loss)):
        path = plots_dir / name
        if draw(results, path) is not None:
            drawn.append(name)
        elif path.exists():
            path.unlink()
    card = render_card(results, repo_id, drawn, export_dir)
    readme = export_dir / 'README.md'
    card.save(readme)
    return readme


# ----------------------------------------------------------------------------- plots

def _figure(width: float, height: float):
    # a Figure with its own Agg canvas: no pyplot, no global backend switch inside someone else's process
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format='png', metadata={'Software': None})  # no version stamp: same run, same bytes
    return path


def plot_per_class_knowledge(results: dict, path: str | os.PathLike) -> Path | None:
    """Per teacher, the per-class positive-flip rate before vs after transfer; None when no teacher has the data."""
    teachers = [t for t in results.get('teachers') or []
                if t.get('per_class_pos_flips_before') and t.get('per_class_pos_flips_after')
                and len(t['per_class_pos_flips_before']) == len(t['per_class_pos_flips_after'])]
    if not teachers:
        return None
    n_classes = len(teachers[0]['per_class_pos_flips_before'])
    names = list(results.get('label_names') or [])
    if len(names) != n_classes:
        names = [str(i) for i in range(n_classes)]
    fig = _figure(max(6.0, 0.55 * n_classes + 2), 2.8 * len(teachers) + 0.6)
    axes = fig.subplots(len(teachers), 1, squeeze=False)[:, 0]
    x = list(range(n_classes))
    for ax, t in zip(axes, teachers):
        before = [_num(v) or 0.0 for v in t['per_class_pos_flips_before']][:n_classes]
        after = [_num(v) or 0.0 for v in t['per_class_pos_flips_after']][:n_classes]
        ax.bar([i - 0.2 for i in x[:len(before)]], before, width=0.4, label='before transfer', color='#9aa5b1')
        ax.bar([i + 0.2 for i in x[:len(after)]], after, width=0.4, label='after transfer', color='#2f6fb0')
        ax.set_title(f"{t.get('name') or short_name(t.get('spec') or '?')}: "
                     f"ρpos {_pct(t.get('rho_pos'))}% → {_pct(t.get('rho_pos_after'))}%", fontsize=10)
        ax.set_ylabel('positive flips (% of class)')
        ax.set_xticks(x)
        ax.set_xticklabels(names, rotation=30, ha='right', fontsize=8)
        ax.grid(axis='y', alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle('Complementary knowledge per class (teacher right, student wrong)', fontsize=11)
    fig.tight_layout()
    return _save(fig, Path(path))


def plot_gain_loss(results: dict, path: str | os.PathLike) -> Path | None:
    """Knowledge gain and loss (and Δtransf) after every epoch, stages marked; None without epochs."""
    epochs = [e for e in results.get('epochs') or []
              if _num(e.get('knowledge_gain')) is not None and _num(e.get('knowledge_loss')) is not None]
    if not epochs:
        return None
    x = list(range(1, len(epochs) + 1))
    fig = _figure(7.0, 4.0)
    ax = fig.subplots()
    ax.plot(x, [_num(e['knowledge_gain']) for e in epochs], 'o-', color='#2e8b57', label='knowledge gain')
    ax.plot(x, [_num(e['knowledge_loss']) for e in epochs], 's-', color='#c0392b', label='knowledge loss')
    deltas = [_num(e.get('transfer_delta')) for e in epochs]
    if all(d is not None for d in deltas):
        ax.plot(x, deltas, '--', color='#555555', label='Δtransf = gain − loss')
    ax.axhline(0.0, color='black', linewidth=0.6)
    # mark where a new stage (teacher) starts in sequential transfer
    for i in range(1, len(epochs)):
        if epochs[i].get('stage') != epochs[i - 1].get('stage'):
            ax.axvline(i + 0.5, color='#999999', linestyle=':', linewidth=1)
    for i, e in enumerate(epochs):
        if i == 0 or e.get('stage') != epochs[i - 1].get('stage'):
            label = e.get('teacher')
            if label:
                ax.annotate(str(label), (i + 1, 1.0), xycoords=('data', 'axes fraction'), xytext=(2, -12),
                            textcoords='offset points', fontsize=8, color='#555555')
    ax.set_xlabel('epoch (all stages)')
    ax.set_ylabel('% of evaluation images')
    ax.set_xticks(x)
    ax.set_title('Knowledge gain and loss per epoch', fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc='best')
    fig.tight_layout()
    return _save(fig, Path(path))


# ----------------------------------------------------------------------------- CI summary

def step_summary(results: dict, decision: str) -> str:
    """Markdown for a CI job summary: before/after table, teachers, push decision."""
    student = results.get('student_name') or short_name(results.get('student') or 'student')
    teachers = results.get('teachers') or []
    method = results.get('method_title') or results.get('method') or '?'
    lines = [
        f"### timm_gkt: {student} ← {', '.join(t.get('name', '?') for t in teachers) or 'no teacher'} ({method})",
        '',
        f"Evaluated on {results.get('dataset') or '?'} / {results.get('eval_split') or '?'}"
        + (f" ({results['eval_samples']} images)" if results.get('eval_samples') else '') + '.',
        '',
        '| | before | after | Δ |',
        '|---|---:|---:|---:|',
        f"| top-1 (%) | {_pct(results.get('top1_before'))} | {_pct(results.get('top1_after'))} | "
        f"{_signed(transfer_delta(results))} |",
        '',
        f"Knowledge gain {_pct(results.get('knowledge_gain'))}%, loss {_pct(results.get('knowledge_loss'))}%, "
        f"McNemar p = {_pvalue(results.get('p_value'))}.",
    ]
    if teachers:
        lines += ['', '| teacher | top-1 | ρpos before → after | ρneg before → after |', '|---|---:|---|---|']
        for t in teachers:
            lines.append(f"| {t.get('name', '?')} | {_pct(t.get('top1'))} | "
                         f"{_pct(t.get('rho_pos'))} → {_pct(t.get('rho_pos_after'))} | "
                         f"{_pct(t.get('rho_neg'))} → {_pct(t.get('rho_neg_after'))} |")
    lines += ['', f'**Decision:** {decision}', '']
    return '\n'.join(lines)


def write_step_summary(results: dict, decision: str, path: str | os.PathLike | None = None) -> None:
    """Append the summary to ``path`` or to $GITHUB_STEP_SUMMARY; do nothing when neither is set."""
    path = path or os.environ.get('GITHUB_STEP_SUMMARY')
    if not path:
        return
    with open(path, 'a', encoding='utf-8') as f:  # GitHub collects the file; other steps append to it too
        f.write(step_summary(results, decision) + '\n')
