"""One pass of predictions over an evaluation split, every model through its own eval transform."""
from __future__ import annotations

from typing import Sequence

import torch
from torch.utils.data import DataLoader

from ..data.sources import MultiViewDataset
from ..models.load import Preprocessing


def build_eval_views(preprocessings: Sequence[Preprocessing]) -> tuple[MultiViewDataset | None, list[int]]:
    """Deduplicate eval transforms: returns the (mode, transform) views and each model's view index."""
    keys: list[Preprocessing] = []
    index = []
    for p in preprocessings:
        if p not in keys:
            keys.append(p)
        index.append(keys.index(p))
    views = [(p.image_mode, p.eval_transform()) for p in keys]
    return views, index


@torch.no_grad()
def predict(
        models: Sequence[torch.nn.Module],
        preprocessings: Sequence[Preprocessing],
        dataset,
        batch_size: int = 256,
        num_workers: int = 0,
        accelerator=None,
        desc: str = 'eval',
        progress: bool = True,
        logits: bool = False,
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Return per-model predicted class ids [N] (or, with ``logits``, float32 logits [N, C]) and the targets [N].

    With an Accelerate ``accelerator`` the loader is sharded across processes and the
    predictions are gathered with ``gather_for_metrics`` (which drops the samples the
    sampler repeated to even out the shards), so every process gets the full arrays.
    A teacher answers in the student's class order when it comes wrapped in
    :class:`~timm_gkt.frozen.InStudentOrder` (:attr:`Teacher.network <timm_gkt.frozen.Teacher.network>`).
    """
    from tqdm.auto import tqdm
    views, view_index = build_eval_views(preprocessings)
    ds = MultiViewDataset(dataset, views)
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    device = torch.device('cpu')
    if accelerator is not None:
        # the module-level helper shards like Accelerator.prepare but does not register the loader,
        # so evaluation loaders never pile up in (or get saved with) the training state
        from accelerate.data_loader import prepare_data_loader
        loader = prepare_data_loader(loader, device=accelerator.device, num_processes=accelerator.num_processes,
                                     process_index=accelerator.process_index, put_on_device=True)
        device = accelerator.device
    is_main = accelerator is None or accelerator.is_main_process
    preds: list[list[torch.Tensor]] = [[] for _ in models]
    targets: list[torch.Tensor] = []
    was_training = [m.training for m in models]
    for m in models:
        m.eval()
    for views_batch, target in tqdm(loader, desc=desc, disable=not (progress and is_main), leave=False):
        # float32 even under --amp: the reported top-1 is the exported (float32) model's, not an autocast copy's
        outputs = [model(views_batch[view_index[i]].to(device)) for i, model in enumerate(models)]
        batch_preds = [out.float() if logits else out.argmax(-1) for out in outputs]
        target = target.to(device)
        if accelerator is not None:
            gathered = accelerator.gather_for_metrics((tuple(batch_preds), target))
            batch_preds, target = gathered
        for i, p in enumerate(batch_preds):
            preds[i].append(p.cpu())
        targets.append(target.cpu())
    for m, t in zip(models, was_training):
        m.train(t)
    return [torch.cat(p) for p in preds], torch.cat(targets)


def top1(pred: torch.Tensor, target: torch.Tensor) -> float:
    from .metrics import correctness, percent
    return percent(correctness(pred, target))


@torch.no_grad()
def first_batch_outputs(models: Sequence[torch.nn.Module], preprocessings: Sequence[Preprocessing], dataset,
                        images: int = 4) -> list[torch.Tensor]:
    """Each model's raw output on the split's first ``images`` images through its own eval transform: one small
    forward pass that shows, before anything is evaluated, what a model answers (its shape, finite or not)."""
    views, view_index = build_eval_views(preprocessings)
    ds = MultiViewDataset(dataset, views)
    items = [ds[i][0] for i in range(min(images, len(ds)))]
    batches = [torch.stack([item[v] for item in items]) for v in range(len(views))]
    outputs = []
    for model, v in zip(models, view_index):
        was_training = model.training
        outputs.append(model.eval()(batches[v]).float())
        model.train(was_training)
    return outputs
