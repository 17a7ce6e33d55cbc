"""Unreadable images (timm_gkt/data/unreadable.py): counted, named and reported instead of silently replaced by
their neighbour; above 1% of a split the run stops. A copy of the PNG folder with some files overwritten by
bytes no image reader accepts."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from datasets_fixture import fashion_folder  # noqa: F401
from timm_gkt import train


def damaged_copy(folder, tmp_path: Path, damage: dict[str, int]) -> Path:
    """The fixture folder with the first ``n`` files (in timm's order) of each split in ``damage`` overwritten."""
    root = tmp_path / 'damaged'
    shutil.copytree(folder.root, root)
    for split, n in damage.items():
        for png in sorted((root / split).rglob('*.png'))[:n]:
            png.write_bytes(b'not an image')
    return root


def test_an_unreadable_image_is_replaced_by_the_next_one_counted_and_named(fashion_folder, tmp_path, micro_zoo):
    from timm_gkt.cli.config import parse_args
    from timm_gkt.data.plan import check_data, open_data
    from timm_gkt.data.unreadable import check_unreadable
    from timm_gkt.models.load import load_model
    root = damaged_copy(fashion_folder, tmp_path, {'validation': 1})
    config = parse_args(['--model', f'local-dir:{micro_zoo / "q_cnn"}', '--dataset', 'folder', '--data-dir', str(root)])
    student = load_model(config.model)
    split = open_data(config, check_data(config), student, say=lambda line: None).eval
    ds, bad = split.dataset, str(sorted((root / 'validation').rglob('*.png'))[0].relative_to(root / 'validation'))
    first = [ds.dataset[i][1] for i in range(1, 3)]  # item 0 is the damaged file
    assert [ds[i][1] for i in range(3)] == [first[0], *first]  # item 0 answers as item 1, timm's neighbour
    said = []
    check_unreadable(split, None, said.append)
    assert split.unreadable == {'count': 1, 'of': 200, 'examples': [bad]}
    assert said == [f'warning: 1 of 200 images of the eval split validation (0.5%) could not be read ({bad}); each '
                    f'was replaced by the next readable image, as timm does']
    check_unreadable(split, None, said.append)
    assert len(said) == 1  # reported once, not after every pass
    assert split.record()['unreadable']['count'] == 1


@pytest.mark.slow
def test_a_run_reports_them_and_stops_above_one_percent(fashion_folder, tmp_path, micro_zoo, capsys):
    argv = ['--model', f'local-dir:{micro_zoo / "q_cnn"}', '--teachers', f'local-dir:{micro_zoo / "q_mlp"}',
            '--dataset', 'folder', '--epochs', '1', '-b', '32', '--output', str(tmp_path / 'out')]
    few = damaged_copy(fashion_folder, tmp_path / 'few', {'train': 1, 'validation': 2})
    assert train.main([*argv, '--data-dir', str(few), '--experiment', 'few']) == 0
    out = capsys.readouterr()
    r = json.loads((tmp_path / 'out' / 'few' / 'results.json').read_text())
    assert (r['data']['train']['unreadable']['count'], r['data']['eval']['unreadable']['count']) == (1, 2)
    assert 'unreadable images, each replaced by the next readable one: train 1 of 120, eval 2 of 200' in out.out
    assert 'warning: 2 of 200 images of the eval split validation (1%) could not be read' in out.out
    assert 'Skipped sample' not in out.err  # timm's own warning, inside a progress bar, no more
    many = damaged_copy(fashion_folder, tmp_path / 'many', {'validation': 3})
    assert train.main([*argv, '--data-dir', str(many), '--experiment', 'many']) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert [line for line in err if 'error:' in line] == [err[-1]]
    assert err[-1].startswith('error: 3 of 200 images of the eval split validation (1.5%) could not be read (')
    assert err[-1].endswith('more than 1% is not a few damaged files and the results would not be about these '
                            'images: fix or remove them and run again')
    assert not (tmp_path / 'out' / 'many').exists()  # found by the "before" evaluation, before the run folder

