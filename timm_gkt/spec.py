"""Model specs as users write them (timm name, ``hf-hub:ORG/REPO``, ``local-dir:PATH``); no torch import."""
from __future__ import annotations

from pathlib import Path


def short_name(spec: str) -> str:
    """A readable name for tables: the folder or repo name, or the timm name."""
    if spec.startswith('local-dir:'):
        return Path(spec[len('local-dir:'):]).name or spec
    if spec.startswith('hf-hub:'):
        return spec[len('hf-hub:'):].split('@')[0]
    return spec


def source_of(spec: str) -> str:
    if spec.startswith('local-dir:'):
        return 'local-dir'
    if spec.startswith('hf-hub:'):
        return 'hf-hub'
    return 'timm'
