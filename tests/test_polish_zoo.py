"""studies/zoo/polish.py's bookkeeping on hand-made round results: the plateau rule, the committed round records,
and --apply (which weights go into the zoo, which checks into index.json). No training."""
from __future__ import annotations

import importlib

import json

import pytest


polish = importlib.import_module('studies.zoo.polish')


def fake_round(out, name, k, before, after, p=0.5):
    folder = out / name / f'round{k}'
    (folder / 'export').mkdir(parents=True)
    (folder / 'export' / 'model.safetensors').write_bytes(f'weights after round {k}'.encode())
    (folder / 'export' / 'config.json').write_text(json.dumps({'architecture': 'm', 'round': k}))
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


def test_each_round_leaves_a_small_record_and_apply_takes_the_weights_the_check_started_from(setup, tmp_path):
    out, zoo, records = setup
    for k, (before, after) in enumerate([(85.0, 85.9), (85.9, 86.3), (86.3, 86.4)], start=1):
        fake_round(out, 'm', k, before, after)
        polish.record_round(out, 'm', k)
    assert (records / 'm' / 'round2' / 'model.safetensors').is_file()
    record = json.loads((records / 'm' / 'round3.json').read_text())
    assert set(record) == set(polish.RECORD_KEYS) and record['top1_after'] == 86.4  # no versions, no paths added
    polish.apply(out, zoo, 'm')
    assert (zoo / 'm' / 'model.safetensors').read_bytes() == b'weights after round 2'
    assert not list((records / 'm').glob('round*/'))  # the zoo holds them now; the records stay
    assert sorted(p.name for p in (records / 'm').iterdir()) == ['round1.json', 'round2.json', 'round3.json']
    # a new machine has only the records and the zoo: nothing needs re-making, --rebuild would train nothing
    assert polish.applied_rounds(zoo, 'm') == 2 and polish.missing_weights(tmp_path / 'fresh_cache', zoo, 'm') == []
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


def test_a_new_machine_reads_the_committed_rounds_and_starts_from_the_committed_weights(setup, tmp_path):
    out, zoo, records = setup
    for k, (before, after) in enumerate([(85.0, 85.9), (85.9, 86.3)], start=1):
        fake_round(out, 'm', k, before, after)
        polish.record_round(out, 'm', k)
    assert (records / 'm' / 'round2' / 'model.safetensors').read_bytes() == b'weights after round 2'
    assert json.loads((records / 'm' / 'round2' / 'config.json').read_text())['round'] == 2
    fresh = tmp_path / 'fresh_cache'  # what a new machine has: the committed records, no run folders
    assert [(d['round'], d['top1_after'], d['gains']) for d in polish.rounds(fresh, 'm')] == [(1, 85.9, 100),
                                                                                              (2, 86.3, 100)]
    assert polish.model_of_round(fresh, zoo, 'm', 1) == f'local-dir:{zoo / "m"}'
    assert polish.model_of_round(fresh, zoo, 'm', 3) == f'local-dir:{records / "m" / "round2"}'
    assert polish.model_of_round(out, zoo, 'm', 3) == f'local-dir:{out / "m" / "round2" / "export"}'  # cache first
    assert polish.missing_weights(fresh, zoo, 'm') == []
    (records / 'm' / 'round1' / 'model.safetensors').unlink()  # a round committed before weights were kept
    assert polish.missing_weights(fresh, zoo, 'm') == [1] and polish.missing_weights(out, zoo, 'm') == []


def test_rebuild_re_runs_only_rounds_without_weights_and_says_whether_the_record_was_reproduced(setup, tmp_path,
                                                                                              monkeypatch, capsys):
    out, zoo, records = setup
    for k, (before, after) in enumerate([(85.0, 85.9), (85.9, 86.3), (86.3, 86.4)], start=1):
        fake_round(out, 'm', k, before, after)
        polish.record_round(out, 'm', k)
    for k in (1, 2):
        (records / 'm' / f'round{k}' / 'model.safetensors').unlink()
    fresh = tmp_path / 'fresh_cache'
    rerun = {1: (85.0, 85.9), 2: (85.9, 86.28)}  # round 1 comes out the same, round 2 two images lower
    started = []

    def fake_run_round(out_, zoo_, data_dir, name, k, threads):
        started.append((k, polish.model_of_round(out_, zoo_, name, k)))
        fake_round(out_, name, k, *rerun[k])
        polish.record_round(out_, name, k)
        return polish.rounds(out_, name)[k - 1]

    monkeypatch.setattr(polish, 'run_round', fake_run_round)
    polish.main(['--zoo', str(zoo), '--out', str(fresh), '--only', 'm', '--rebuild'])
    # round 3 is the plateau check: nothing starts from it, so it is not re-run
    assert started == [(1, f'local-dir:{zoo / "m"}'), (2, f'local-dir:{fresh / "m" / "round1" / "export"}')]
    said = capsys.readouterr().out
    assert 'm round 1 rebuilt: reproduced the record (85.90, 100 gains / 50 losses)' in said
    assert 'm round 2 rebuilt: record 85.90 -> 86.30 (100/50), now 85.90 -> 86.28 (100/50)' in said
    assert json.loads((records / 'm' / 'round2.json').read_text())['top1_after'] == 86.28
    assert polish.missing_weights(fresh, zoo, 'm') == []
