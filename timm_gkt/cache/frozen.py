"""The cache seen from a run: frozen models that read and fill it, the "before" predictions, what it served.

:class:`CachedFrozenModel` stands in for a :class:`~timm_gkt.models.FrozenModel` inside a task;
:class:`RunCache` is everything the engine asks of the cache, so the engine itself imports nothing from
this room: it binds each batch's sample indices (:meth:`RunCache.bind`), publishes each epoch
(:meth:`RunCache.commit`) and reads cached "before" predictions (:meth:`RunCache.predict`).
"""
from __future__ import annotations

import contextlib
from typing import Sequence

import torch
import torch.nn as nn

from ..errors import CacheError
from .keys import decoded_images_key, eval_predictions_key, train_outputs_key
from .store import CachedOutputs, TeacherCache


class CachedFrozenModel(nn.Module):
    """Drop-in for a :class:`~timm_gkt.tasks.FrozenModel`: stored logits for filled rows, computes and stores the rest.

    It needs to know which samples the batch holds: :func:`bind_batch` (what the engine calls before
    each forward) binds ``(epoch, indices)`` for the next call, and that call
    consumes it, so a forgotten bind is an error rather than another batch's rows. The
    output equals the wrapped model's (exactly, with float32 storage).
    """

    def __init__(self, frozen: nn.Module, outputs: CachedOutputs):
        super().__init__()
        self.frozen = frozen
        self.outputs = outputs
        self.name = getattr(frozen, 'name', 'frozen model')
        self._batch: tuple[int, torch.Tensor] | None = None

    def train(self, mode: bool = True):
        return super().train(False)

    def bind(self, epoch: int, indices) -> None:
        self._batch = None if indices is None else (int(epoch), torch.as_tensor(indices).cpu())

    def unbind(self) -> None:
        self._batch = None

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._batch is None:
            raise RuntimeError(f'{self.name} is cached but was called without its batch\'s sample indices; '
                               f'call bind_batch(task, epoch, indices) before the call (a loader over a ReplayDataset '
                               f'yields the indices) or wrap the call in cached_batch(task, epoch, indices)')
        (epoch, indices), self._batch = self._batch, None
        if indices.numel() != x.shape[0]:
            raise ValueError(f'{indices.numel()} sample indices bound for a batch of {x.shape[0]}')
        logits, hit = self.outputs.lookup(epoch, indices)
        if not hit.all():
            miss = ~hit
            computed = self.frozen(x if not hit.any() else x[miss.to(x.device)])
            self.outputs.store(epoch, indices[miss], computed)
            logits[miss] = computed.float().cpu()
        return logits.to(x.device)


def bind_batch(module: nn.Module, epoch: int, indices) -> None:
    """Tell every cached frozen model inside ``module`` which samples its next call holds (None: unknown)."""
    for m in module.modules():
        if isinstance(m, CachedFrozenModel):
            m.bind(epoch, indices)


@contextlib.contextmanager
def cached_batch(task: nn.Module, epoch: int, indices):
    """:func:`bind_batch` for one task call; the binding is dropped afterwards even if the call did not use it."""
    bind_batch(task, epoch, indices)
    try:
        yield
    finally:
        for m in task.modules():
            if isinstance(m, CachedFrozenModel):
                m.unbind()


def commit_cached(task: nn.Module, epoch: int | None = None) -> None:
    """Publish what the cached frozen models inside ``task`` filled (call at the end of each epoch)."""
    for m in task.modules():
        if isinstance(m, CachedFrozenModel):
            m.outputs.commit(epoch)


def cached_predict(cache: TeacherCache | None, models: Sequence[nn.Module], preprocessings, dataset,
                   precision: str = 'float32', accelerator=None, logits: bool = False, **predict_kwargs):
    """:func:`timm_gkt.evaluation.predict` that runs only the models whose predictions (or, with ``logits``, whose
    logits) are not cached yet.

    With several processes the main process decides what is cached and hands it to the
    others, so every process runs the same models in the same collective passes even
    when another run publishes predictions meanwhile.
    """
    from ..evaluation.predictions import predict
    if cache is None:
        return predict(models, preprocessings, dataset, accelerator=accelerator, logits=logits, **predict_kwargs)
    kind = 'eval-logits' if logits else 'eval-predictions'
    keys = [eval_predictions_key(m, p, dataset, precision, kind) for m, p in zip(models, preprocessings)]
    load, save = (cache.load_logits, cache.save_logits) if logits else (cache.load_predictions, cache.save_predictions)
    is_main = accelerator is None or accelerator.is_main_process
    stored = [load(k) if is_main else None for k in keys]
    if accelerator is not None and accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list
        stored = broadcast_object_list([stored])[0]
    missing = [i for i, s in enumerate(stored) if s is None]
    if missing:
        preds, target = predict([models[i] for i in missing], [preprocessings[i] for i in missing], dataset,
                                accelerator=accelerator, logits=logits, **predict_kwargs)
        for i, pred in zip(missing, preds):
            stored[i] = (pred, target)
            if is_main:
                save(keys[i], pred, target)
    return [s[0] for s in stored], stored[0][1]


