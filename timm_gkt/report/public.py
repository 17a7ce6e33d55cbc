"""What a pushed repository may say about where models and data came from.

A Hub model is named by repo id (and revision); a timm name as it is; anything local (a
``local-dir:`` model, a data folder, a class map, a checkpoint) by its folder or file name
only, never by an absolute path, which would publish a user's home folder layout and means
nothing to a reader. The card's ``datasets:`` metadata must be a Hub dataset id, so it is
set only when the data came from the Hub.
"""
from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

from ..models.spec import HF_HUB, LOCAL_DIR, parse_spec

# args.yaml keys whose values are local paths (models are handled by public_model_ref)
PATH_KEYS = frozenset({'data_dir', 'data', 'output', 'resume', 'initial_checkpoint', 'class_map', 'config'})
MODEL_KEYS = frozenset({'model', 'teachers', 'transfer_teacher'})
_HUB_ID = re.compile(r'^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$')


def public_path(path: str | Path | None) -> str | None:
    """A local path as its last component (``/home/a/data/fmnist`` -> ``fmnist``); '' and None stay."""
    if path is None or str(path) in ('', '.'):
        return path if path is None else str(path)
    text = str(path).rstrip('/\\')
    name = Path(text).name
    return name or text


def public_model_ref(spec: str, revision: str | None = None) -> str:
    """``hf-hub:ORG/REPO[@rev]`` (with ``revision`` appended when known), ``local-dir:NAME``, or the timm name."""
    parsed = parse_spec(spec)
    if parsed.source == LOCAL_DIR:
        return f'{LOCAL_DIR}:' + (public_path(parsed.location) or '')
    if parsed.source == HF_HUB:
        rev = parsed.revision or revision
        return f'{HF_HUB}:{parsed.location}' + (f'@{rev}' if rev else '')
    return parsed.text


def hub_dataset_id(dataset: str | None, cwd: str | Path | None = None) -> str | None:
    """The Hub dataset id behind ``hfds/ID`` or ``hfids/ID``; None for local folders, torchvision and others.

    ``hfds/`` also reads local folders: a name that exists on disk (relative to ``cwd``), is
    absolute, or starts with ``.`` or ``~`` is local.
    """
    if not dataset:
        return None
    prefix, _, rest = dataset.partition('/')
    if prefix.lower() not in ('hfds', 'hfids') or not rest:
        return None
    if rest.startswith(('/', '.', '~')) or Path(cwd or '.', rest).exists() or not _HUB_ID.match(rest):
        return None
    return rest


def public_dataset_ref(dataset: str | None, cwd: str | Path | None = None) -> str | None:
    """The dataset spec as it may be published: Hub ids and timm names kept, local ``hfds/`` paths by folder name."""
    if not dataset:
        return dataset
    prefix, sep, rest = dataset.partition('/')
    if prefix.lower() in ('hfds', 'hfids') and sep and hub_dataset_id(dataset, cwd) is None:
        return f'{prefix}/{public_path(rest)}'
    return dataset


def public_args(args: Mapping[str, Any], cwd: str | Path | None = None) -> dict[str, Any]:
    """args.yaml as it may be pushed: paths reduced to names, model specs through :func:`public_model_ref`."""
    out = dict(args)
    for key, value in args.items():
        if key in PATH_KEYS and isinstance(value, (str, Path)):
            out[key] = public_path(value)
        elif key in MODEL_KEYS and isinstance(value, str):
            out[key] = ','.join(public_model_ref(s.strip()) for s in value.split(',')) if value else value
        elif key in MODEL_KEYS and isinstance(value, (list, tuple)):
            out[key] = [public_model_ref(str(s)) for s in value]
        elif key == 'dataset' and isinstance(value, str):
            out[key] = public_dataset_ref(value, cwd)
    return out


def public_results(results: Mapping[str, Any]) -> dict[str, Any]:
    """results.json as it may be pushed: model specs by :func:`public_model_ref` (Hub models with their revision
    where known), the dataset by :func:`public_dataset_ref`; everything else as it is."""
    out = copy.deepcopy(dict(results))
    source = out.get('student_source') or {}
    revisions = {t.get('spec'): t.get('revision') for t in out.get('teachers') or []}
    revisions[source.get('spec')] = source.get('revision')

    def ref(spec):
        return public_model_ref(spec, revisions.get(spec)) if isinstance(spec, str) and spec else spec

    out['student'] = ref(out.get('student'))
    if source:
        source['spec'] = ref(source.get('spec'))
    for t in out.get('teachers') or []:
        t['spec'] = ref(t.get('spec'))
    for row in out.get('epochs') or []:  # the per-epoch routing shares are keyed by teacher spec
        if isinstance(row.get('routed'), dict):
            row['routed'] = {ref(spec): share for spec, share in row['routed'].items()}
    for generation in out.get('lineage') or []:
        generation['student'] = ref(generation.get('student'))
        generation['teachers'] = [ref(t) for t in generation.get('teachers') or []]
    selection = out.get('teacher_selection')
    if selection:  # --teachers auto: the pool and every candidate by spec
        for key in ('pool', 'chosen', 'order'):
            selection[key] = [ref(spec) for spec in selection.get(key) or []]
        for entry in (selection.get('candidates') or []) + (selection.get('stages') or []):
            entry['spec'] = ref(entry.get('spec'))
    if out.get('dataset'):
        out['dataset'] = public_dataset_ref(out['dataset'])
    return out


def local_paths_in(folder: str | Path, forbidden: Iterable[str | Path]) -> list[tuple[str, str]]:
    """``(file, path)`` for every text file under ``folder`` that mentions one of the ``forbidden`` paths.

    Run before a push with the absolute paths of this run (data folder, model folders, output
    folder, home): an empty list means nothing local leaks. Binary files are skipped.
    """
    needles = sorted({str(Path(p)) for p in forbidden if p and str(p) not in ('', '.', '/')}, key=len, reverse=True)
    found = []
    for file in sorted(Path(folder).rglob('*')):
        if not file.is_file() or file.suffix in ('.safetensors', '.png', '.bin', '.pt'):
            continue
        try:
            text = file.read_text(encoding='utf-8')
        except (UnicodeDecodeError, OSError):
            continue
        for needle in needles:
            if needle in text:
                found.append((str(file.relative_to(folder)), needle))
                break
    return found
