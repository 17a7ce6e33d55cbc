"""Content fingerprints: what decides a frozen model's outputs, hashed into a cache key.

A cached output may be reused only when everything that went into it is the same: the
model's weights and configuration, how the student's batch is adapted to it (sizes, mean
and std, channels, label permutation), which images (dataset content and indices), how
they were augmented (seed, transform parameters) and how it was computed (precision,
device type, library versions). Each part is a small JSON-able dict, so a cache folder
can say in plain text what it holds; :class:`CacheKey` hashes them all.
"""
from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
import itertools
import json
from typing import Any

import numpy as np
import torch
import torch.nn as nn

FINGERPRINT_VERSION = 1
_SIMPLE = (bool, int, float, str, type(None))


def _hash_bytes(*chunks) -> str:
    h = hashlib.blake2b(digest_size=16)
    for c in chunks:
        h.update(c)
    return h.hexdigest()


def tensor_bytes(t: torch.Tensor) -> np.ndarray:
    """Raw bytes of any dtype (bf16 included, which NumPy lacks), as a uint8 array hashlib reads without a copy."""
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()


def describe(obj: Any, _depth: int = 0) -> Any:
    """A JSON-able description of an object's parameters (transforms, enums, nested containers).

    Objects are described by type and public attributes, functions by qualified name, so
    the description never contains a memory address (which would change every run).
    """
    if _depth > 8:
        return '...'
    if isinstance(obj, _SIMPLE):
        return obj
    if isinstance(obj, enum.Enum):
        return f'{type(obj).__name__}.{obj.name}'
    if isinstance(obj, (tuple, list)):
        return [describe(v, _depth + 1) for v in obj]
    if isinstance(obj, dict):
        return {str(k): describe(v, _depth + 1) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, (torch.Tensor, np.ndarray)):
        t = torch.as_tensor(obj)
        return t.tolist() if t.numel() <= 64 else {'shape': list(t.shape), 'digest': _hash_bytes(tensor_bytes(t))}
    if isinstance(obj, functools.partial):
        return {'partial': describe(obj.func, _depth + 1), 'args': describe(list(obj.args), _depth + 1),
                'keywords': describe(obj.keywords, _depth + 1)}
    if hasattr(obj, '__qualname__'):  # functions, methods, classes
        return f'{getattr(obj, "__module__", "")}.{obj.__qualname__}'
    attrs = {k: v for k, v in getattr(obj, '__dict__', {}).items() if not k.startswith('_')}
    return {'type': f'{type(obj).__module__}.{type(obj).__qualname__}', **describe(attrs, _depth + 1)}


def model_fingerprint(model: nn.Module) -> dict:
    """Weights and buffers (names, dtypes, shapes, bytes) plus every submodule's type and scalar settings.

    Buffers include non-persistent ones (a label permutation, a position index), which
    ``state_dict`` leaves out but which change the outputs all the same. The settings catch
    what the tensors do not: a ViT's ``global_pool``, a LayerNorm's eps, an activation's
    type. Train/eval mode is left out: frozen models always run in eval mode.
    """
    h = hashlib.blake2b(digest_size=16)
    for name, t in itertools.chain(model.named_parameters(), model.named_buffers()):
        h.update(f'{name}|{t.dtype}|{tuple(t.shape)}|'.encode())
        h.update(tensor_bytes(t))
    config = []
    for name, m in model.named_modules():
        settings = {k: describe(v) for k, v in vars(m).items()
                    if not k.startswith('_') and k != 'training' and isinstance(v, _SIMPLE + (tuple, list, enum.Enum))}
        config.append([name, f'{type(m).__module__}.{type(m).__qualname__}', settings])
    return {'weights': h.hexdigest(), 'config': _hash_bytes(json.dumps(config, sort_keys=True).encode())}


def frozen_model_fingerprint(frozen) -> dict:
    """A :class:`~timm_gkt.frozen.FrozenModel`: the network, what it is fed and the class order it answers in.

    The network is hashed without its label-order wrapper, so the same model keys the same
    whether it is a run's teacher or another run's frozen student.
    """
    perm = frozen.net.label_perm
    return {
        **model_fingerprint(frozen.model),
        'preprocessing': dataclasses.asdict(frozen.adaptor.target),
        'student_preprocessing': dataclasses.asdict(frozen.adaptor.source),
        'label_perm': None if perm is None else perm.tolist(),
    }


def _unwrap_dataset(ds) -> tuple[Any, np.ndarray | None]:
    """The innermost dataset and the indices into it, through ``Subset``s and image wrappers."""
    indices = None
    while True:
        if isinstance(ds, torch.utils.data.Subset):
            sub = np.asarray(ds.indices, dtype=np.int64)
            indices = sub if indices is None else sub[indices]
            ds = ds.dataset
        elif hasattr(ds, 'dataset') and not hasattr(ds, 'data'):
            ds = ds.dataset  # ModeDataset, ReplayDataset: same indices
        else:
            return ds, indices


