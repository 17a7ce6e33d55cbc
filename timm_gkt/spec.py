"""Model specs as users write them, parsed once into a typed :class:`ModelSpec`; no torch import.

Three sources, each a string ``timm.create_model`` understands:

- a timm name, optionally with a pretrained tag: ``resnet50``, ``resnet50.a1_in1k``;
- a Hub repository, optionally at a revision: ``hf-hub:ORG/REPO``, ``hf-hub:ORG/REPO@REV``;
- a local folder with config.json and model.safetensors: ``local-dir:PATH``.

This is the only module that knows the prefixes; everything else asks a ModelSpec.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

HF_HUB = 'hf-hub'
LOCAL_DIR = 'local-dir'
TIMM = 'timm'
_PREFIXES = (HF_HUB, LOCAL_DIR)


@dataclass(frozen=True)
class ModelSpec:
    """One model as the user named it.

    ``location`` is the timm architecture, the Hub repository id or the folder path;
    ``revision`` the Hub revision (``@REV``) and ``tag`` the timm pretrained tag, when given.
    """
    text: str
    source: str
    location: str
    revision: str | None = None
    tag: str | None = None

    def __str__(self) -> str:
        return self.text

    @property
    def name(self) -> str:
        """A readable name for tables: the folder or repo name, or the timm name."""
        if self.source == LOCAL_DIR:
            return Path(self.location).name or self.text
        return self.location if self.source == HF_HUB else self.text

    @property
    def hub_id(self) -> str | None:
        return self.location if self.source == HF_HUB else None

    @property
    def path(self) -> Path | None:
        return Path(self.location) if self.source == LOCAL_DIR else None


def parse_spec(spec: str | ModelSpec) -> ModelSpec:
    """Split a spec string into source, location and revision/tag (a ModelSpec passes through)."""
    if isinstance(spec, ModelSpec):
        return spec
    prefix, sep, rest = spec.partition(':')
    if sep and prefix == LOCAL_DIR:
        return ModelSpec(spec, LOCAL_DIR, rest)
    if sep and prefix == HF_HUB:
        repo, _, revision = rest.partition('@')
        return ModelSpec(spec, HF_HUB, repo, revision=revision or None)
    architecture, _, tag = spec.partition('.')
    return ModelSpec(spec, TIMM, architecture, tag=tag or None)


def short_name(spec: str | ModelSpec) -> str:
    """A readable name for tables: the folder or repo name, or the timm name."""
    return parse_spec(spec).name


def source_of(spec: str | ModelSpec) -> str:
    return parse_spec(spec).source
