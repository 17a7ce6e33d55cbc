"""``python -m timm_gkt.upgrade`` (timm_gkt/cli/upgrade.py, timm_gkt/hub/upgrades.py) against the offline Hub: the
backbone's fine-tunes found through the Hub's model listing, one better, one equal and one worse candidate compared
by hand, a foreign repository without a card never listed, ``--pull``, and every bad input in one sentence with
nothing downloaded."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from conftest import export_tiny_model
from hubkit import fakehub, hf_env, make_results  # noqa: F401  (fixtures)
from test_train import own_predictions

from timm_gkt import upgrade
from timm_gkt.cli import boundary

pytestmark = pytest.mark.slow
BACKBONE = 'alice/q-backbone'
QUICK = ['--eval-subset', '2000', '--seed', '3']  # 2000 images: q_cnn's lead over q_mlp is significant


@pytest.fixture
def hub_cache(hf_env, tmp_path):
    """Downloads go to a cache of this test only."""
    import huggingface_hub.constants as hf_constants
    hf_env.setattr(hf_constants, 'HF_HUB_CACHE', str(tmp_path / 'hf_cache'))
    return tmp_path / 'hf_cache'


def model_files(folder: Path) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in ('config.json', 'model.safetensors')}


def push_candidate(hub, tmp_path: Path, repo_id: str, model_dir: Path, claimed: float, teacher: str) -> None:
    """A timm_gkt upgrade of the backbone as train.py pushes it: export (with its lineage), results, card."""
    from timm_gkt.hub.publish import push_export
    from timm_gkt.models.load import load_model
    from timm_gkt.transfer.rundir import export_student
    lineage = [{'generation': 1, 'student': f'hf-hub:{BACKBONE}', 'teachers': [f'local-dir:zoo/{teacher}'],
                'method': 'kldp', 'transfer_delta': 0.5, 'top1_after': claimed}]
    export = tmp_path / 'exports' / repo_id.replace('/', '_')
    student = load_model(f'local-dir:{model_dir}')
    export_student(student.model, student, export, lineage)
    source = {'spec': f'hf-hub:{BACKBONE}', 'source': 'hf-hub', 'revision': None, 'hub_id': BACKBONE, 'license': None}
    results = make_results(student=f'hf-hub:{BACKBONE}', student_source=source, top1_after=claimed, lineage=lineage)
    (export / 'results.json').write_text(json.dumps(results))
    push_export(export, repo_id, endpoint=hub.url)


@pytest.fixture
def zoo_hub(fakehub, hub_cache, micro_zoo, tmp_path):  # noqa: F811
    """The backbone (q_mlp), three timm_gkt upgrades (q_cnn: better, q_mlp again: equal, q_vit: worse), a foreign
    fine-tune with a card but five classes, and a foreign copy of q_cnn without a card."""
    fakehub.add_repo(BACKBONE, model_files(micro_zoo / 'q_mlp'))
    push_candidate(fakehub, tmp_path, 'alice/q-better', micro_zoo / 'q_cnn', 75.0, 'q_cnn')
    push_candidate(fakehub, tmp_path, 'alice/q-same', micro_zoo / 'q_mlp', 70.5, 'q_vit')
    push_candidate(fakehub, tmp_path, 'alice/q-worse', micro_zoo / 'q_vit', 40.0, 'q_cnn')
    five = tmp_path / 'five'
    export_tiny_model(five, label_names=['a', 'b', 'c', 'd', 'e'])
    card = f'---\nbase_model: {BACKBONE}\nlibrary_name: timm\n---\n# five classes\n'.encode()
    fakehub.add_repo('bob/five-classes', {**model_files(five), 'README.md': card})
    fakehub.add_repo('bob/no-card', model_files(micro_zoo / 'q_cnn'))
    fakehub.requests.clear()
    return fakehub


def weight_downloads(hub) -> list[str]:
    return [c for c in hub.calls() if c.startswith('GET ') and c.endswith(('.safetensors', '.bin'))]


def run_upgrade(data_dir, hub, *extra) -> int:
    return upgrade.main(['--model', f'hf-hub:{BACKBONE}', '--data-dir', str(data_dir), '--endpoint', hub.url, *QUICK,
                         *extra])


def test_upgrade_table_compares_every_candidate_with_the_backbone_by_hand(zoo_hub, micro_zoo, data_dir, capsys,
                                                                         tmp_path):
    assert run_upgrade(data_dir, zoo_hub) == boundary.EXIT_OK
    out = capsys.readouterr().out.splitlines()
    # the Hub's own search, with the base-model filter huggingface_hub sends
    listing = [r for r in zoo_hub.requests if r.path == '/api/models']
    assert len(listing) == 1 and listing[0].query['filter'] == [f'base_model:finetune:{BACKBONE}']
    backbone, target = own_predictions(f'local-dir:{micro_zoo / "q_mlp"}', data_dir, n=2000)
    assert out[0] == (f'backbone {BACKBONE}: top-1 {100 * (backbone == target).double().mean().item():.2f} on 2000 '
                      f'images of torch/fashion_mnist test (a seeded subset of its 10000)')
    claimed = next(i for i, line in enumerate(out) if line.startswith('claimed: '))
    rows = {line.split()[0]: line for line in out[2:claimed]}
    assert list(rows) == ['alice/q-better', 'alice/q-same', 'alice/q-worse', 'bob/five-classes']  # no bob/no-card
    for repo, model, claimed, verdict in [('alice/q-better', 'q_cnn', '75.00', 'better than the backbone'),
                                          ('alice/q-same', 'q_mlp', '70.50', 'no better than the backbone'),
                                          ('alice/q-worse', 'q_vit', '40.00', 'worse than the backbone')]:
        pred, _ = own_predictions(f'local-dir:{micro_zoo / model}', data_dir, n=2000)
        gains = int(((pred == target) & (backbone != target)).sum())
        losses = int(((pred != target) & (backbone == target)).sum())
        n, k = gains + losses, min(gains, losses)
        p = min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n) if n else 1.0
        from timm_gkt.report.results import pvalue_text
        top1 = 100 * (pred == target).double().mean().item()
        assert rows[repo].split()[1:6] == [claimed, f'{top1:.2f}', f'{100 * (gains - losses) / 2000:+.2f}', '(p',
                                           '=']
        assert f'(p = {pvalue_text(p)})' in rows[repo] and verdict in rows[repo]
    assert 'KL + DP from q_cnn, gen 1' in rows['alice/q-better'] and '(p = 1)' in rows['alice/q-same']
    assert rows['bob/five-classes'].split()[1:3] == ['–', '–']
    assert 'not compared: another label space: 5 classes, the backbone 10' in rows['bob/five-classes']
    # nothing of the five-class model but its config was downloaded; nothing pulled without --pull
    assert not any('five-classes' in c for c in weight_downloads(zoo_hub)) and not (tmp_path / 'upgrades').exists()
    assert out[-1] == 'alice/q-better is better than the backbone on these images; --pull copies it here'


def test_pull_copies_the_best_significantly_better_candidate_and_prints_how_to_load_it(zoo_hub, micro_zoo, data_dir,
                                                                                      capsys, tmp_path):
    import timm
    import torch
    pulled = tmp_path / 'upgrades'
    assert run_upgrade(data_dir, zoo_hub, '--pull', '--pull-dir', str(pulled)) == boundary.EXIT_OK
    out = capsys.readouterr().out.splitlines()
    folder = pulled / 'q-better'
    assert out[-1] == f"model = timm.create_model('local-dir:{folder}', pretrained=True)"
    assert out[-2].startswith(f'pulled alice/q-better@{zoo_hub.repos["alice/q-better"].refs["main"][:12]} (better '
                              f'than the backbone: +')
    assert {'config.json', 'model.safetensors', 'README.md', 'results.json'} <= {p.name for p in folder.iterdir()}
    model = timm.create_model(f'local-dir:{folder}', pretrained=True).eval()
    original = timm.create_model(f'local-dir:{micro_zoo / "q_cnn"}', pretrained=True).eval()
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(model(x), original(x))


def test_pull_without_a_significantly_better_candidate_pulls_nothing(fakehub, hub_cache, micro_zoo, data_dir,  # noqa: F811
                                                                    capsys, tmp_path):
    fakehub.add_repo(BACKBONE, model_files(micro_zoo / 'q_mlp'))
    push_candidate(fakehub, tmp_path, 'alice/q-same', micro_zoo / 'q_mlp', 70.5, 'q_vit')
    assert run_upgrade(data_dir, fakehub, '--pull', '--pull-dir', str(tmp_path / 'upgrades')) == \
        boundary.EXIT_NOT_IMPROVED
    assert 'nothing pulled: no candidate is significantly better than the backbone' in capsys.readouterr().out
    assert not (tmp_path / 'upgrades').exists()


def one_foreign_candidate(hub, files: dict, micro_zoo) -> None:
    hub.add_repo(BACKBONE, model_files(micro_zoo / 'q_mlp'))
    card = f'---\nbase_model: {BACKBONE}\nbase_model_relation: finetune\nlibrary_name: timm\n---\n'.encode()
    hub.add_repo('bob/candidate', {**files, 'README.md': card})


@pytest.mark.parametrize('case, words', [
    ('no backbone', 'error: backbone alice/q-backbone is not on the Hub (or is private); check the repository id'),
    ('no candidate', 'error: the Hub lists no model fine-tuned from alice/q-backbone (no card names it as its '
                     'base_model)'),
    ('other labels', 'error: the only candidate of alice/q-backbone does not predict its classes (bob/candidate: '
                     'another label space: 5 classes, the backbone 10); an upgrade must predict the backbone\'s classes'),
    ('no weights', 'error: the only candidate of alice/q-backbone has no weights that load (bob/candidate: its weights '
                   'do not load: it has none of model.safetensors, pytorch_model.bin)'),
    ('local backbone', 'error: local-dir:q_mlp is a local folder, which no Hub card can name as its base model'),
])
def test_bad_input_is_one_sentence_exit_2_and_downloads_no_weights(fakehub, hub_cache, micro_zoo, data_dir, capsys,  # noqa: F811
                                                                   tmp_path, case, words):
    five = tmp_path / 'five'
    export_tiny_model(five, label_names=['a', 'b', 'c', 'd', 'e'])
    if case == 'no candidate':
        fakehub.add_repo(BACKBONE, model_files(micro_zoo / 'q_mlp'))
    elif case == 'other labels':
        one_foreign_candidate(fakehub, model_files(five), micro_zoo)
    elif case == 'no weights':
        one_foreign_candidate(fakehub, {'config.json': (micro_zoo / 'q_cnn' / 'config.json').read_bytes()}, micro_zoo)
    argv = ['--model', 'local-dir:q_mlp'] if case == 'local backbone' else []
    code = upgrade.main(['--model', f'hf-hub:{BACKBONE}', '--data-dir', str(data_dir), '--endpoint', fakehub.url,
                         *QUICK, *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == boundary.EXIT_BAD_INPUT and len(err) == 1 and err[0].startswith(words)
    # config files at most: no weights asked for, none in the cache
    assert weight_downloads(fakehub) == []
    assert not any(p.stat().st_size > 10_000 for p in hub_cache.rglob('*') if p.is_file())


def test_a_candidate_whose_weights_do_not_load_is_listed_and_alone_it_is_bad_input(fakehub, hub_cache, micro_zoo,  # noqa: F811
                                                                                   data_dir, capsys, tmp_path):
    broken = {'config.json': (micro_zoo / 'q_cnn' / 'config.json').read_bytes(), 'model.safetensors': b'\x08' * 64}
    one_foreign_candidate(fakehub, broken, micro_zoo)
    assert run_upgrade(data_dir, fakehub) == boundary.EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith('error: the only candidate of alice/q-backbone has no weights that load (bob/candidate: its '
                          'weights do not load (')
    push_candidate(fakehub, tmp_path, 'alice/q-better', micro_zoo / 'q_cnn', 75.0, 'q_cnn')
    assert run_upgrade(data_dir, fakehub) == boundary.EXIT_OK
    rows = [line for line in capsys.readouterr().out.splitlines()[2:] if line.startswith(('alice/', 'bob/'))][:2]
    assert [row.split()[0] for row in rows] == ['alice/q-better', 'bob/candidate']
    assert 'not compared: its weights do not load (' in rows[1]
