"""scripts/pilot.py's run specs and run names: what a spec on the command line trains, and under which name its
record is kept (a finished record is what makes a run skipped). No training."""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import import_script

pilot = import_script('pilot')
VIT_A = pilot.Student('vit_a_r2', Path('start'), Path('check'))


@pytest.mark.parametrize('spec, parsed, name', [
    ('resnet_a:kldp', ('resnet_a', 'kldp', '1e-3', ''), 'vit_a_r2__resnet_a__kldp'),
    ('resnet_a:kldp@3e-3', ('resnet_a', 'kldp', '3e-3', ''), 'vit_a_r2__resnet_a__kldp__lr3e-3'),
    ('resnet_a:kldp/T2', ('resnet_a', 'kldp', '1e-3', '2'), 'vit_a_r2__resnet_a__kldp__T2'),
    ('vit_b:kl@1e-4/T0.5', ('vit_b', 'kl', '1e-4', '0.5'), 'vit_a_r2__vit_b__kl__lr1e-4__T0.5'),
    ('ce', ('-', 'ce', '1e-3', ''), 'vit_a_r2__ce'),
    ('ce@3e-3', ('-', 'ce', '3e-3', ''), 'vit_a_r2__ce__lr3e-3'),
])
def test_specs_parse_into_the_names_their_records_keep(spec, parsed, name):
    teacher, method, lr, temperature = pilot.parse_spec(spec)
    assert (teacher, method, lr, temperature) == parsed
    assert pilot.run_name(VIT_A, teacher, method, lr, False, temperature) == name
    assert pilot.run_name(VIT_A, teacher, method, lr, True, temperature) == name + '__val'
    assert pilot._lr_of(name) == lr  # the paired comparison finds the control of the run's lr by name


@pytest.mark.parametrize('spec', ['resnet_a', 'resnet_a:', ':kldp', 'ce/T2', 'resnet_a:kldp/2', 'resnet_a:kldp/T0',
                                  'resnet_a:kldp/Tx', 'resnet_a:ce'])
def test_bad_specs_stop_with_the_grammar(spec):
    with pytest.raises(SystemExit, match=r'write TEACHER:METHOD\[@LR\]\[/T<temperature>\]'):
        pilot.parse_spec(spec)
