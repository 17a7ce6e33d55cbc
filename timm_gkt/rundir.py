"""The run folder: where a run writes, what it resumes from, and the state saved beside each checkpoint.

    OUTPUT/EXPERIMENT/
      args.yaml  summary.csv  results.json
      checkpoints/stage<k>-epoch<e>/   Accelerate state + scheduler/MCL extras + run_state.json (written last)
      stages/stage<k>.safetensors      each finished stage's student
      export/                          Hub layout (see timm_gkt.export)
"""
from __future__ import annotations

import csv
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .config import TransferConfig

SUMMARY_FIELDS = ['stage', 'teacher', 'epoch', 'train_loss', 'top1', 'transfer_delta', 'knowledge_gain',
                  'knowledge_loss', 'p_value', 'routed_share', 'lr', 'img_per_s']


@dataclass
class RunState:
    """What a run has done so far, saved beside each checkpoint so a resume knows where it is."""
    history: list[dict] = field(default_factory=list)
    stage: int = 0
    epoch: int = 0  # epochs finished in the current stage

    def to_dict(self) -> dict:
        return {'history': self.history, 'stage': self.stage, 'epoch': self.epoch}

    @classmethod
    def load(cls, data: dict) -> 'RunState':
        return cls(history=data['history'], stage=data['stage'], epoch=data['epoch'])

    @classmethod
    def read(cls, checkpoint: Path | None) -> 'RunState':
        if checkpoint is None:
            return cls()
        return cls.load(json.loads((checkpoint / 'run_state.json').read_text()))


def latest_checkpoint(run_dir: Path) -> Path | None:
    ckpts = sorted((run_dir / 'checkpoints').glob('stage*-epoch*'), key=lambda p: p.stat().st_mtime)
    complete = [c for c in ckpts if (c / 'run_state.json').is_file()]
    return complete[-1] if complete else None


def resolve_run_dir(config: TransferConfig) -> tuple[Path, Path | None]:
    """The run folder and the checkpoint to resume from (if any)."""
    if config.resume and config.resume != 'auto':
        ckpt = Path(config.resume)
        return ckpt.parent.parent, ckpt
    name = config.experiment or '-'.join([time.strftime('%Y%m%d-%H%M%S'), config.model.name.replace('/', '_'),
                                          config.transfer_method])
    run_dir = Path(config.output) / name
    if config.resume == 'auto' and not (run_dir / 'results.json').is_file():
        # a finished run is not resumed: the job starts afresh
        return run_dir, latest_checkpoint(run_dir)
    return run_dir, None


def set_aside_previous_run(run_dir: Path) -> Path | None:
    """A new run in a used folder: keep the old one, renamed with its time, rather than mixing or deleting."""
    if not run_dir.is_dir() or not any(run_dir.iterdir()):
        return None
    stamp = time.strftime('%Y%m%d-%H%M%S', time.localtime(run_dir.stat().st_mtime))
    target = run_dir.with_name(f'{run_dir.name}-{stamp}')
    n = 1
    while target.exists():
        target = run_dir.with_name(f'{run_dir.name}-{stamp}-{n}')
        n += 1
    run_dir.rename(target)
    return target


def save_checkpoint(accelerator, run_dir: Path, stage: int, epoch: int, scheduler, task, state: RunState,
                    keep: int) -> None:
    ckpt = run_dir / 'checkpoints' / f'stage{stage}-epoch{epoch}'
    accelerator.save_state(str(ckpt))
    if accelerator.is_main_process:
        extra = {'scheduler': scheduler.state_dict()}
        if task.has_ema():
            extra['ema'] = task.get_trainable_module(ema=True).state_dict()
        torch.save(extra, ckpt / 'timm_gkt_extra.pt')
        # written last: a folder without run_state.json is an interrupted save and is never resumed from
        (ckpt / 'run_state.json').write_text(json.dumps(state.to_dict(), indent=1))
        ckpts = sorted((run_dir / 'checkpoints').glob('stage*-epoch*'), key=lambda p: p.stat().st_mtime)
        for old in ckpts[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def load_checkpoint(accelerator, checkpoint: Path, scheduler, task) -> None:
    """Restore what save_checkpoint wrote (the prepared objects, the scheduler, MCL's slow weights)."""
    accelerator.load_state(str(checkpoint))
    extra = torch.load(checkpoint / 'timm_gkt_extra.pt', map_location='cpu', weights_only=False)
    scheduler.load_state_dict(extra['scheduler'])
    if task.has_ema():
        task.get_trainable_module(ema=True).load_state_dict(extra['ema'])


def save_stage_result(run_dir: Path, index: int, state_dict: dict) -> None:
    from safetensors.torch import save_file
    path = run_dir / 'stages' / f'stage{index}.safetensors'
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state_dict.items()}, str(path))


def load_stage_result(run_dir: Path, index: int) -> dict:
    from safetensors.torch import load_file
    return load_file(str(run_dir / 'stages' / f'stage{index}.safetensors'))


def write_summary(path: Path, history: list[dict]) -> None:
    # rewritten whole from the run state, so a resumed run has no rows from after its checkpoint
    with path.open('w', newline='') as f:
        w = csv.DictWriter(f, fieldnames=SUMMARY_FIELDS, extrasaction='ignore')
        w.writeheader()
        w.writerows(history)
