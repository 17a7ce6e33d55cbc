"""The flags of the decisions a run can take for its user: is the transfer better than more training
(``--control ce``, ``--push-beat-control``).

Each bad combination is refused before anything is loaded, in one sentence ``<what is wrong>; <how to fix it>``.
What the control costs is said here too, once, for the dry run and for the start of a real run.
No import of :mod:`.config` (it imports this module).
"""
from __future__ import annotations

from ..errors import ConfigError


def check_decision_flags(config) -> None:
    """The control: combinations that cannot work."""
    method = config.method
    if config.control and not method.needs_teacher:
        raise ConfigError(f'--control {config.control} compares a transfer with more training, and --transfer-method '
                          f'{method.name} is that training already; drop --control, or choose a transfer method')
    if config.push_beat_control and not config.control:
        raise ConfigError('--push-beat-control compares the student with the CE control, which only --control ce '
                          'trains; add --control ce (one more training run), or drop --push-beat-control')


def control_cost(config, stages: int) -> str:
    """What ``--control ce`` costs, said before any training (and by ``--dry-run``)."""
    return (f'  control: plain cross-entropy from the same student, data order, seed and budget ({stages} stage(s) '
            f'of {config.epochs} epoch(s)), then a paired McNemar against the transferred student on the same '
            f'evaluation images. It is one more training run, about as long as the transfer without its teachers\' '
            f'forwards; the teacher cache does not help it. Its weights stay in the run folder (control/export), '
            f'never pushed')
