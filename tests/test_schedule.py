"""Updates per epoch (timm_gkt/schedule.py), checked against the loader Accelerate really shards."""
import pytest
import torch
from torch.utils.data import DataLoader

from timm_gkt.transfer.stages import batches_per_process, updates_per_epoch


@pytest.mark.parametrize('images, batch, processes', [(384, 64, 1), (384, 64, 2), (400, 32, 3), (100, 64, 1),
                                                      (130, 32, 2)])
def test_batches_per_process_is_what_accelerate_deals_out(images, batch, processes):
    from accelerate.data_loader import prepare_data_loader
    # timm's training loader: shuffled, last incomplete batch dropped
    loader = DataLoader(torch.arange(images), batch_size=batch, shuffle=True, drop_last=True)
    lengths = [len(prepare_data_loader(loader, num_processes=processes, process_index=i, put_on_device=False))
               for i in range(processes)]
    assert lengths == [batches_per_process(images, batch, processes)] * processes


def test_batches_by_hand():
    assert batches_per_process(384, 64) == 6
    assert batches_per_process(384, 64, 2) == 3
    assert batches_per_process(100, 64) == 1 and batches_per_process(63, 64) == 0


def test_updates_count_the_last_partial_accumulation():
    assert updates_per_epoch(12, 1) == 12
    assert updates_per_epoch(12, 4) == 3
    assert updates_per_epoch(13, 4) == 4  # Accelerate syncs at the end of the loader


def test_counted_after_sharding_not_before():
    """12 batches, 2 processes, accumulation 4: each process sees 6 batches and updates twice (6 = 4 + 2).
    Counting before the sharding, ceil(12 / 4) // 2 = 1, would end the cosine schedule after half the epoch."""
    per_process = batches_per_process(12 * 32, 32, 2)
    assert per_process == 6 and updates_per_epoch(per_process, 4) == 2
    assert -(-12 // 4) // 2 == 1
