"""Publishing a run: the push gate, the write-access check before training, the push with retries.

:func:`publish` is what both ``train.py --push-to-hub`` and ``python -m timm_gkt.push`` do with
a finished run folder: gate on Δtransf (and optionally McNemar's p), check access, push
``export/`` in one commit. Where to push and the gate's thresholds travel together as a
:class:`PushTarget`.
"""
from __future__ import annotations

import json
import logging
import os
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from ..report.results import num, pct, pvalue_text, signed, transfer_delta
from ..report.stats import SIGNIFICANCE
from .access import (
    LOGIN_FIX, PushAccessError, check_push_access, check_push_options, describe_error, http_status,
    is_network_error, resolve_token,
)

_logger = logging.getLogger(__name__)

EXIT_PUSHED = 0
EXIT_ERROR = 1
EXIT_NOT_IMPROVED = 3  # 2 is argparse's usage error
EXIT_NOT_BETTER_THAN_CONTROL = 4  # better than the start, but not significantly better than more training

# Exactly what a push uploads; anything else in the export folder (a stray .env, a token file) stays local.
PUSHED_FILES = ('config.json', 'model.safetensors', 'README.md', 'results.json', 'args.yaml', 'plots/*.png')
REQUIRED_FILES = ('config.json', 'model.safetensors')
# HTTP answers worth another try: rate limits and server-side failures; 4xx means the request itself is wrong.
TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})

# indirection so tests can stand in for the back-off waits
_sleep = time.sleep


class PushError(RuntimeError):
    """Pushing an export failed; the message names the command that retries it."""


@dataclass(frozen=True)
class PushTarget:
    """Where a student goes and what it must pass first: Δtransf > ``min_delta`` (points) and, when given,
    McNemar p <= ``max_p_value``; with ``beat_control``, significantly better than the CE control too."""
    repo_id: str
    private: bool = False
    revision: str | None = None
    create_pr: bool = False
    min_delta: float = 0.0
    max_p_value: float | None = None
    endpoint: str | None = None
    beat_control: bool = False

    def check_access(self, token: str | None = None) -> None:
        check_push_access(self.repo_id, token, self.endpoint, revision=self.revision, create_pr=self.create_pr)

    def retry_command(self, run_dir: str | os.PathLike) -> str:
        return retry_command(run_dir, self.repo_id, private=self.private, revision=self.revision,
                             create_pr=self.create_pr, endpoint=self.endpoint)


@dataclass(frozen=True)
class Outcome:
    """What publishing did: an exit code (0 pushed, 1 error, 3 or 4 refused by the gate), one sentence, the commit
    URL."""
    code: int
    message: str
    url: str | None = None


def retry_command(run_dir: str | os.PathLike, repo_id: str, *, private: bool = False, revision: str | None = None,
                  create_pr: bool = False, endpoint: str | None = None) -> str:
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


def push_gate(results: dict, min_delta: float = 0.0, max_p_value: float | None = None) -> tuple[bool, str]:
    """May this run be pushed? Δtransf on the eval split must be strictly greater than ``min_delta`` and,
    when ``max_p_value`` is given, McNemar's p-value at most that. Returns (decision, one-sentence reason)."""
    split = results.get('eval_split') or 'eval'
    delta = transfer_delta(results)
    if delta is None:
        return False, 'Not pushed: the results record no transfer delta (top-1 before and after), so there is nothing to gate on.'
    accuracies = f"{pct(results.get('top1_before'))}% -> {pct(results.get('top1_after'))}%"
    if not delta > min_delta:
        return False, (f'Not pushed: Δtransf = {delta:+.2f} points on the {split} split ({accuracies}) '
                       f'is not greater than the minimum {min_delta:+.2f}.')
    p = num(results.get('p_value'))
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


def control_gate(results: dict) -> tuple[bool, str]:
    """Does the student beat more training? Its paired McNemar against the CE control (``--control ce``) must show
    a gain at p < 0.05. Returns (decision, one-sentence reason)."""
    versus = results.get('vs_control') or {}
    delta, p = num(versus.get('delta')), num(versus.get('p_value'))
    if delta is None:
        return False, ('Not pushed: the gate asks for a student better than more training, and this run trained no '
                       'CE control to compare with; rerun with --control ce (one more training run).')
    against = (f'{delta:+.2f} points against the CE control on the same images (paired McNemar p = '
               f'{pvalue_text(p)})')
    if not (delta > 0 and p is not None and p < SIGNIFICANCE):
        return False, f'Not pushed: the student is no better than more training: {against}.'
    return True, f'The student is better than more training: {against}.'


# ----------------------------------------------------------------------------- push

