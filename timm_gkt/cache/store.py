"""Teacher-output cache: a frozen model's logits per (epoch, sample index), memory-mapped on disk.

With replayable augmentation (:mod:`timm_gkt.data.replay`) a sample's pixels in an epoch are
the same in every run with the same seed, so a teacher's (or the frozen student's)
outputs for them can be computed once and looked up afterwards. The first run fills the
cache while it trains; later runs (other methods on the same pair, sweeps, CI re-runs)
read it and pay what plain fine-tuning pays. ``--teacher-cache DIR`` turns it on in the
engine; by hand (:mod:`timm_gkt.cache.frozen`):

    cache = TeacherCache(args.teacher_cache)
    task = KLDPTask(student, cached_frozen_model(cache, teacher, train_ds),
                    cached_frozen_model(cache, frozen_student, train_ds))
    for epoch in range(epochs):
        train_ds.set_epoch(epoch)
        for x, y, index in loader:
            with cached_batch(task, epoch, index):   # or bind_batch(task, epoch, index) before the call
                out = task(x, y)
            ...
        commit_cached(task, epoch)      # publish what this process filled

Layout: ``ROOT/<key digest>/key.json`` says in plain text what the folder holds (see
:mod:`timm_gkt.cache.keys`); ``epoch-00003.<content digest>.npy`` is a structured array
with one row per sample (a ``filled`` flag and the stored logits). Rows are written into
a ``.partial-`` file that is renamed into place only when committed, so a half-written
file is never read; a file whose content does not match the digest in its name (truncated,
corrupt) is ignored, deleted and rebuilt. Every row carries its own ``filled`` flag, so a
published file may hold part of an epoch: several processes may fill one epoch (each its
shard, or two runs at once), a commit merges what is already published, and readers take
the union of all published files; rows nobody filled yet are computed.
"""
from __future__ import annotations

import hashlib
import logging
import os
import secrets
import socket
from pathlib import Path

import numpy as np
import torch

from ..errors import CacheError
from .keys import CacheKey

_logger = logging.getLogger(__name__)



# ----------------------------------------------------------------------------- storage formats

