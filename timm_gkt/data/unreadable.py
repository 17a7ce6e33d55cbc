"""Images that cannot be read are counted and named, not buried in a progress bar.

timm's ``ImageDataset`` replaces an image it cannot open or decode with the next one and logs a warning
that a progress bar overwrites. :class:`CountedReads` wraps each split of a run instead: timm's own retry is
cut to one attempt, an unreadable image is replaced by the next readable one (what timm does) and marked in
a shared-memory bitmap, so the marks of loader workers reach the process that reports them.
:func:`check_unreadable` gathers the marks of every process after each full pass: a few are a warning and a
record in results.json; more than :data:`MAX_UNREADABLE_SHARE` of a split stops the run.
"""
from __future__ import annotations

import logging
import os

import torch
from torch.utils.data import Dataset, Subset

from ..errors import TrainingFailed

MAX_UNREADABLE_SHARE = 0.01  # more than 1% is not a few damaged files, and the numbers would not mean what they say
_NEXT_TRIES = 10  # as many images in a row as timm's own retry (TIMM_DATASET_MAX_RETRIES) tries
_EXAMPLES = 3


class CountedReads(Dataset):
    """A split whose unreadable images are replaced by the next readable one and marked in ``unreadable``."""

    def __init__(self, dataset):
        from timm.data import ImageDataset
        self.dataset = dataset
        self.unreadable = torch.zeros(len(dataset), dtype=torch.bool).share_memory_()
        self.reported = 0
        for inner in _chain(dataset):
            if isinstance(inner, ImageDataset):
                inner._max_retries = 1  # fail here instead of timm's silent neighbour
        logging.getLogger('timm.data.dataset').setLevel(logging.ERROR)  # this module reports skips itself

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        n = len(self.dataset)
        for step in range(_NEXT_TRIES):
            i = (int(index) + step) % n
            try:
                return self.dataset[i]
            except (OSError, RuntimeError):  # PIL's decode errors; timm's "Failed to load 1 consecutive samples"
                self.unreadable[i] = True
        raise RuntimeError(f'{_NEXT_TRIES} images in a row from index {index} cannot be read')


def _chain(ds):
    for _ in range(16):
        if ds is None:
            return
        yield ds
        ds = getattr(ds, 'dataset', None)


def image_name(ds, index: int) -> str:
    """The file of item ``index`` of ``ds`` (through Subsets) as the reader names it, or ``#index``."""
    for _ in range(16):
        if isinstance(ds, CountedReads):
            ds = ds.dataset
        elif isinstance(ds, Subset):
            ds, index = ds.dataset, int(ds.indices[index])
        else:
            break
    try:
        name = str(ds.filename(index))  # relative to the split folder: 'Ankle boot/00000.png'
    except Exception:  # noqa: BLE001 - a reader without file names (torchvision, hfds bytes)
        return f'#{index}'
    # an absolute path (an hfds/ dataset's source files) would put a local path into results.json
    return os.path.basename(name) if os.path.isabs(name) else name


def check_unreadable(split, accelerator=None, say=print) -> None:
    """Gather ``split``'s marks over every process (a :class:`~timm_gkt.data.plan.SplitData` over
    :class:`CountedReads`), record them on the split, warn once per new count, stop above the share."""
    ds = split.dataset
    if not isinstance(ds, CountedReads):
        return
    marks = ds.unreadable
    if accelerator is not None and accelerator.num_processes > 1:
        marks = accelerator.reduce(marks.to(accelerator.device, torch.int32), reduction='sum').cpu() > 0
    found = torch.nonzero(marks).flatten().tolist()
    if len(found) <= ds.reported:
        return
    ds.reported = len(found)
    names = [image_name(ds, i) for i in found[:_EXAMPLES]] + (['...'] if len(found) > _EXAMPLES else [])
    split.unreadable = {'count': len(found), 'of': len(ds), 'examples': names}
    what = f'{len(found)} of {len(ds)} images of the {split.role} split {split.split.requested} ' \
           f'({100.0 * len(found) / len(ds):.2g}%) could not be read ({", ".join(names)})'
    if len(found) > MAX_UNREADABLE_SHARE * len(ds):
        raise TrainingFailed(f'{what}; more than {MAX_UNREADABLE_SHARE:.0%} is not a few damaged files and the '
                             f'results would not be about these images: fix or remove them and run again')
    say(f'warning: {what}; each was replaced by the next readable image, as timm does')
