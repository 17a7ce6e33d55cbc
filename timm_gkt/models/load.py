"""Resolve students and teachers, describe their preprocessing, check label spaces.

Every model is created through ``timm.create_model`` with its OWN class count and
channels (never timm's distillation helper, which forces the student's ``num_classes``
and ``in_chans`` on the teacher and so silently re-initialises its head and stem).
"""
from __future__ import annotations

import difflib
import logging
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .spec import HF_HUB, LOCAL_DIR, ModelSpec, parse_spec
from ..errors import ModelSpecError, LabelSpaceError

_logger = logging.getLogger(__name__)




SUPPORTED_CHANNELS = (1, 3)  # what images can be given and the input adaptor maps between (grey <-> RGB)


def image_mode_for_channels(in_chans: int) -> str:
    """The PIL mode of images for a model with ``in_chans`` input channels."""
    if in_chans == 1:
        return 'L'
    if in_chans == 3:
        return 'RGB'
    raise ValueError(f'Models with {in_chans} input channels are not supported; use 1 or 3.')


@dataclass(frozen=True)
class Preprocessing:
    """What a model expects as input, from its pretrained config."""
    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = 'bilinear'
    crop_pct: float = 1.0
    crop_mode: str = 'center'

    @property
    def in_chans(self) -> int:
        return self.input_size[0]

    @classmethod
    def from_model(cls, model: nn.Module) -> 'Preprocessing':
        from timm.data import resolve_model_data_config
        cfg = resolve_model_data_config(model)
        chans = cfg['input_size'][0]
        mean, std = tuple(cfg['mean']), tuple(cfg['std'])
        # timm configs sometimes keep a 3-value mean for 1-channel models; one value per channel is what counts
        if len(mean) != chans:
            mean = tuple(mean[:1]) * chans if chans == 1 or len(mean) == 1 else mean
        if len(std) != chans:
            std = tuple(std[:1]) * chans if chans == 1 or len(std) == 1 else std
        return cls(
            input_size=tuple(cfg['input_size']),
            mean=mean,
            std=std,
            interpolation=cfg.get('interpolation', 'bilinear'),
            crop_pct=float(cfg.get('crop_pct', 1.0)),
            crop_mode=cfg.get('crop_mode', 'center') or 'center',
        )

    def eval_transform(self):
        from timm.data import create_transform
        return create_transform(
            input_size=self.input_size,
            is_training=False,
            interpolation=self.interpolation,
            mean=self.mean,
            std=self.std,
            crop_pct=self.crop_pct,
            crop_mode=self.crop_mode,
        )

    @property
    def image_mode(self) -> str:
        return image_mode_for_channels(self.in_chans)


@dataclass
class ResolvedModel:
    """A created model with what the rest of timm_gkt needs to know about it."""
    spec: ModelSpec
    model: nn.Module
    preprocessing: Preprocessing
    label_names: tuple[str, ...] | None
    source: str
    revision: str | None = None

    @property
    def num_classes(self) -> int:
        return self.model.num_classes

    @property
    def name(self) -> str:
        return self.spec.name


def check_model_spec(spec: str | ModelSpec) -> None:
    """Raise ModelSpecError (one sentence naming the fix) for a spec that cannot resolve."""
    import timm
    parsed = parse_spec(spec)
    spec = parsed.text
    if parsed.source == LOCAL_DIR:
        path = parsed.path
        if not path.is_dir():
            raise ModelSpecError(f'Model folder {path} does not exist; give a folder that holds config.json and model.safetensors.')
        if not (path / 'config.json').is_file():
            raise ModelSpecError(f'Model folder {path} has no config.json; export it with timm.models.save_for_hf or timm_gkt.')
        return
    if parsed.source == HF_HUB:
        if not parsed.location.strip('/'):
            raise ModelSpecError(f'{spec!r} names no repository; use hf-hub:ORG/REPO.')
        return
    name = parsed.location  # without a tag such as .a1_in1k
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
        hint = f' Did you mean {", ".join(close)}?' if close else ''
        local_hint = f" For a folder use 'local-dir:{spec}'." if Path(spec).is_dir() else ''
        raise ModelSpecError(f'Unknown model {spec!r}: not a timm architecture.{hint}{local_hint}')