def cached_frozen_model(cache: TeacherCache, frozen: nn.Module, replay_dataset, precision: str = 'float32',
                        num_classes: int | None = None) -> CachedFrozenModel:
    """A frozen model whose outputs on ``replay_dataset`` are read from (and written to) ``cache``."""
    num_classes = num_classes or getattr(frozen.model, 'num_classes', None)
    if not num_classes:
        raise CacheError(f'{getattr(frozen, "name", "the model")} does not say how many classes it predicts; '
                         f'pass num_classes to cached_frozen_model')
    key = train_outputs_key(frozen, replay_dataset, precision, cache.storage)
    return CachedFrozenModel(frozen, cache.open(key, len(replay_dataset), num_classes))


def cache_frozen_models(cache: TeacherCache, frozen, dataset, precision: str):
    """A stage's :class:`~timm_gkt.models.frozen.FrozenModels` with every teacher and the frozen student reading
    and filling ``cache`` for ``dataset`` (a :class:`~timm_gkt.data.replay.ReplayDataset`)."""
    from ..models.frozen import FrozenModels
    return FrozenModels([cached_frozen_model(cache, t, dataset, precision) for t in frozen.teachers],
                        None if frozen.frozen_student is None
                        else cached_frozen_model(cache, frozen.frozen_student, dataset, precision))


def cache_report(task: nn.Module) -> str | None:
    """One line on what the cached frozen models inside ``task`` read and computed (None: no cache)."""
    parts = []
    for m in task.modules():
        if isinstance(m, CachedFrozenModel):
            hits, misses = m.outputs.stats['hits'], m.outputs.stats['misses']
            parts.append(f'{m.name} {hits} of {hits + misses} rows read, {misses} computed')
    return f'teacher cache: {"; ".join(parts)}' if parts else None


class RunCache:
    """Everything a run's engine asks of the teacher cache, for frozen models computed at ``precision``.

    The engine holds one of these (or None) and calls it; it never imports this room.
    """

    def __init__(self, cache: TeacherCache, precision: str):
        self.cache, self.precision = cache, precision

    def predict(self, models, preprocessings, dataset, accelerator=None, **predict_kwargs):
        """Predictions (or, with ``logits=True``, logits) of each model, read where cached; evaluation runs in
        float32 whatever the training precision (timm_gkt.evaluation.predictions)."""
        return cached_predict(self.cache, models, preprocessings, dataset, 'float32', accelerator, **predict_kwargs)

    def wrap(self, frozen, replay_dataset):
        """A stage's FrozenModels reading and filling the cache; keyed by what decides their outputs (a stage-2
        frozen student is stage 1's result)."""
        return cache_frozen_models(self.cache, frozen, replay_dataset, self.precision)

    def decoded(self, dataset, transform, make):
        """Decoded training images (uint8) and their targets for ``dataset`` through ``transform``: read from the
        cache when a run decoded them before, else ``make()`` and stored (the in-memory loader's first step)."""
        key = decoded_images_key(dataset, transform)
        found = self.cache.load_arrays(key, ('images', 'targets'))
        if found is not None:
            return found
        images, targets = make()
        self.cache.save_arrays(key, {'images': images, 'targets': targets})
        return images, targets

    @staticmethod
    def bind(task: nn.Module, epoch: int, indices) -> None:
        bind_batch(task, epoch, indices)

    @staticmethod
    def commit(task: nn.Module, epoch: int) -> None:
        commit_cached(task, epoch)

    @staticmethod
    def report(task: nn.Module) -> str | None:
        return cache_report(task)
