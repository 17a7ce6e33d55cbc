"""Teacher-output cache (timm_gkt/cache.py): storage formats, the file life cycle, the frozen-model wrapper.

The last tests drive KLDPTask and KLDistillationTask by hand the way the training engine
will (``cached_batch`` around each step, ``commit_cached`` after each epoch) on a micro-zoo
pair over replayable Fashion-MNIST: online, cache-filling and cache-reading runs must give
the same loss on every step and the same final weights.
"""
import copy
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from timm_gkt.errors import CacheError
from timm_gkt.cache.frozen import CachedFrozenModel, cached_batch, cached_frozen_model, cached_predict, commit_cached
from timm_gkt.cache.store import CachedOutputs, DenseFormat, TeacherCache, TopKFormat, storage_format
from timm_gkt.cache.keys import CacheKey
from timm_gkt.models.load import Preprocessing

C = 4
N = 10


def outputs(folder, storage='float32', n=N, verify=True) -> CachedOutputs:
    return TeacherCache(folder, storage, verify).open(CacheKey({'test': storage}), n, C)


def logits_for(indices) -> torch.Tensor:
    """Row i is [i, -i, 0.5 i, 1]: easy to recognise."""
    i = torch.as_tensor(indices, dtype=torch.float32)
    return torch.stack([i, -i, 0.5 * i, torch.ones_like(i)], dim=1)


# ----------------------------------------------------------------------------- formats

def test_float32_round_trip_is_exact_and_float16_rounds():
    z = torch.tensor([[3.14159265, -2.7182818, 100.123, 1e-3]])
    assert torch.equal(DenseFormat('float32', C).decode(DenseFormat('float32', C).encode(z)), z)
    half = DenseFormat('float16', C).decode(DenseFormat('float16', C).encode(z))
    assert torch.equal(half, z.half().float()) and not torch.equal(half, z)


def test_topk_keeps_the_top_probabilities_and_spreads_the_rest():
    z = torch.tensor([[2.0, 0.0, 1.0, -1.0]])
    p = z.softmax(1)[0]
    decoded = TopKFormat(2, C).decode(TopKFormat(2, C).encode(z))
    q = decoded.softmax(1)[0]
    # classes 0 and 2 are the top 2: kept; classes 1 and 3 share what is left
    rest = (1 - p[0] - p[2]) / 2
    assert torch.allclose(q, torch.stack([p[0], rest, p[2], rest]), atol=2e-4)
    assert decoded[0, 0] == 2.0 and decoded[0, 2] == 1.0


def test_bad_storage_names_fail_with_one_sentence():
    with pytest.raises(CacheError, match='use float32, float16 or topk:K'):
        storage_format('int8', C)
    with pytest.raises(CacheError, match='0 < k < 4'):
        storage_format('topk:4', C)
    with pytest.raises(CacheError):
        TeacherCache('/nonexistent', storage='bf16')


# ----------------------------------------------------------------------------- life cycle

def test_rows_are_read_back_only_after_commit(tmp_path):
    writer = outputs(tmp_path)
    writer.store(0, [1, 4, 7], logits_for([1, 4, 7]))
    z, hit = writer.lookup(0, [7, 2, 1])
    assert hit.tolist() == [True, False, True]  # the writer sees its own pending rows
    assert torch.equal(z[[0, 2]], logits_for([7, 1]))
    assert not outputs(tmp_path).lookup(0, [1])[1].any()  # another run: a partial file is never read
    writer.commit()
    z, hit = outputs(tmp_path).lookup(0, [7, 2, 1])
    assert hit.tolist() == [True, False, True] and torch.equal(z[[0, 2]], logits_for([7, 1]))
    assert not outputs(tmp_path).lookup(1, [1])[1].any()  # other epoch
    assert outputs(tmp_path).filled(0) == 3