class DenseFormat:
    """All logits per row, float32 (exact) or float16 (half the size)."""

    def __init__(self, name: str, num_classes: int):
        self.name, self.num_classes = name, num_classes
        self.dtype = np.dtype([('filled', '?'), ('logits', np.dtype(name), (num_classes,))])

    def encode(self, logits: torch.Tensor) -> np.ndarray:
        rows = np.zeros(logits.shape[0], dtype=self.dtype)
        rows['filled'] = True
        rows['logits'] = logits.detach().float().cpu().numpy()
        return rows

    def decode(self, rows: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(rows['logits'].astype(np.float32))


class TopKFormat:
    """The k largest logits (float16), their classes and the log-partition, for many classes (as FKD does).

    Decoding keeps the top-k probabilities exact up to float16 and spreads the remaining
    probability mass evenly over the other classes.
    """

    def __init__(self, k: int, num_classes: int):
        if not 0 < k < num_classes:
            raise CacheError(f'storage topk:{k} needs 0 < k < {num_classes} classes; use a smaller k or float16')
        self.name, self.k, self.num_classes = f'topk:{k}', k, num_classes
        self.dtype = np.dtype([('filled', '?'), ('values', 'f2', (k,)), ('indices', 'i4', (k,)), ('lse', 'f4')])

    def encode(self, logits: torch.Tensor) -> np.ndarray:
        logits = logits.detach().float().cpu()
        values, indices = logits.topk(self.k, dim=1)
        rows = np.zeros(logits.shape[0], dtype=self.dtype)
        rows['filled'] = True
        rows['values'], rows['indices'] = values.numpy(), indices.numpy()
        rows['lse'] = torch.logsumexp(logits, dim=1).numpy()
        return rows

    def decode(self, rows: np.ndarray) -> torch.Tensor:
        values = torch.from_numpy(rows['values'].astype(np.float32))
        indices = torch.from_numpy(rows['indices'].astype(np.int64))
        lse = torch.from_numpy(rows['lse'].astype(np.float32)).unsqueeze(1)
        rest = (1.0 - (values - lse).exp().sum(1, keepdim=True)).clamp_min(1e-12)
        fill = (rest / (self.num_classes - self.k)).log() + lse
        return fill.expand(-1, self.num_classes).clone().scatter_(1, indices, values)


def check_storage_name(name: str) -> str:
    if name in ('float32', 'float16') or (name.startswith('topk:') and name[5:].isdigit()):
        return name
    raise CacheError(f'unknown cache storage {name!r}; use float32, float16 or topk:K')


def storage_format(name: str, num_classes: int):
    """'float32' (default, exact), 'float16' or 'topk:K'."""
    if check_storage_name(name).startswith('topk:'):
        return TopKFormat(int(name[5:]), num_classes)
    return DenseFormat(name, num_classes)


# ----------------------------------------------------------------------------- files

def file_digest(path: Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()[:16]


def _open_verified(path: Path, dtype: np.dtype, length: int | None, verify: bool) -> np.ndarray | None:
    """Memory-map a published file, or delete it and return None when it is damaged."""
    try:
        if verify and file_digest(path) != path.name.split('.')[1]:
            raise ValueError('content does not match the digest in its name')
        arr = np.load(path, mmap_mode='r')
        if arr.dtype != dtype or arr.ndim != 1 or (length is not None and arr.shape[0] != length):
            raise ValueError(f'holds {arr.dtype} {arr.shape}, expected {dtype} ({length},)')
        return arr
    except (OSError, ValueError, EOFError) as e:
        if isinstance(e, FileNotFoundError):  # merged away by another process meanwhile
            return None
        _logger.warning('ignoring damaged cache file %s (%s); it will be rebuilt', path, e)
        path.unlink(missing_ok=True)
        return None


def _publish(partial: Path, stem: str) -> Path:
    """Rename a completely written file into place under its content digest (atomic)."""
    final = partial.with_name(f'{stem}.{file_digest(partial)}.npy')
    os.replace(partial, final)
    return final


def _partial_path(folder: Path, stem: str) -> Path:
    return folder / f'{stem}.partial-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}.npy'


def _remove_stale_partials(folder: Path) -> None:
    """Partial files left by processes of this host that no longer run (a crash, a kill)."""
    host = socket.gethostname()
    for path in folder.glob('*.partial-*'):
        owner = path.name.split('.partial-', 1)[1].rsplit('-', 2)
        if len(owner) != 3 or owner[0] != host or not owner[1].isdigit():
            continue
        try:
            os.kill(int(owner[1]), 0)
        except ProcessLookupError:
            path.unlink(missing_ok=True)
        except PermissionError:
            pass


# ----------------------------------------------------------------------------- outputs of one frozen model

class CachedOutputs:
    """Stored logits of one key: look rows up by (epoch, indices), store the rest, commit per epoch."""

    def __init__(self, folder: Path, fmt, num_samples: int, verify: bool = True):
        self.folder, self.format, self.num_samples, self.verify = Path(folder), fmt, num_samples, verify
        self._published: dict[int, list[tuple[Path, np.ndarray]]] = {}
        self._pending: dict[int, tuple[Path, np.ndarray]] = {}
        self.stats = {'hits': 0, 'misses': 0}

    @staticmethod
    def _stem(epoch: int) -> str:
        return f'epoch-{epoch:05d}'

    def _load_versions(self, epoch: int) -> list[tuple[Path, np.ndarray]]:
        out = []
        for path in sorted(self.folder.glob(f'{self._stem(epoch)}.*.npy')):
            if '.partial-' not in path.name:
                arr = _open_verified(path, self.format.dtype, self.num_samples, self.verify)
                if arr is not None:
                    out.append((path, arr))
        return out

    def _indices(self, indices) -> np.ndarray:
        idx = np.asarray(torch.as_tensor(indices).cpu(), dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= self.num_samples):
            raise IndexError(f'sample index out of range for a cache of {self.num_samples} samples')
        return idx

    def lookup(self, epoch: int, indices) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits ``[B, C]`` (float32) and a hit mask ``[B]``; rows without a hit hold no meaning."""
        idx = self._indices(indices)
        if epoch not in self._published:
            self._published[epoch] = self._load_versions(epoch)
        sources = [arr for _, arr in self._published[epoch]]
        if epoch in self._pending:
            sources.append(self._pending[epoch][1])
        rows = np.zeros(idx.size, dtype=self.format.dtype)
        hit = np.zeros(idx.size, dtype=bool)
        for arr in sources:
            got = arr[idx]
            new = got['filled'] & ~hit
            rows[new] = got[new]
            hit |= new
            if hit.all():
                break
        self.stats['hits'] += int(hit.sum())
        self.stats['misses'] += int(idx.size - hit.sum())
        return self.format.decode(rows), torch.from_numpy(hit)

    def store(self, epoch: int, indices, logits: torch.Tensor) -> None:
        idx = self._indices(indices)
        if epoch not in self._pending:
            path = _partial_path(self.folder, self._stem(epoch))
            arr = np.lib.format.open_memmap(path, mode='w+', dtype=self.format.dtype, shape=(self.num_samples,))
            self._pending[epoch] = (path, arr)
        self._pending[epoch][1][idx] = self.format.encode(logits)

    def commit(self, epoch: int | None = None) -> None:
        """Publish the rows this process stored (one epoch, or all), merged with what is already there."""
        for e in [epoch] if epoch is not None else list(self._pending):
            if e not in self._pending:
                continue
            path, arr = self._pending.pop(e)
            merged = self._load_versions(e)  # look again: other processes may have published meanwhile
            for _, old in merged:
                take = old['filled'] & ~arr['filled']
                arr[take] = old[take]
            arr.flush()
            del arr
            final = _publish(path, self._stem(e))
            for old_path, _ in merged:
                if old_path != final:
                    old_path.unlink(missing_ok=True)
            self._published.pop(e, None)

    def filled(self, epoch: int) -> int:
        """Rows of ``epoch`` that later runs can read (published ones)."""
        versions = self._load_versions(epoch)
        if not versions:
            return 0
        return int(np.logical_or.reduce([arr['filled'] for _, arr in versions]).sum())

    def close(self) -> None:
        self.commit()


# ----------------------------------------------------------------------------- the cache folder

class TeacherCache:
    """A folder of cached outputs, one subfolder per :class:`~timm_gkt.cache.keys.CacheKey`."""

    def __init__(self, root: str | os.PathLike, storage: str = 'float32', verify: bool = True):
        check_storage_name(storage)  # fail now, not after the first epoch
        self.root, self.storage, self.verify = Path(root), storage, verify

    def folder(self, key: CacheKey) -> Path:
        folder = self.root / key.digest
        folder.mkdir(parents=True, exist_ok=True)
        if not (folder / 'key.json').is_file():
            tmp = folder / f'key.json.partial-{secrets.token_hex(4)}'
            tmp.write_text(key.to_json())
            os.replace(tmp, folder / 'key.json')
        _remove_stale_partials(folder)
        return folder

    def open(self, key: CacheKey, num_samples: int, num_classes: int) -> CachedOutputs:
        fmt = storage_format(key.parts.get('storage', self.storage), num_classes)
        return CachedOutputs(self.folder(key), fmt, num_samples, self.verify)

    _PRED_DTYPE = np.dtype([('pred', 'i8'), ('target', 'i8')])

    def load_predictions(self, key: CacheKey) -> tuple[torch.Tensor, torch.Tensor] | None:
        for path in sorted(self.folder(key).glob('predictions.*.npy')):
            if '.partial-' not in path.name:
                arr = _open_verified(path, self._PRED_DTYPE, None, self.verify)
                if arr is not None:
                    return torch.from_numpy(np.array(arr['pred'])), torch.from_numpy(np.array(arr['target']))
        return None

    def load_logits(self, key: CacheKey) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Stored float32 logits [N, C] and targets [N] of one model on one split, or None."""
        for path in sorted(self.folder(key).glob('logits.*.npy')):
            if '.partial-' not in path.name:
                try:
                    arr = np.load(path)
                except (OSError, ValueError):
                    path.unlink(missing_ok=True)
                    continue
                return torch.from_numpy(np.array(arr['logits'])), torch.from_numpy(np.array(arr['target']))
        return None

    def save_logits(self, key: CacheKey, logits: torch.Tensor, target: torch.Tensor) -> None:
        rows = np.zeros(target.numel(), dtype=[('logits', 'f4', (logits.shape[1],)), ('target', 'i8')])
        rows['logits'], rows['target'] = logits.float().cpu().numpy(), target.cpu().numpy()
        partial = _partial_path(self.folder(key), 'logits')
        np.save(partial, rows)
        _publish(partial, 'logits')

    def load_arrays(self, key: CacheKey, names: tuple[str, ...]) -> tuple[torch.Tensor, ...] | None:
        """Tensors stored together by :meth:`save_arrays` (an ``.npz`` published under its digest), or None."""
        for path in sorted(self.folder(key).glob('arrays.*.npz')):
            if '.partial-' in path.name:
                continue
            try:
                if self.verify and file_digest(path) != path.name.split('.')[1]:
                    raise ValueError('content does not match the digest in its name')
                with np.load(path) as data:
                    return tuple(torch.from_numpy(data[n].copy()) for n in names)
            except (OSError, ValueError, KeyError) as e:
                _logger.warning('ignoring damaged cache file %s (%s); it will be rebuilt', path, e)
                path.unlink(missing_ok=True)
        return None

    def save_arrays(self, key: CacheKey, arrays: dict[str, torch.Tensor]) -> None:
        partial = _partial_path(self.folder(key), 'arrays').with_suffix('.npz')
        with open(partial, 'wb') as f:
            np.savez(f, **{n: a.cpu().numpy() for n, a in arrays.items()})
        final = partial.with_name(f'arrays.{file_digest(partial)}.npz')
        os.replace(partial, final)

    def save_predictions(self, key: CacheKey, pred: torch.Tensor, target: torch.Tensor) -> None:
        rows = np.zeros(pred.numel(), dtype=self._PRED_DTYPE)
        rows['pred'], rows['target'] = pred.cpu().numpy(), target.cpu().numpy()
        partial = _partial_path(self.folder(key), 'predictions')
        np.save(partial, rows)
        _publish(partial, 'predictions')


def check_cache_dir(root: str | os.PathLike, storage: str) -> None:
    """Refuse a storage name or a folder this run could not write, before any compute (CacheError)."""
    check_storage_name(storage)
    root = Path(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f'.write-test-{os.getpid()}-{secrets.token_hex(4)}'
        probe.touch()
        probe.unlink()
    except OSError as e:
        raise CacheError(f'--teacher-cache {root} cannot be written ({e.strerror or e}); '
                         f'give a folder this user can write to') from None
