"""Short model names as the paper writes them (``pit_b``, ``volo_d2``, ``resmlp_36``) -> timm architectures.

timm names these architectures with their input resolution (``pit_b_224``). A short name
resolves to ``NAME_224`` when that exists (the paper's resolution, although ``volo_d2_384``
exists too), else to the only ``NAME_<size>``; several sizes without a 224 are listed for the
user to choose. Names timm knows, ``hf-hub:`` and ``local-dir:`` specs pass through.
"""
from __future__ import annotations

import re

from .models import ModelSpecError

PAPER_RESOLUTION = 224


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


def resolve_model_name(spec: str) -> tuple[str, str | None]:
    """``(spec timm can create, log line or None)``; a pretrained tag (``pit_b.in1k``) is kept.

    Unknown names without size variants are returned unchanged, for ``check_model_spec`` to
    report with its close matches.
    """
    import timm
    if spec.startswith(('hf-hub:', 'local-dir:')):
        return spec, None
    arch, dot, tag = spec.partition('.')
    if timm.is_model(arch):
        return spec, None
    variants = size_variants(arch)
    if not variants:
        return spec, None
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
    resolved = chosen + dot + tag
    return resolved, f'model {spec} -> {resolved} (timm names the architecture by its input size{also})'


def resolve_model_names(specs, say=print) -> list[str]:
    """:func:`resolve_model_name` for the student and every teacher, one log line per resolution."""
    out = []
    for spec in specs:
        resolved, line = resolve_model_name(spec)
        if line:
            say(line)
        out.append(resolved)
    return out