def test_two_processes_filling_shards_publish_the_union(tmp_path):
    rank0, rank1 = outputs(tmp_path), outputs(tmp_path)
    rank0.store(2, [0, 2, 4, 6, 8], logits_for([0, 2, 4, 6, 8]))
    rank1.store(2, [1, 3, 5, 7, 9], logits_for([1, 3, 5, 7, 9]))
    rank0.commit(2)
    rank1.commit(2)  # merges rank 0's published rows into its own
    z, hit = outputs(tmp_path).lookup(2, range(N))
    assert hit.all() and torch.equal(z, logits_for(range(N)))
    published = [p for p in (tmp_path / CacheKey({'test': 'float32'}).digest).glob('epoch-00002.*.npy')]
    assert len(published) == 1


def published_file(tmp_path):
    (path,) = (tmp_path / CacheKey({'test': 'float32'}).digest).glob('epoch-00000.*.npy')
    return path


@pytest.mark.parametrize('damage', ['truncate', 'flip_byte'])
def test_a_damaged_file_is_ignored_and_rebuilt(tmp_path, damage):
    writer = outputs(tmp_path)
    writer.store(0, range(N), logits_for(range(N)))
    writer.commit()
    path = published_file(tmp_path)
    data = bytearray(path.read_bytes())
    path.write_bytes(data[:len(data) // 2] if damage == 'truncate' else data[:-3] + bytes([data[-3] ^ 1]) + data[-2:])
    reader = outputs(tmp_path)
    assert not reader.lookup(0, range(N))[1].any()
    assert not path.exists()
    reader.store(0, range(N), logits_for(range(N)))  # the run computes them again
    reader.commit()
    z, hit = outputs(tmp_path).lookup(0, range(N))
    assert hit.all() and torch.equal(z, logits_for(range(N)))


def test_partial_files_of_dead_processes_are_removed(tmp_path):
    writer = outputs(tmp_path)
    writer.store(0, [1], logits_for([1]))
    (partial,) = (tmp_path / CacheKey({'test': 'float32'}).digest).glob('*.partial-*')
    dead = partial.with_name(partial.name.replace(f'-{__import__("os").getpid()}-', '-999999999-'))
    partial.rename(dead)
    outputs(tmp_path)
    assert not dead.exists()


# ----------------------------------------------------------------------------- frozen-model wrapper

class CountingTeacher(nn.Module):
    """Logits = logits_for(pixel value), so a row's expected output is known; counts rows it computed."""

    def __init__(self):
        super().__init__()
        self.rows = 0
        self.num_classes = C

    def forward(self, x):
        self.rows += x.shape[0]
        return logits_for(x[:, 0, 0, 0])


def batch(indices):
    return torch.tensor(indices, dtype=torch.float32).view(-1, 1, 1, 1)


def test_wrapper_computes_only_the_missing_rows(tmp_path):
    teacher = CountingTeacher()
    wrapped = CachedFrozenModel(teacher, outputs(tmp_path))
    task = nn.Module()
    task.teacher = wrapped
    with cached_batch(task, 0, [1, 2, 3]):
        assert torch.equal(wrapped(batch([1, 2, 3])), logits_for([1, 2, 3]))
    commit_cached(task, 0)
    later = CountingTeacher()
    task.teacher = CachedFrozenModel(later, outputs(tmp_path))
    with cached_batch(task, 0, [3, 5, 1, 6]):
        assert torch.equal(task.teacher(batch([3, 5, 1, 6])), logits_for([3, 5, 1, 6]))
    assert later.rows == 2 and task.teacher.outputs.stats == {'hits': 2, 'misses': 2}


def test_wrapper_refuses_a_batch_without_or_with_wrong_indices(tmp_path):
    wrapped = CachedFrozenModel(CountingTeacher(), outputs(tmp_path))
    with pytest.raises(RuntimeError, match='cached_batch'):
        wrapped(batch([1]))
    wrapped.bind(0, [1, 2])
    with pytest.raises(ValueError, match='2 sample indices bound for a batch of 3'):
        wrapped(batch([1, 2, 3]))
    wrapped.bind(0, [1, 2])
    wrapped(batch([1, 2]))
    with pytest.raises(RuntimeError, match='bind_batch'):  # a binding serves one call, not the next batch
        wrapped(batch([1, 2]))
    with pytest.raises(IndexError):
        wrapped.bind(0, [N])
        wrapped(batch([N]))


# ----------------------------------------------------------------------------- evaluation predictions

class Images(torch.utils.data.Dataset):
    def __init__(self, n=12):
        rng = np.random.default_rng(0)
        self.data = torch.from_numpy(rng.integers(0, 256, (n, 8, 8), dtype=np.uint8))
        self.targets = torch.arange(n) % C

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        return Image.fromarray(self.data[i].numpy(), mode='L'), int(self.targets[i])


class PixelClassifier(nn.Module):
    def __init__(self, seed):
        super().__init__()
        torch.manual_seed(seed)
        self.fc = nn.Linear(64, C)
        self._images = 0  # private: public scalar settings are part of the model's fingerprint

    @property
    def images(self):
        return self._images

    def forward(self, x):
        self._images += x.shape[0]
        return self.fc(x.flatten(1))


def test_each_models_eval_pass_is_paid_once(tmp_path):
    from timm_gkt.evaluation.predictions import predict
    prep = Preprocessing((1, 8, 8), (0.5,), (0.25,))
    ds, cache = Images(), TeacherCache(tmp_path)
    a, b = PixelClassifier(0), PixelClassifier(1)
    (pa,), target = cached_predict(cache, [a], [prep], ds, progress=False)
    assert a.images == 12
    preds, target2 = cached_predict(cache, [a, b], [prep, prep], ds, progress=False)
    assert a.images == 12 and b.images == 12  # only b ran
    (ref_a, ref_b), ref_target = predict([copy.deepcopy(a), copy.deepcopy(b)], [prep, prep], ds, progress=False)
    assert torch.equal(preds[0], ref_a) and torch.equal(preds[1], ref_b) and torch.equal(pa, ref_a)
    assert torch.equal(target, ref_target) and torch.equal(target2, ref_target)
    with torch.no_grad():
        a.fc.bias[0] += 1.0  # other weights: a miss
    cached_predict(cache, [a], [prep], ds, progress=False)
    assert a.images == 24


class RemappableImages(Images):
    """Images whose targets go through ``target_transform``, as timm's and torchvision's datasets do."""
    target_transform = None

    def __getitem__(self, i):
        img, target = super().__getitem__(i)
        return img, target if self.target_transform is None else self.target_transform(target)


def test_cached_predictions_are_keyed_by_the_targets_the_run_sees(tmp_path):
    """A class map (or corrected label names) remaps the dataset's targets after an earlier run cached its
    predictions: the later run must be scored against its own targets, not the stored ones."""
    from timm_gkt.data.labels import remap_dataset_targets
    prep = Preprocessing((1, 8, 8), (0.5,), (0.25,))
    ds, cache, model = RemappableImages(), TeacherCache(tmp_path), PixelClassifier(0)
    _, before = cached_predict(cache, [model], [prep], ds, progress=False)
    assert before.tolist() == [i % C for i in range(12)]
    remap_dataset_targets(ds, [3, 2, 1, 0])
    (pred,), after = cached_predict(cache, [model], [prep], ds, progress=False)
    assert after.tolist() == [3 - i % C for i in range(12)]
    assert model.images == 24  # another key: computed again, not read back with the old targets
    _, again = cached_predict(cache, [model], [prep], ds, progress=False)
    assert torch.equal(again, after) and model.images == 24  # the remapped run's own entry is a hit


# ----------------------------------------------------------------------------- exactness on a micro-zoo pair

def drive(zoo, data_dir, method, cache=None, epochs=2, batches=3, batch_size=16):
    """A hand-written transfer loop with the calls the engine makes; returns per-step losses and the task."""
    from timm.data import create_loader
    from timm_gkt.data.sources import create_image_dataset
    from timm_gkt.models.load import load_model
    from timm_gkt.data.replay import ReplayDataset
    from timm_gkt.models.frozen import FrozenModel, frozen_copy
    from timm_gkt.transfer.tasks import KLDistillationTask, KLDPTask
    student, teacher = load_model(f'local-dir:{zoo}/q_vit'), load_model(f'local-dir:{zoo}/q_cnn')
    prep = student.preprocessing
    base = torch.utils.data.Subset(create_image_dataset('torch/fashion_mnist', data_dir, 'train'),
                                   range(batches * batch_size))
    train_ds = ReplayDataset(base, prep.image_mode, seed=3)
    loader = create_loader(train_ds, input_size=prep.input_size, batch_size=batch_size, is_training=True,
                           scale=(0.7, 1.0), hflip=0.5, mean=prep.mean, std=prep.std, num_workers=0,
                           use_prefetcher=False, device=torch.device('cpu'))
    model = student.model.train()
    frozen_teacher = FrozenModel(teacher.model, prep, teacher.preprocessing, name='q_cnn')
    frozen_student = frozen_copy(model, prep)
    if cache is not None:
        frozen_teacher = cached_frozen_model(cache, frozen_teacher, train_ds)
        frozen_student = cached_frozen_model(cache, frozen_student, train_ds)
    task = (KLDPTask(model, frozen_teacher, frozen_student) if method == 'kldp'
            else KLDistillationTask(model, frozen_teacher))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for epoch in range(epochs):
        train_ds.set_epoch(epoch)
        torch.manual_seed(epoch)  # the sampler's order
        for x, y, index in loader:
            with cached_batch(task, epoch, index):
                out = task(x, y)
            opt.zero_grad()
            out['loss'].backward()
            opt.step()
            losses.append(out['loss'].item())
        commit_cached(task, epoch)
    return losses, task


def relative(a, b):
    return max(abs(x - y) / abs(x) for x, y in zip(a, b))


@pytest.mark.parametrize('method', ['kldp', 'kl'])
def test_cached_run_equals_online_run(micro_zoo, data_dir, tmp_path, method):
    online, online_task = drive(micro_zoo, data_dir, method)
    filling, _ = drive(micro_zoo, data_dir, method, TeacherCache(tmp_path))
    reading, reading_task = drive(micro_zoo, data_dir, method, TeacherCache(tmp_path))
    assert len(online) == 6
    assert relative(online, filling) <= 1e-4 and relative(online, reading) <= 1e-4
    assert online == reading  # float32 storage: the very same numbers
    cached = [m for m in reading_task.modules() if isinstance(m, CachedFrozenModel)]
    assert len(cached) == (2 if method == 'kldp' else 1)
    for m in cached:
        assert m.outputs.stats == {'hits': 6 * 16, 'misses': 0}  # the teacher never ran
    for (name, a), b in zip(online_task.trainable_module.state_dict().items(),
                            reading_task.trainable_module.state_dict().values()):
        assert torch.allclose(a, b, rtol=0, atol=1e-6), name


def test_float16_storage_is_close_but_not_exact(micro_zoo, data_dir, tmp_path):
    """Measured on this pair: float16 logits move KL+DP losses by ~1e-4 relative (see the benchmark)."""
    online, _ = drive(micro_zoo, data_dir, 'kldp')
    drive(micro_zoo, data_dir, 'kldp', TeacherCache(tmp_path, 'float16'))
    reading, _ = drive(micro_zoo, data_dir, 'kldp', TeacherCache(tmp_path, 'float16'))
    assert 0 < relative(online, reading) < 1e-2
    assert math.isfinite(sum(reading))
