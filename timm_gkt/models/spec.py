"""Model specs as users write them, resolved once into a typed :class:`ModelSpec`; no torch import.

Three sources, each a string ``timm.create_model`` understands:

- a timm name, optionally with a pretrained tag: ``resnet50``, ``resnet50.a1_in1k``; the paper's short
  names (``pit_b``, ``volo_d2``) resolve to the timm architecture they stand for (``pit_b_224``);
- a Hub repository, optionally at a revision: ``hf-hub:ORG/REPO``, ``hf-hub:ORG/REPO@REV``;
- a local folder with config.json and model.safetensors: ``local-dir:PATH``.

This is the only module that knows the prefixes: the CLI resolves every ``--model`` and ``--teachers`` value
here once (:func:`resolve_spec`), and the ModelSpec travels from the config to the loss; files that store a
spec as text (results.json, a lineage) are read back with :func:`parse_spec`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ModelSpecError

HF_HUB = 'hf-hub'
LOCAL_DIR = 'local-dir'
TIMM = 'timm'
PAPER_RESOLUTION = 224  # the paper's models are timm's *_224 variants


@dataclass(frozen=True)
class ModelSpec:
    """One model as the user named it.

    ``text`` is what ``timm.create_model`` is given; ``location`` the timm architecture, the Hub repository id
    or the folder path; ``revision`` the Hub revision (``@REV``) and ``tag`` the timm pretrained tag, when given.
    ``note`` says how a short name was resolved (``model pit_b -> pit_b_224 (...)``), for the run's log.
    """
    text: str
    source: str
    location: str
    revision: str | None = None
    tag: str | None = None
    note: str | None = field(default=None, compare=False)

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

    @property
    def identity(self) -> tuple[str, ...]:
        """What names the same model however it was written: a folder by its resolved path, a Hub repository
        with its revision (main when none is given)."""
        if self.source == LOCAL_DIR:
            return (LOCAL_DIR, str(Path(self.location).expanduser().resolve()))
        if self.source == HF_HUB:
            return (HF_HUB, self.location, self.revision or 'main')
        return (TIMM, self.text)


def parse_spec(spec: str | ModelSpec) -> ModelSpec:
    """Split a spec string into source, location and revision/tag (a ModelSpec passes through); no lookup."""
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


# ----------------------------------------------------------------------------- short names

def _input_size(name: str) -> int | None:
    from timm.models import get_pretrained_cfg
    cfg = get_pretrained_cfg(name)
    return cfg.input_size[-1] if cfg is not None and cfg.input_size else None


def size_variants(arch: str) -> list[str]:
    """timm architectures ``arch_<N>`` whose N is their input size, smallest first.

    The size check keeps out names whose number means something else (``ghostnet_050`` is a
    width, ``convmixer_768_32`` a depth).
    """
    import timm
    pattern = re.compile(re.escape(arch) + r'_(\d+)')
    found = [m for m in timm.list_models(f'{arch}_*') if pattern.fullmatch(m)]
    found = [m for m in found if _input_size(m) == int(pattern.fullmatch(m).group(1))]
    return sorted(found, key=lambda m: int(pattern.fullmatch(m).group(1)))


def resolve_spec(spec: str | ModelSpec) -> ModelSpec:
    """The spec with a paper's short name (``pit_b``) resolved to timm's architecture (``pit_b_224``).

    ``NAME_224`` when it exists (the paper's resolution), else the only ``NAME_<size>``; several sizes
    without a 224 are an error naming them. A pretrained tag (``pit_b.in1k``) is kept; Hub and local specs
    and names timm knows pass through; unknown names without size variants too, for
    :func:`~timm_gkt.models.load.check_model_spec` to report with its close matches.
    """
    parsed = parse_spec(spec)
    if parsed.source != TIMM:
        return parsed
    import timm
    arch = parsed.location
    if timm.is_model(arch):
        return parsed
    variants = size_variants(arch)
    if not variants:
        return parsed
    preferred = f'{arch}_{PAPER_RESOLUTION}'
    if preferred in variants:
        chosen = preferred
    elif len(variants) == 1:
        chosen = variants[0]
    else:
        raise ModelSpecError(f'{arch!r} is not a timm architecture and has several sizes '
                             f'({", ".join(variants)}); name the one you mean')
    others = [v for v in variants if v != chosen]
    also = f'; also available: {", ".join(others)}' if others else ''
    text = chosen + (f'.{parsed.tag}' if parsed.tag else '')
    note = f'model {parsed.text} -> {text} (timm names the architecture by its input size{also})'
    return ModelSpec(text, TIMM, chosen, tag=parsed.tag, note=note)
