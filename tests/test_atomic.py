"""All-or-nothing writes (timm_gkt/atomic.py): a failure leaves the old file or folder, never a half-written one."""
import os

import pytest

from timm_gkt.atomic import staged_folder, staging_name, write_text_atomic


def test_write_text_atomic_replaces_the_file_and_leaves_nothing_else(tmp_path):
    path = tmp_path / 'results.json'
    path.write_text('old')
    write_text_atomic(path, 'new')
    assert path.read_text() == 'new' and [p.name for p in tmp_path.iterdir()] == ['results.json']


def test_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / 'results.json'
    path.write_text('old')

    def disk_full(*args):
        raise OSError(28, 'No space left on device')
    monkeypatch.setattr(os, 'replace', disk_full)
    with pytest.raises(OSError):
        write_text_atomic(path, 'new')
    assert path.read_text() == 'old' and [p.name for p in tmp_path.iterdir()] == ['results.json']


def test_a_staged_folder_takes_its_name_only_when_complete(tmp_path):
    target = tmp_path / 'export'
    with staged_folder(target) as staging:
        assert staging == staging_name(target) and staging.name == '.export.partial'
        (staging / 'model.safetensors').write_text('weights')
        assert not target.exists()
    assert [p.name for p in target.iterdir()] == ['model.safetensors']
    assert [p.name for p in tmp_path.iterdir()] == ['export']


def test_a_failure_while_staging_keeps_the_previous_folder_and_removes_the_partial_one(tmp_path):
    target = tmp_path / 'export'
    target.mkdir()
    (target / 'model.safetensors').write_text('previous')
    with pytest.raises(OSError, match='No space'):
        with staged_folder(target) as staging:
            (staging / 'model.safetensors').write_text('half')
            raise OSError(28, 'No space left on device')
    assert (target / 'model.safetensors').read_text() == 'previous'
    assert [p.name for p in tmp_path.iterdir()] == ['export']


def test_a_complete_staged_folder_replaces_the_previous_one_whole(tmp_path):
    target = tmp_path / 'export'
    target.mkdir()
    (target / 'stale.png').write_text('from before')
    with staged_folder(target) as staging:
        (staging / 'README.md').write_text('card')
    assert sorted(p.name for p in target.iterdir()) == ['README.md']
    assert [p.name for p in tmp_path.iterdir()] == ['export']


def test_a_leftover_partial_folder_of_a_killed_run_is_cleared_first(tmp_path):
    target = tmp_path / 'export'
    leftover = staging_name(target)
    leftover.mkdir()
    (leftover / 'model.safetensors').write_text('half')
    with staged_folder(target) as staging:
        assert list(staging.iterdir()) == []
        (staging / 'config.json').write_text('{}')
    assert [p.name for p in target.iterdir()] == ['config.json'] and not leftover.exists()
