"""The transferred student in Hub layout: ``config.json`` (with the lineage) and ``model.safetensors``.

``timm.create_model('local-dir:RUN_DIR/export', pretrained=True)`` loads it with timm alone.
"""
from __future__ import annotations

import copy
from pathlib import Path

from . import __version__
from .models import ResolvedModel


def export_student(model, student: ResolvedModel, export_dir: Path, lineage: list[dict]) -> None:
    from timm.models import save_for_hf
    model = copy.deepcopy(model).eval()
    # the export is a new checkpoint: the source's hub id and tag describe other weights
    cfg = {k: v for k, v in model.pretrained_cfg.items() if k not in ('tag', 'hf_hub_id', 'hf_hub_revision')}
    model.pretrained_cfg = cfg
    model_config = {'timm_gkt': {'version': __version__, 'lineage': lineage}}
    if student.label_names:
        model_config['label_names'] = list(student.label_names)
    save_for_hf(model, export_dir, model_config=model_config, safe_serialization=True)