def _is_transient(error: BaseException) -> bool:
    status = http_status(error)
    if status is not None:
        return status in TRANSIENT_STATUS or status >= 500
    return is_network_error(error)


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
            f"Δtransf {signed(transfer_delta(results))} (timm_gkt)")


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
    On final failure the export is left as it was and ``PushError`` names the command that retries.
    """
    from .card import write_card
    export_dir = Path(export_dir)
    target = PushTarget(repo_id, private=private, revision=revision, create_pr=create_pr, endpoint=endpoint)
    retry = target.retry_command(run_dir if run_dir is not None else export_dir.parent)
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
    _check_no_secret(_files_to_push(export_dir), token)
    return _upload(export_dir, target, token, commit_message or _default_commit_message(export_dir), retries,
                   backoff, retry)


def _upload(export_dir: Path, target: PushTarget, token: str, commit_message: str, retries: int, backoff: float,
            retry: str) -> str:
    """Create the repo (and branch) and upload in one commit; transient failures (5xx, 429, connection errors)
    are retried ``retries`` times after ``backoff * 2**k`` seconds. Every step is idempotent, so a retry after
    a commit whose answer was lost uploads nothing new."""
    from huggingface_hub import HfApi
    api = HfApi(endpoint=target.endpoint, token=token)
    repo_id, revision = target.repo_id, target.revision
    attempts = max(1, retries + 1)
    for attempt in range(1, attempts + 1):
        try:
            api.create_repo(repo_id, private=target.private, exist_ok=True)
            if revision and revision != 'main' and not revision.startswith('refs/pr/'):
                api.create_branch(repo_id, branch=revision, exist_ok=True)
            info = api.upload_folder(
                repo_id=repo_id, folder_path=export_dir, allow_patterns=list(PUSHED_FILES),
                revision=revision, create_pr=target.create_pr, commit_message=commit_message,
            )
        except Exception as e:  # noqa: BLE001 - classified below, re-raised as PushError
            if _is_transient(e) and attempt < attempts:
                delay = backoff * 2 ** (attempt - 1)
                _logger.warning('Push of %s to %s failed (%s); retry %d/%d in %.1fs.',
                                export_dir, repo_id, describe_error(e), attempt, attempts - 1, delay)
                _sleep(delay)
                continue
            tried = f' after {attempt} attempts' if attempt > 1 else ''
            fix = f'{LOGIN_FIX} to {repo_id}, then ' if http_status(e) in (401, 403) else ''
            raise PushError(f'Pushing {export_dir} to {repo_id} failed{tried} ({describe_error(e)}); the local '
                            f'export is intact, {fix}retry with: {retry}') from e
        if info.pr_url:
            _logger.info('Opened pull request %s', info.pr_url)
        return info.commit_url
    raise AssertionError('unreachable')


# ----------------------------------------------------------------------------- the one entry point

def publish(run_dir: str | os.PathLike, target: PushTarget, results: dict | None = None, *, force: bool = False,
            check_access: bool = True, token: str | None = None, retries: int = 3,
            backoff: float = 1.0) -> Outcome:
    """Gate, (check access,) push a finished run folder's ``export/``.

    Refusals say which requirement failed: :data:`EXIT_NOT_IMPROVED` (3) the student is not better than where it
    started (Δtransf, p), :data:`EXIT_NOT_BETTER_THAN_CONTROL` (4) it is, but not better than more training.

    ``results`` defaults to RUN_DIR/results.json. ``check_access=False`` when the caller
    already checked before training (train.py does, so a run that cannot push fails in seconds).
    """
    run_dir = Path(run_dir)
    export_dir = run_dir / 'export'
    if results is None:
        try:
            results = json.loads((run_dir / 'results.json').read_text())
        except FileNotFoundError:
            return Outcome(EXIT_ERROR, f'{run_dir / "results.json"} does not exist; give the folder of a finished '
                                       f'train.py run.')
        except ValueError as e:
            return Outcome(EXIT_ERROR, f'{run_dir / "results.json"} is not valid JSON ({e}); re-run the evaluation '
                                       f'to rewrite it.')
    if not export_dir.is_dir():
        return Outcome(EXIT_ERROR, f'{export_dir} does not exist; give the folder of a finished train.py run.')
    ok, reason = push_gate(results, target.min_delta, target.max_p_value)
    if not ok and not force:
        return Outcome(EXIT_NOT_IMPROVED, reason)
    if target.beat_control:
        beats, reason = control_gate(results)
        ok = ok and beats
        if not beats and not force:
            return Outcome(EXIT_NOT_BETTER_THAN_CONTROL, reason)
    try:
        if check_access:
            target.check_access(token)
        url = push_export(export_dir, target.repo_id, token=token, endpoint=target.endpoint, private=target.private,
                          revision=target.revision, create_pr=target.create_pr, retries=retries, backoff=backoff,
                          run_dir=run_dir)
    except (PushAccessError, PushError) as e:
        return Outcome(EXIT_ERROR, str(e))
    forced = ' (gate overridden with --force)' if not ok else ''
    return Outcome(EXIT_PUSHED, f'Pushed {export_dir} to {target.repo_id}{forced}: {url}', url)
