"""The flags of the two decisions a run can take for its user: is the transfer better than more training
(``--control ce``, ``--push-beat-control``), and which teachers in which order (``--teachers auto``).

Each bad combination is refused before anything is loaded, in one sentence ``<what is wrong>; <how to fix it>``.
What the two decisions cost is said here too, once, for the dry run and for the start of a real run.
No import of :mod:`.config` (it imports this module).
"""
from __future__ import annotations

from ..errors import ConfigError

AUTO_TEACHERS = 'auto'


def teacher_specs(teachers: str, transfer_teacher=()) -> list[str]:
    # repeats are kept: preflight refuses them in one line instead of dropping one without a word
    return [t.strip() for t in (teachers or '').split(',') if t.strip()] + list(transfer_teacher)


def resolve_teachers(ns) -> tuple[tuple, tuple]:
    """(teachers, teacher pool) as resolved specs: with ``--teachers auto`` no teacher yet and the pool, else the
    teachers given (``--teachers`` and every ``--transfer-teacher``) and no pool."""
    from ..models.spec import resolve_spec
    auto = teacher_specs(ns.teachers) == [AUTO_TEACHERS]
    pool = tuple(resolve_spec(t) for t in teacher_specs(ns.teacher_pool))
    check_auto_teachers(auto, ns, pool)
    return (() if auto else tuple(resolve_spec(t) for t in teacher_specs(ns.teachers, ns.transfer_teacher))), pool


def check_auto_teachers(auto: bool, ns, pool: tuple) -> None:
    """``--teachers auto`` and ``--teacher-pool`` come together, and auto is the only teacher given."""
    given = [t.strip() for t in (ns.teachers or '').split(',') if t.strip()]
    if AUTO_TEACHERS in given and not auto:
        raise ConfigError(f'--teachers {ns.teachers} mixes auto with named teachers; give --teachers auto with the '
                          f'candidates in --teacher-pool, or name every teacher yourself')
    if auto and ns.transfer_teacher:
        raise ConfigError(f'--teachers auto chooses every teacher, so --transfer-teacher {ns.transfer_teacher[0]} '
                          f'cannot be added; put it into --teacher-pool, or drop it')
    if auto and not pool:
        raise ConfigError('--teachers auto chooses from --teacher-pool, which is empty; list the candidates, e.g. '
                          '--teacher-pool A,B,C')
    if pool and not auto:
        raise ConfigError('--teacher-pool lists candidates for --teachers auto, but the teachers were named; give '
                          '--teachers auto to choose from the pool, or drop --teacher-pool')


def check_decision_flags(config) -> None:
    """The control and the automatic choice: combinations that cannot work."""
    method = config.method
    if config.control and not method.needs_teacher:
        raise ConfigError(f'--control {config.control} compares a transfer with more training, and --transfer-method '
                          f'{method.name} is that training already; drop --control, or choose a transfer method')
    if config.push_beat_control and not config.control:
        raise ConfigError('--push-beat-control compares the student with the CE control, which only --control ce '
                          'trains; add --control ce (one more training run), or drop --push-beat-control')
    if not config.auto_teachers:
        return
    if not method.needs_teacher:
        raise ConfigError(f'--teachers auto chooses teachers, and --transfer-method {method.name} uses none; choose '
                          f'a transfer method, or drop --teachers auto and --teacher-pool')
    if config.multi_teacher != 'sequential':
        raise ConfigError(f'--teachers auto chooses the teachers and their order for a sequential run, not '
                          f'--multi-teacher {config.multi_teacher}; drop --multi-teacher, or name the teachers')
    if config.max_teachers < 1:
        raise ConfigError(f'--max-teachers {config.max_teachers} leaves no teacher to choose; give 1 or more')
    if config.selection_subset < 0:
        raise ConfigError(f'--selection-subset {config.selection_subset} is negative; give a number of images, or 0 '
                          f'to scan the whole transfer split')
    texts = [t.text for t in config.teacher_pool]
    if config.model.text in texts:
        raise ConfigError(f'--teacher-pool holds the student {config.model.text} itself; remove it from the pool')
    if len(set(texts)) != len(texts):
        raise ConfigError('--teacher-pool names a model twice; list each candidate once')


def control_cost(config, stages: int) -> str:
    """What ``--control ce`` costs, said before any training (and by ``--dry-run``)."""
    return (f'  control: plain cross-entropy from the same student, data order, seed and budget ({stages} stage(s) '
            f'of {config.epochs} epoch(s)), then a paired McNemar against the transferred student on the same '
            f'evaluation images. It is one more training run, about as long as the transfer without its teachers\' '
            f'forwards; the teacher cache does not help it. Its weights stay in the run folder (control/export), '
            f'never pushed')