def model_label_names(model: nn.Module) -> tuple[str, ...] | None:
    cfg = getattr(model, 'pretrained_cfg', None) or {}
    names = cfg.get('label_names')
    if not names:
        return None
    if isinstance(names, dict):  # id -> name with possible gaps
        names = [names.get(str(i), names.get(i)) for i in range(len(names))]
    return tuple(str(n) for n in names)


def model_revision(model: nn.Module) -> str | None:
    cfg = getattr(model, 'pretrained_cfg', None) or {}
    # not 'tag': an architecture's default tag names weights these may not be
    return cfg.get('hf_hub_revision') or cfg.get('revision') or None


def load_model(spec: str | ModelSpec, pretrained: bool = True, checkpoint: str | None = None,
               **kwargs) -> ResolvedModel:
    """Create a model from a timm name, ``hf-hub:ORG/REPO`` or ``local-dir:PATH`` with its own head."""
    import timm
    check_model_spec(spec)
    spec = parse_spec(spec)
    model = timm.create_model(spec.text, pretrained=pretrained, **kwargs)
    if checkpoint:
        from timm.models import load_checkpoint
        load_checkpoint(model, checkpoint)
    model.eval()
    return ResolvedModel(
        spec=spec,
        model=model,
        preprocessing=Preprocessing.from_model(model),
        label_names=model_label_names(model),
        source=spec.source,
        revision=model_revision(model),
    )


# Characters that name the same class in different places: folder names cannot hold '/',
# Python identifiers turn '-' and ' ' into '_', HF datasets keep spaces.
_SEPARATORS = ('_', '/', '-')


def normalize_label_name(name: str) -> str:
    """Case-folded name with ``_``, ``/``, ``-`` and runs of white space reduced to one space.

    Other punctuation is kept, so ``'tench, Tinca tinca'`` only matches itself up to case.
    """
    text = unicodedata.normalize('NFKC', str(name)).casefold()
    for sep in _SEPARATORS:
        text = text.replace(sep, ' ')
    return ' '.join(text.split())


def _quoted(names: Sequence[str]) -> str:
    return ', '.join(map(repr, list(names)[:3])) + (', ...' if len(names) > 3 else '')


def check_usable(resolved, role: str = 'model', weights_loaded: bool = True) -> None:
    """Channels that can be mapped, a classifier head and (when its weights were loaded) finite weights;
    ModelSpecError otherwise. ``resolved``: a :class:`ResolvedModel` or a teacher."""
    name = f'{role} {resolved.name}'
    chans = resolved.preprocessing.in_chans
    if chans not in SUPPORTED_CHANNELS:
        raise ModelSpecError(f'{name} reads {chans}-channel images, and images can only be given 1 (grey) or 3 '
                             f'(RGB) channels; use a model made for grey or RGB images')
    if not resolved.num_classes:
        raise ModelSpecError(f'{name} has no classifier head (num_classes=0): its outputs are pooled features, not '
                             f'class logits; use the model with its classification head')
    if weights_loaded:
        tensors = [*resolved.model.parameters(), *resolved.model.buffers()]
        bad = sum(int((~torch.isfinite(t)).sum()) for t in tensors if t.is_floating_point())
        if bad:
            raise ModelSpecError(f'{name} has {bad} non-finite values (NaN or inf) in its weights, so every '
                                 f'output of it is meaningless; load it from an intact checkpoint')


def label_permutation(
        student_names: Sequence[str] | None,
        teacher_names: Sequence[str] | None,
        student_classes: int,
        teacher_classes: int,
        teacher: str = 'teacher',
        trust_order: bool = False,
) -> torch.Tensor | None:
    """Index that reorders teacher logits into the student's class order, or None when already aligned.

    Names are matched exactly, else after :func:`normalize_label_name` (a student named by its folders,
    ``T-shirt_top``, and a teacher's ``T-shirt/top``). Different class counts or name sets are errors, and so is
    a side without names unless ``trust_order``: a transfer between label spaces that cannot be checked, as for
    a student, would train on nonsense targets.
    """
    if student_classes != teacher_classes:
        raise LabelSpaceError(
            f'{teacher} predicts {teacher_classes} classes but the student predicts {student_classes}; '
            f'use a teacher trained on the same label space (or fine-tune its head first).'
        )
    if not student_names or not teacher_names:
        if trust_order:
            return None
        unnamed = teacher if not teacher_names else 'the student (and the dataset)'
        raise LabelSpaceError(f'{unnamed} has no label names, so the class order of {teacher} cannot be checked '
                              f'against the student\'s; export the model with label_names in config.json, or pass '
                              f'--trust-label-order to take its class i as the student\'s class i')
    if list(student_names) == list(teacher_names):
        return None
    index = _match_names(student_names, teacher_names)
    if index is None:
        key = normalize_label_name
        own = [n for n in teacher_names if key(n) not in {key(m) for m in student_names}]
        lacking = [n for n in student_names if key(n) not in {key(m) for m in teacher_names}]
        raise LabelSpaceError(
            f'{teacher} has other label names than the student ({_quoted(own) or "the same names, some twice"}'
            + (f', where the student has {_quoted(lacking)}' if lacking else '')
            + '); use a teacher trained on the same classes.')
    return None if index == list(range(student_classes)) else torch.tensor(index, dtype=torch.long)


