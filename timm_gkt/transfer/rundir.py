"""The run folder: where a run writes, what it resumes from, and the state saved beside each checkpoint.

    OUTPUT/EXPERIMENT/
      args.yaml  summary.csv  results.json         results.json written last: a run folder with it is finished
      checkpoints/stage<k>-epoch<e>/   Accelerate state, scheduler.json, mcl_slow.safetensors (MCL only),
                                       run_state.json (written last: without it a checkpoint is incomplete)
      stages/stage<k>.safetensors      each finished stage's student
      export/                          Hub layout (:func:`export_student`), renamed into place when complete

Nothing here is unpickled by timm_gkt: the run state and the scheduler are JSON, MCL's slow
weights safetensors. (Accelerate's own files in a checkpoint are its business; see the README.)
A checkpoint records the student it continues (architecture, class count, a hash of the
initial weights) and the method, and preflight refuses a resume that would mix them up.
"""
from __future__ import annotations

import copy
import csv
import hashlib
import io
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import __version__
from ..atomic import write_text_atomic
from ..errors import RunFolderError

SUMMARY_FIELDS = ['stage', 'teacher', 'epoch', 'train_loss', 'top1', 'transfer_delta', 'knowledge_gain',
                  'knowledge_loss', 'p_value', 'routed_share', 'lr', 'img_per_s']
RUN_STATE, SCHEDULER_STATE, MCL_SLOW_WEIGHTS = 'run_state.json', 'scheduler.json', 'mcl_slow.safetensors'
LEGACY_EXTRA = 'timm_gkt_extra.pt'  # pickled extras of timm_gkt before 0.2; never loaded
RESUME_HINT = 'give a folder RUN/checkpoints/stage<k>-epoch<e> that holds run_state.json, or use --resume auto'



@dataclass
class RunState:
    """What a run has done so far, saved beside each checkpoint so a resume knows where it is and for what."""
    history: list[dict] = field(default_factory=list)
    stage: int = 0
    epoch: int = 0  # epochs finished in the current stage
    student: dict | None = None  # student_fingerprint() of the initial student
    method: str | None = None

    def to_dict(self) -> dict:
        return {'history': self.history, 'stage': self.stage, 'epoch': self.epoch, 'student': self.student,
                'method': self.method}

    @classmethod
    def load(cls, data: dict) -> 'RunState':
        return cls(history=data['history'], stage=data['stage'], epoch=data['epoch'], student=data.get('student'),
                   method=data.get('method'))

    @classmethod
    def read(cls, checkpoint: Path | None) -> 'RunState':
        if checkpoint is None:
            return cls()
        return cls.load(json.loads((checkpoint / RUN_STATE).read_text()))


def student_fingerprint(model: torch.nn.Module) -> dict:
    """Architecture, class count and a SHA-256 of every tensor (name, dtype, shape, bytes) of the student."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous().reshape(-1)
        h.update(f'{name}|{t.dtype}|{tuple(t.shape)}|'.encode())
        h.update(memoryview(t.view(torch.uint8).numpy()))
    cfg = getattr(model, 'pretrained_cfg', None) or {}
    return {'architecture': cfg.get('architecture') or type(model).__name__,
            'num_classes': getattr(model, 'num_classes', None), 'weights_sha256': h.hexdigest()}


def check_run_folder(run_dir: Path) -> None:
    """The run folder can be made and written: nothing that is a file in its way, write access where it goes."""
    for path in (run_dir, *run_dir.parents):
        if not path.exists():
            continue
        if not path.is_dir():
            raise RunFolderError(f'{path} is a file, so the run folder {run_dir} cannot be made; give --output a '
                                 f'folder (it is created if missing)')
        # an existing run folder is renamed aside in its parent, so the parent must be writable too
        for needed in ((path, path.parent) if path == run_dir else (path,)):
            if not os.access(needed, os.W_OK | os.X_OK):
                raise RunFolderError(f'cannot write to {needed} (no permission, or a read-only filesystem), so the '
                                     f'run folder {run_dir} cannot be made; give --output a folder you can write to')
        return


def check_checkpoint(checkpoint: Path) -> RunState:
    """A ``--resume`` folder this trainer wrote and finished writing; its RunState."""
    if not checkpoint.is_dir():
        raise RunFolderError(f'--resume {checkpoint}: no such folder; {RESUME_HINT}')
    if checkpoint.parent.name != 'checkpoints':
        raise RunFolderError(f'--resume {checkpoint} is not inside a run\'s checkpoints/ folder, so its run is '
                             f'unknown; {RESUME_HINT}')
    if not (checkpoint / RUN_STATE).is_file():
        raise RunFolderError(f'--resume {checkpoint} is not a complete checkpoint of this trainer (no {RUN_STATE}: '
                             f'another program\'s folder, or a save that was interrupted); {RESUME_HINT}')
    if (checkpoint / LEGACY_EXTRA).is_file() and not (checkpoint / SCHEDULER_STATE).is_file():
        raise RunFolderError(f'--resume {checkpoint} was written by an older timm_gkt (pickled {LEGACY_EXTRA}, '
                             f'which is not loaded); start the run afresh without --resume')
    try:
        state = RunState.read(checkpoint)
    except (ValueError, KeyError, TypeError) as e:
        raise RunFolderError(f'--resume {checkpoint}: {RUN_STATE} is damaged ({e}); resume from an earlier '
                             f'checkpoint of the run, or start afresh') from None
    return state


def check_resume_matches(checkpoint: Path, state: RunState, student: dict, student_name: str, method: str) -> None:
    """Refuse a resume whose checkpoint continues another student (architecture or initial weights) or method."""
    was = state.student
    if was is None:
        raise RunFolderError(f'--resume {checkpoint} does not record which student it continues (written by an '
                             f'older timm_gkt); start the run afresh without --resume')
    if (was['architecture'], was['num_classes']) != (student['architecture'], student['num_classes']):
        raise RunFolderError(f'--resume {checkpoint} continues a {was["architecture"]} student '
                             f'({was["num_classes"]} classes), but --model {student_name} is a '
                             f'{student["architecture"]} ({student["num_classes"]} classes); resume with that run\'s '
                             f'--model, or start afresh without --resume')
    if was['weights_sha256'] != student['weights_sha256']:
        raise RunFolderError(f'--resume {checkpoint} continues other initial weights of {was["architecture"]} '
                             f'(sha256 {was["weights_sha256"][:12]}) than --model {student_name} '
                             f'({student["weights_sha256"][:12]}); resume with that run\'s --model and '
                             f'--initial-checkpoint, or start afresh without --resume')
    if state.method is not None and state.method != method:
        raise RunFolderError(f'--resume {checkpoint} belongs to a --transfer-method {state.method} run, not '
                             f'{method}; resume with --transfer-method {state.method}, or start afresh')


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint (by time: after a resume from an earlier one, newer means further along)."""
    ckpts = sorted((run_dir / 'checkpoints').glob('stage*-epoch*'), key=lambda p: p.stat().st_mtime)
    complete = [c for c in ckpts if (c / RUN_STATE).is_file()]
    return complete[-1] if complete else None


