"""scripts/polish_zoo.py's bookkeeping on hand-made round results: the plateau rule, the committed round records,
and --apply (which weights go into the zoo, which checks into index.json). No training."""
from __future__ import annotations

import json

import pytest

from conftest import import_script

polish = import_script('polish_zoo')


def fake_round(out, name, k, before, after, p=0.5):
    folder = out / name / f'round{k}'
    (folder / 'export').mkdir(parents=True)
    (folder / 'export' / 'model.safetensors').write_bytes(f'weights after round {k}'.encode())
    results = {'student': f'local-dir:{name}', 'method': 'ce', 'top1_before': before, 'top1_after': after,
               'transfer_delta': after - before, 'knowledge_gain': 1.0, 'knowledge_loss': 0.5, 'gains': 100,
               'losses': 50, 'p_value': p, 'seed': 0, 'hyperparameters': {'lr': 1e-3}, 'versions': {'torch': 'x'},
               'epochs': [{'epoch': 1, 'seconds': 30.0}, {'epoch': 2, 'seconds': 31.5}]}
    (folder / 'results.json').write_text(json.dumps(results))


@pytest.fixture
def setup(tmp_path, monkeypatch):
    out, zoo = tmp_path / 'polish', tmp_path / 'zoo'
    (zoo / 'm').mkdir(parents=True)
    (zoo / 'm' / 'model.safetensors').write_bytes(b'original')
    (zoo / 'index.json').write_text(json.dumps({'models': [{'name': 'm', 'test_top1': 85.0}, {'name': 'n'}]}))
    monkeypatch.setattr(polish, 'RECORDS', tmp_path / 'records')
    return out, zoo, tmp_path / 'records'


def test_rounds_and_the_plateau_rule(setup):
    out, _, _ = setup
    assert polish.rounds(out, 'm') == [] and not polish.plateau_reached([])
    fake_round(out, 'm', 1, 85.0, 85.5)
    fake_round(out, 'm', 2, 85.5, 85.71)
    done = polish.rounds(out, 'm')
    assert [d['round'] for d in done] == [1, 2] and done[0]['seconds'] == 61.5
    assert not polish.plateau_reached(done)  # +0.21 moves it by more than 0.2
    fake_round(out, 'm', 3, 85.71, 85.51)
    assert polish.plateau_reached(polish.rounds(out, 'm'))  # -0.20 is within the rule, both ways


def test_each_round_leaves_a_small_record_and_apply_takes_the_weights_the_check_started_from(setup):
    out, zoo, records = setup
    for k, (before, after) in enumerate([(85.0, 85.9), (85.9, 86.3), (86.3, 86.4)], start=1):
        fake_round(out, 'm', k, before, after)
        polish.record_round(out, 'm', k)
    record = json.loads((records / 'm' / 'round3.json').read_text())
    assert set(record) == set(polish.RECORD_KEYS) and record['top1_after'] == 86.4  # no versions, no paths added
    polish.apply(out, zoo, 'm')
    assert (zoo / 'm' / 'model.safetensors').read_bytes() == b'weights after round 2'
    entry = json.loads((zoo / 'index.json').read_text())['models'][0]
    assert entry['test_top1'] == 86.3 and entry['study_plateau']['polish_rounds'] == 2
    assert [c['round'] for c in entry['study_plateau']['checks']] == [1, 2, 3]
    assert entry['study_plateau']['final_delta'] == pytest.approx(0.1)


def test_apply_refuses_a_model_without_a_plateau_and_changes_nothing(setup):
    out, zoo, _ = setup
    fake_round(out, 'm', 1, 85.0, 85.9)
    index = (zoo / 'index.json').read_text()
    with pytest.raises(SystemExit, match='no plateau yet'):
        polish.apply(out, zoo, 'm')
    assert (zoo / 'index.json').read_text() == index and (zoo / 'm' / 'model.safetensors').read_bytes() == b'original'