def _match_names(student_names: Sequence[str], teacher_names: Sequence[str]) -> list[int] | None:
    """The teacher's index of each student class, by name (exactly, else normalised); None when the sets differ."""
    for key in (str, normalize_label_name):
        index = {key(name): i for i, name in enumerate(teacher_names)}
        if len(index) != len(teacher_names) or len({key(n) for n in student_names}) != len(student_names):
            continue
        found = [index.get(key(n)) for n in student_names]
        if None not in found:
            return found
    return None


_INTERP = {'bilinear': 'bilinear', 'bicubic': 'bicubic', 'nearest': 'nearest', 'area': 'area'}
# ITU-R 601-2 luma, the weights PIL uses for convert('L')
_LUMA = (0.299, 0.587, 0.114)


class InputAdaptor(nn.Module):
    """Turn a batch prepared for one model into what another model was trained on.

    Undo the source normalisation, resize (antialiased), map channels, apply the
    target normalisation. An adaptor between equal preprocessing is the identity.
    """

    def __init__(self, source: Preprocessing, target: Preprocessing):
        super().__init__()
        self.source, self.target = source, target
        self.identity = (
            source.input_size == target.input_size and source.mean == target.mean and source.std == target.std
        )
        self.register_buffer('src_mean', torch.tensor(source.mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer('src_std', torch.tensor(source.std).view(1, -1, 1, 1), persistent=False)
        self.register_buffer('dst_mean', torch.tensor(target.mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer('dst_std', torch.tensor(target.std).view(1, -1, 1, 1), persistent=False)
        self.register_buffer('luma', torch.tensor(_LUMA).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.identity:
            return x
        pixels = x * self.src_std.to(x.dtype) + self.src_mean.to(x.dtype)
        size = tuple(self.target.input_size[1:])
        if tuple(pixels.shape[-2:]) != size:
            mode = _INTERP.get(self.target.interpolation, 'bilinear')
            antialias = mode in ('bilinear', 'bicubic')
            pixels = F.interpolate(pixels, size=size, mode=mode, antialias=antialias,
                                   **({'align_corners': False} if antialias else {}))
        src_c, dst_c = pixels.shape[1], self.target.in_chans
        if src_c != dst_c:
            if src_c == 1:
                pixels = pixels.expand(-1, dst_c, -1, -1)
            elif src_c == 3 and dst_c == 1:
                pixels = (pixels * self.luma.to(pixels.dtype)).sum(1, keepdim=True)
            else:
                raise ValueError(f'Cannot map {src_c} input channels to {dst_c}.')
        return (pixels - self.dst_mean.to(x.dtype)) / self.dst_std.to(x.dtype)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def read_model_config(spec: str | ModelSpec) -> dict | None:
    """The raw config.json behind a ``local-dir:`` or ``hf-hub:`` spec (None for plain timm names).

    timm keeps only what it needs from config.json; timm_gkt's own entries (the transfer
    lineage) live beside them and are read here. For hf-hub the file is already in the
    cache from ``create_model``, so this costs no download.
    """
    import json
    spec = parse_spec(spec)
    if spec.source == LOCAL_DIR:
        path = spec.path / 'config.json'
        return json.loads(path.read_text()) if path.is_file() else None
    if spec.source == HF_HUB:
        from huggingface_hub import hf_hub_download
        try:
            return json.loads(Path(hf_hub_download(spec.hub_id, 'config.json', revision=spec.revision)).read_text())
        except Exception:  # a repo without config.json has no lineage; timm already loaded the model
            return None
    return None