def resolve_run_dir(config) -> tuple[Path, Path | None]:
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
    from safetensors.torch import save_file
    ckpt = run_dir / 'checkpoints' / f'stage{stage}-epoch{epoch}'
    if accelerator.is_main_process and ckpt.exists():
        # a checkpoint written again (after a resume from an earlier one) must not look complete while half new
        shutil.rmtree(ckpt)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(ckpt))
    if accelerator.is_main_process:
        (ckpt / SCHEDULER_STATE).write_text(json.dumps(scheduler.state_dict(), indent=1))
        if task.has_ema():
            slow = task.get_trainable_module(ema=True).state_dict()
            save_file({k: v.detach().cpu().contiguous() for k, v in slow.items()}, str(ckpt / MCL_SLOW_WEIGHTS))
        # written last: a folder without run_state.json is an interrupted save and is never resumed from
        write_text_atomic(ckpt / RUN_STATE, json.dumps(state.to_dict(), indent=1))
        ckpts = sorted((run_dir / 'checkpoints').glob('stage*-epoch*'), key=lambda p: p.stat().st_mtime)
        for old in ckpts[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def load_checkpoint(accelerator, checkpoint: Path, scheduler, task) -> None:
    """Restore what save_checkpoint wrote (the prepared objects, the scheduler, MCL's slow weights)."""
    from safetensors.torch import load_file
    accelerator.load_state(str(checkpoint))
    scheduler.load_state_dict(json.loads((checkpoint / SCHEDULER_STATE).read_text()))
    if task.has_ema():
        # load_state_dict copies into the slow copy's own tensors, wherever they live
        task.get_trainable_module(ema=True).load_state_dict(load_file(str(checkpoint / MCL_SLOW_WEIGHTS)))


def save_stage_result(run_dir: Path, index: int, state_dict: dict) -> None:
    from safetensors.torch import save_file
    path = run_dir / 'stages' / f'stage{index}.safetensors'
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f'.{path.name}.tmp')
    save_file({k: v.contiguous() for k, v in state_dict.items()}, str(tmp))
    os.replace(tmp, path)


def load_stage_result(run_dir: Path, index: int) -> dict:
    from safetensors.torch import load_file
    return load_file(str(run_dir / 'stages' / f'stage{index}.safetensors'))


def write_summary(path: Path, history: list[dict]) -> None:
    # rewritten whole from the run state, so a resumed run has no rows from after its checkpoint
    out = io.StringIO(newline='')
    w = csv.DictWriter(out, fieldnames=SUMMARY_FIELDS, extrasaction='ignore')
    w.writeheader()
    w.writerows(history)
    write_text_atomic(path, out.getvalue())


def export_student(model, student, export_dir: Path, lineage: list[dict]) -> None:
    """The transferred student in Hub layout: ``config.json`` (with the lineage) and ``model.safetensors``.

    ``timm.create_model('local-dir:RUN_DIR/export', pretrained=True)`` loads it with timm alone;
    ``student`` is the run's :class:`~timm_gkt.models.ResolvedModel` (its class names go into config.json).
    """
    from timm.models import save_for_hf
    model = copy.deepcopy(model).eval()
    # the export is a new checkpoint: the source's hub id and tag describe other weights
    cfg = {k: v for k, v in model.pretrained_cfg.items() if k not in ('tag', 'hf_hub_id', 'hf_hub_revision')}
    model.pretrained_cfg = cfg
    model_config = {'timm_gkt': {'version': __version__, 'lineage': lineage}}
    if student.label_names:
        model_config['label_names'] = list(student.label_names)
    save_for_hf(model, export_dir, model_config=model_config, safe_serialization=True)