def dataset_fingerprint(dataset, samples: int = 64) -> dict:
    """Which images: the base dataset's content and the indices taken from it.

    Datasets that hold their arrays (torchvision's MNIST family: ``data``, ``targets``) are
    hashed whole; others by their file list if they have one and ``samples`` evenly spaced items.
    """
    base, indices = _unwrap_dataset(dataset)
    return {'type': f'{type(base).__module__}.{type(base).__qualname__}', 'base_len': len(base),
            'content': _content_digest(base, samples), 'num_samples': len(dataset),
            'indices': None if indices is None else _hash_bytes(indices)}


def _content_digest(base, samples: int) -> str:
    data, targets = getattr(base, 'data', None), getattr(base, 'targets', None)
    if isinstance(data, (torch.Tensor, np.ndarray)) and targets is not None:
        # every cached model of a run would hash the same 47 MB again: remember the digest for this very
        # array object (an array edited in place would keep its digest; datasets are not edited in training)
        memo = getattr(base, '_timm_gkt_content', None)
        if memo is not None and memo[0] is data:
            return memo[1]
        content = _hash_bytes(tensor_bytes(torch.as_tensor(data)), tensor_bytes(torch.as_tensor(targets)))
        base._timm_gkt_content = (data, content)
        return content
    h = hashlib.blake2b(digest_size=16)
    listing = getattr(getattr(base, 'reader', None), 'samples', None)
    if listing is not None:
        h.update(json.dumps(describe(list(listing))).encode())
    for i in np.linspace(0, len(base) - 1, num=min(samples, len(base)), dtype=np.int64):
        img, target = base[int(i)][:2]
        h.update(np.asarray(img).tobytes())
        h.update(str(target).encode())
    return h.hexdigest()


def augmentation_fingerprint(replay_dataset) -> dict:
    """What decides a sample's pixels besides its index and epoch (a :class:`~timm_gkt.replay.ReplayDataset`)."""
    from ..data.replay import REPLAY_VERSION
    return {'replay_version': REPLAY_VERSION, 'seed': replay_dataset.seed, 'mode': replay_dataset.mode.mode,
            'transform': describe(replay_dataset.transform)}


def software_versions() -> dict:
    import timm
    import torchvision
    return {'torch': torch.__version__, 'timm': timm.__version__, 'torchvision': torchvision.__version__,
            'numpy': np.__version__}


@dataclasses.dataclass(frozen=True)
class CacheKey:
    """The parts that decide a set of outputs; ``digest`` names its cache folder."""
    parts: dict

    @property
    def digest(self) -> str:
        return _hash_bytes(json.dumps(self.parts, sort_keys=True).encode())

    def to_json(self) -> str:
        return json.dumps({'digest': self.digest, **self.parts}, indent=1, sort_keys=True)


def _device_type(module: nn.Module) -> str:
    p = next(iter(module.parameters()), None)
    return 'cpu' if p is None else p.device.type


def train_outputs_key(frozen, replay_dataset, precision: str = 'float32', storage: str = 'float32') -> CacheKey:
    """Key of a frozen model's outputs on a replayable training set.

    ``precision`` names how the engine runs the frozen model (e.g. 'float32',
    'bfloat16-autocast'); it changes the outputs, so it is part of the key.
    """
    return CacheKey({
        'kind': 'train-outputs', 'version': FINGERPRINT_VERSION, 'storage': storage,
        'model': frozen_model_fingerprint(frozen),
        'data': dataset_fingerprint(replay_dataset),
        'augmentation': augmentation_fingerprint(replay_dataset),
        'precision': precision, 'device': _device_type(frozen),
        'software': software_versions(),
    })


def eval_predictions_key(model: nn.Module, preprocessing, dataset, precision: str = 'float32',
                         kind: str = 'eval-predictions') -> CacheKey:
    """Key of a model's predictions on an evaluation split through its own eval transform.

    A teacher comes as :class:`~timm_gkt.frozen.InStudentOrder`; it is keyed as its bare
    network plus the permutation, so a model's predictions are shared by the runs where it
    is the student and those where it is an aligned teacher.
    """
    from ..data.subsets import targets_as_seen
    from ..models.frozen import InStudentOrder
    label_perm = None
    if isinstance(model, InStudentOrder):
        model, label_perm = model.model, model.label_perm
    return CacheKey({
        'kind': kind, 'version': FINGERPRINT_VERSION,
        'model': model_fingerprint(model),
        'eval_transform': describe(preprocessing.eval_transform()), 'mode': preprocessing.image_mode,
        'label_perm': None if label_perm is None else label_perm.tolist(),
        'data': dataset_fingerprint(dataset),
        # the stored targets come back with a hit: they must be the run's, after any class remap
        'targets': _hash_bytes(tensor_bytes(targets_as_seen(dataset))),
        'precision': precision, 'device': _device_type(model),
        'software': software_versions(),
    })


def decoded_images_key(dataset, transform) -> CacheKey:
    """Key of a training split decoded once for ``--data-in-memory``: which images (and their targets as the run
    sees them, after any class remap), through which deterministic transform."""
    from ..data.subsets import targets_as_seen
    return CacheKey({
        'kind': 'decoded-images', 'version': FINGERPRINT_VERSION,
        'data': dataset_fingerprint(dataset), 'targets': _hash_bytes(tensor_bytes(targets_as_seen(dataset))),
        'transform': describe(transform), 'mode': getattr(getattr(dataset, 'mode', None), 'mode', None),
        'software': software_versions(),
    })
