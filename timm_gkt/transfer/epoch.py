"""One epoch of a stage: the training loop (Accelerate style, one screen), and what is recorded about it.

:func:`train_one_epoch` is the loop: mixup, the task's forward under autocast, a finite-loss check on every
process before ``backward``, gradient accumulation and clipping, the per-update schedule and the task's hook
after each optimizer step. The rest turns an epoch into its row of the run's history and its log line.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..errors import NonFiniteLoss
from .stages import Stage


def diverged_message(e: NonFiniteLoss, where: str, checkpoint: Path | None) -> str:
    head = f'{e} of {where}; the run stopped there and nothing was exported or pushed'
    if checkpoint is None:
        return f'{head}. No checkpoint was written yet; rerun with a lower --lr (or --clip-grad)'
    return (f'{head}. Last good checkpoint: {checkpoint}; continue from it with --resume {checkpoint} and a lower '
            f'--lr (or --clip-grad)')


def sync_batchnorm(accelerator, task) -> None:
    """Average BatchNorm running statistics over the processes (student and MCL slow copy), timm's way.

    Each process updates its own statistics from its shard; without this, evaluation would score
    each shard with its own process's statistics while the export carries rank 0's.
    """
    if accelerator.num_processes == 1:
        return
    from timm.utils import distribute_bn
    distribute_bn(task.get_trainable_module(), accelerator.num_processes, reduce=True)
    if task.has_ema():
        distribute_bn(task.get_trainable_module(ema=True), accelerator.num_processes, reduce=True)


def all_finite(accelerator, loss: torch.Tensor) -> bool:
    """Whether the loss is finite on every process (they must agree to stop together)."""
    bad = (~torch.isfinite(loss.detach())).float().reshape(1)
    if accelerator.num_processes > 1:
        bad = accelerator.reduce(bad, reduction='sum')
    return bad.item() == 0


def epoch_row(stage: Stage, name: str, epoch: int, loss: float, m: dict, counts: dict, optimizer,
              img_per_s: float | None) -> dict:
    """One line of the run's history (summary.csv, results.json ``epochs``)."""
    routed = None
    route_counts, flips = counts.get('route_counts'), counts.get('flip_counts')
    if route_counts is not None and route_counts.sum() > 0:
        # index 0 counts the frozen student, 1.. the stage's teachers in order
        routed = {t: 100.0 * route_counts[i + 1].item() / route_counts.sum().item()
                  for i, t in enumerate(stage.teachers)}
    return {'stage': stage.index, 'teacher': name, 'epoch': epoch + 1, 'train_loss': round(loss, 5),
            'top1': round(m['top1_after'], 2), 'transfer_delta': round(m['transfer_delta'], 2),
            'knowledge_gain': round(m['knowledge_gain'], 2), 'knowledge_loss': round(m['knowledge_loss'], 2),
            'p_value': m['p_value'], 'routed_share': None if routed is None else round(sum(routed.values()), 2),
            'routed': routed, 'routed_flips': None if flips is None else flip_shares(flips),
            'lr': optimizer.param_groups[0]['lr'],
            'img_per_s': round(img_per_s, 1) if img_per_s is not None else None}


def flip_shares(flips: torch.Tensor) -> dict:
    """Percent of the epoch's positive- and negative-flip training samples routed to the teacher."""
    pos, pos_routed, neg, neg_routed = (int(v) for v in flips.tolist())
    return {'positive_flips': pos, 'negative_flips': neg,
            'routed_pos_flips': round(100.0 * pos_routed / pos, 2) if pos else None,
            'routed_neg_flips': round(100.0 * neg_routed / neg, 2) if neg else None}


def format_epoch(desc: str, loss: float, m: dict, row: dict) -> str:
    return (f'  {desc}: loss {loss:.4f}  top-1 {m["top1_after"]:.2f} (Δ {m["transfer_delta"]:+.2f}, '
            f'gain {m["knowledge_gain"]:.2f}, loss {m["knowledge_loss"]:.2f}, p={m["p_value"]:.3g})'
            + (f'  routed to teacher {row["routed_share"]:.1f}%' if row['routed'] else '')
            + f'  [{row["img_per_s"]} img/s]')


def unpack_batch(batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(input, target, sample indices or None): loaders that also yield each sample's index pass it on."""
    return (batch[0], batch[1], batch[2]) if len(batch) > 2 else (batch[0], batch[1], None)


def train_one_epoch(accelerator, task, student, loader, optimizer, scheduler, mixup, epoch: int, num_updates: int,
                    clip_grad: float | None, desc: str, bind=None):
    """One pass over ``loader``; ``bind(task, epoch, sample_indices)`` is called before each forward when given
    (what a teacher cache looks its rows up by)."""
    from tqdm.auto import tqdm
    task.train()
    loss_sum = torch.zeros((), device=accelerator.device)
    steps = 0
    counts = {}  # route_counts / flip_counts summed over the epoch, when the task reports them
    for batch in tqdm(loader, desc=desc, disable=not accelerator.is_main_process, leave=False, mininterval=1):
        x, y, index = unpack_batch(batch)
        if mixup is not None:
            x, y = mixup(x, y)
        if bind is not None:
            bind(task, epoch, index)
        with accelerator.accumulate(student):
            with accelerator.autocast():
                out = task(x, y)
            if not all_finite(accelerator, out['loss']):  # before backward: this batch never reaches the weights
                raise NonFiniteLoss(out['loss'].item(), steps + 1, num_updates + 1)
            accelerator.backward(out['loss'])
            if accelerator.sync_gradients and clip_grad:
                accelerator.clip_grad_norm_(student.parameters(), clip_grad)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if accelerator.sync_gradients:
                num_updates += 1
                scheduler.step_update(num_updates=num_updates)
                task.after_optimizer_step(num_updates)
        loss_sum += out['loss'].detach().float()
        steps += 1
        for key in ('route_counts', 'flip_counts'):
            if key in out:
                value = out[key].detach().to(accelerator.device)
                counts[key] = counts[key] + value if key in counts else value
    scheduler.step(epoch + 1)
    loss = accelerator.reduce(loss_sum, reduction='mean').item() / max(steps, 1)
    counts = {k: accelerator.reduce(v, reduction='sum').cpu() for k, v in counts.items()}
    return loss, counts, num_updates
