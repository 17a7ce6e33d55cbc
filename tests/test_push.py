"""``python -m timm_gkt.push`` (timm_gkt/push.py): exit codes, messages, the step summary, as a module in a
subprocess, against the in-process fake Hub."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hubkit import (  # noqa: F401  (fixtures)
    PUSHED, TOKEN, assert_no_token_anywhere, fakehub, hf_env, make_results, make_run, model,
)

from timm_gkt import hub as gkt_hub
from timm_gkt import push as gkt_push

ROOT = Path(__file__).resolve().parents[1]


def test_cli_exit_codes(hf_env, fakehub, tmp_path, model, capsys):
    good = make_run(tmp_path / 'good', make_results(), model)
    worse = make_run(tmp_path / 'worse', make_results(top1_after=84.9, transfer_delta=-0.2, gains=70, losses=90),
                     model)
    url = ['--endpoint', fakehub.url]

    assert gkt_push.main([str(worse), 'alice/worse', *url]) == gkt_hub.EXIT_NOT_IMPROVED == 3
    err = capsys.readouterr().err
    assert 'Not pushed: Δtransf = -0.20 points on the test split (85.10% -> 84.90%)' in err
    assert fakehub.requests == [] and fakehub.repos == {}  # refused: not even an empty repo

    assert gkt_push.main([str(worse), 'alice/worse', '--min-delta', '-0.5', *url]) == gkt_hub.EXIT_PUSHED
    assert gkt_push.main([str(good), 'alice/good', '--max-p-value', '0.0001', *url]) == 3
    assert gkt_push.main([str(good), 'alice/good', *url]) == gkt_hub.EXIT_PUSHED == 0
    out = capsys.readouterr().out
    assert f'Pushed {good / "export"} to alice/good: {fakehub.url}/alice/good/commit/' in out

    assert gkt_push.main([str(tmp_path / 'missing'), 'alice/good', *url]) == gkt_hub.EXIT_ERROR == 1
    assert 'results.json does not exist' in capsys.readouterr().err
    hf_env.setenv('HF_TOKEN', 'hf_wrong')
    assert gkt_push.main([str(good), 'alice/good', *url]) == 1
    assert 'token was rejected' in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        gkt_push.main([str(good)])
    assert usage.value.code == 2


@pytest.mark.slow  # a subprocess imports torch and timm
def test_cli_as_module_in_a_subprocess(fakehub, tmp_path, model):
    good = make_run(tmp_path / 'good', make_results(), model)
    worse = make_run(tmp_path / 'worse', make_results(top1_after=84.9, transfer_delta=-0.2), model)
    env = {k: v for k, v in os.environ.items() if not k.startswith(('HF_', 'HUGGING', 'GITHUB_'))}
    env.update(HF_TOKEN=TOKEN, HF_HOME=str(tmp_path / 'hf_home'), PYTHONPATH=str(ROOT),
               GITHUB_STEP_SUMMARY=str(tmp_path / 'summary.md'))

    def cli(*args):
        return subprocess.run([sys.executable, '-m', 'timm_gkt.push', *map(str, args), '--endpoint', fakehub.url],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)

    refused = cli(worse, 'alice/vit_a-gkt')
    assert refused.returncode == 3, refused.stderr
    pushed = cli(good, 'alice/vit_a-gkt')
    assert pushed.returncode == 0, pushed.stderr
    assert set(fakehub.files('alice/vit_a-gkt')) == PUSHED | {'.gitattributes'}
    summary = (tmp_path / 'summary.md').read_text()
    assert summary.count('### timm_gkt: vit_a ← convnext_a') == 2
    assert '**Decision:** Not pushed: Δtransf = -0.20' in summary and '**Decision:** Pushed' in summary
    assert_no_token_anywhere(good, worse, tmp_path / 'hf_home', hub=fakehub,
                             text=refused.stdout + refused.stderr + pushed.stdout + pushed.stderr + summary)


def test_cli_beat_control_exits_4_when_the_student_is_no_better_than_more_training(hf_env, fakehub, tmp_path, model,
                                                                                    capsys):
    run = make_run(tmp_path / 'run', make_results(vs_control={'delta': 0.05, 'p_value': 0.7}), model)
    url = ['--endpoint', fakehub.url]
    assert gkt_push.main([str(run), 'alice/run', '--beat-control', *url]) == gkt_hub.EXIT_NOT_BETTER_THAN_CONTROL == 4
    assert 'Not pushed: the student is no better than more training: +0.05 points' in capsys.readouterr().err
    assert fakehub.requests == []
    assert gkt_push.main([str(run), 'alice/run', *url]) == gkt_hub.EXIT_PUSHED
