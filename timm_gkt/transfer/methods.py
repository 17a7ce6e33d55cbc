"""The transfer methods of METHOD.md, one registry entry each: everything the rest of timm_gkt knows about a method.

The CLI choices, the flag checks, the dry-run plan, the stage planner, results.json, the
model card and the study all read a :class:`Method`; nothing else compares method names.
Adding a method is one builder and one entry here.

No torch import at module level (the Hub side reads titles and descriptions without it);
the task classes are imported when a task is built.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

from ..errors import ConfigError

DEFAULT_METHOD = 'kldp'


@dataclass(frozen=True)
class Method:
    """One ``--transfer-method``.

    ``hyperparameters`` names the config fields the method's task reads (and so the ones
    results.json and the card report for it); ``routes_samples`` means it picks a target
    per sample among several models, which is what parallel multi-teacher transfer needs.
    """
    name: str
    title: str
    description: str
    build: Callable[..., object]
    needs_teacher: bool = True
    needs_frozen_student: bool = False
    routes_samples: bool = False
    hyperparameters: tuple[str, ...] = ()
    defaults: Mapping[str, object] = field(default_factory=dict)  # a hyperparameter's value when no flag sets it
    check: Callable[[Mapping[str, object]], None] | None = None  # refuses option combinations (BadInput)

    def uses(self, hyperparameter: str) -> bool:
        return hyperparameter in self.hyperparameters

    def title_with(self, options: Mapping[str, object]) -> str:
        """The title, naming this project's extensions where ``options`` (the run's hyperparameters) turn one on:
        a run of them is not the paper's method and must not be reported as if it were."""
        parts = []
        if self.name == 'kldp':
            if options.get('xe_weight'):
                parts.append(f"{options['xe_weight']:g} CE")
            if options.get('dp_routing', 'two-way') != 'two-way':
                parts.append(f"{options['dp_routing']} routing")
            if options.get('dp_calibration', 'none') != 'none':
                parts.append('calibrated routing')
        return f'{self.title} ({", ".join(parts)}; this project\'s extension)' if parts else self.title


# Builders: the stage's student, teachers and frozen student, the number of optimizer updates the stage makes
# (``updates``: what a method that follows the run length needs), and keyword arguments only, each taking
# exactly its method's hyperparameters.

def _build_ce(student, teachers, frozen_student, *, updates=None):
    from .tasks import CrossEntropyTask
    return CrossEntropyTask(student)


def _build_kl(student, teachers, frozen_student, *, updates=None, kd_temperature=1.0):
    from .tasks import KLDistillationTask
    return KLDistillationTask(student, teachers[0], kd_temperature)


def _build_xekl(student, teachers, frozen_student, *, updates=None, kd_temperature=1.0, xe_weight=0.3):
    from .tasks import XEKLTask
    return XEKLTask(student, teachers[0], kd_temperature, xe_weight)


def _build_xekl_mcl(student, teachers, frozen_student, *, updates=None, kd_temperature=1.0, xe_weight=0.3,
                    mcl_momentum=None, mcl_interval=2):
    """τ given, or scaled to the stage's ``updates`` so the slow copy keeps the paper's share of the initial
    student (:func:`~timm_gkt.transfer.stages.scaled_mcl_momentum`); a scaled τ is reported as derived."""
    from .stages import PAPER_MOMENTUM, scaled_mcl_momentum
    from .tasks import XEKLMCLTask
    if mcl_momentum is None:
        momentum = scaled_mcl_momentum(updates, mcl_interval) if updates else PAPER_MOMENTUM
    else:
        momentum = mcl_momentum
    task = XEKLMCLTask(student, teachers[0], kd_temperature, xe_weight, momentum, mcl_interval)
    if mcl_momentum is None:
        task.derived['mcl_momentum'] = momentum
    return task


def _build_kldp(student, teachers, frozen_student, *, updates=None, kd_temperature=1.0, dp_mode='supervised',
                xe_weight=0.0, dp_routing='two-way', dp_calibration='none', calibration=None):
    """The paper's KL+DP, or with this project's options (METHOD.md, "Extensions under study"); ``calibration``
    holds the fitted (T_teacher, T_frozen_student) when ``dp_calibration`` is 'temperature'."""
    from .tasks import KLDPTask, ParallelKLDPTask
    if len(teachers) > 1:
        return ParallelKLDPTask(student, teachers, frozen_student, kd_temperature, dp_mode, xe_weight=xe_weight)
    if dp_calibration != 'none' and calibration is None:
        raise ValueError('dp_calibration needs the fitted temperatures (calibration=(T_teacher, T_frozen_student))')
    task = KLDPTask(student, teachers[0], frozen_student, kd_temperature, dp_mode, xe_weight=xe_weight,
                    routing=dp_routing, calibration=calibration if dp_calibration != 'none' else (1.0, 1.0))
    if dp_calibration != 'none':
        task.derived['calibration'] = {'teacher': calibration[0], 'frozen_student': calibration[1]}
    return task


def _check_kldp(options: Mapping[str, object]) -> None:
    """What KL+DP's options cannot do: without labels nothing that reads them, and with several teachers routed in
    parallel only the label term (three-way, soft and calibrated routing are defined for one teacher)."""
    xe_weight, routing = options.get('xe_weight') or 0.0, options.get('dp_routing', 'two-way')
    calibration, parallel = options.get('dp_calibration', 'none'), options.get('multi_teacher') == 'parallel'
    if options.get('dp_mode') == 'unsupervised':
        uses_labels = [flag for flag, on in (('--xe-weight', xe_weight > 0), ('--dp-routing ' + str(routing),
                                             routing != 'two-way'), ('--dp-calibration', calibration != 'none')) if on]
        if uses_labels:
            raise ConfigError(f'{uses_labels[0]} needs the labels, which --dp-mode unsupervised does not use; '
                              f'drop it or route supervised')
    if parallel and (routing != 'two-way' or calibration != 'none'):
        raise ConfigError(f'--dp-routing {routing} and --dp-calibration route between one teacher and the frozen '
                          f'student; with --multi-teacher parallel use --multi-teacher sequential, or drop them')


METHODS: dict[str, Method] = {m.name: m for m in (
    Method(
        'ce', 'CE control (no teacher)',
        'CE control: the student trained further with plain cross-entropy and no teacher, the baseline that tells '
        'transfer apart from more training.',
        _build_ce, needs_teacher=False),
    Method(
        'kl', 'KL-Dist',
        'KL-Dist: the student is distilled towards the teacher on every image; without a safeguard this can '
        'overwrite what the student knew.',
        _build_kl, hyperparameters=('kd_temperature',)),
    Method(
        'xekl', 'XE-KL',
        'XE-KL: distillation towards the teacher mixed with cross-entropy on the labels.',
        _build_xekl, hyperparameters=('kd_temperature', 'xe_weight'), defaults={'xe_weight': 0.3}),
    Method(
        'xekl-mcl', 'XE-KL + MCL',
        'XE-KL + MCL: XE-KL on a fast copy of the student while a slow copy, updated by momentum '
        'interpolation of the weights, is evaluated and exported, which limits forgetting.',
        _build_xekl_mcl, hyperparameters=('kd_temperature', 'xe_weight', 'mcl_momentum', 'mcl_interval'),
        defaults={'xe_weight': 0.3}),
    Method(
        'kldp', 'KL + DP',
        'KL + DP (data partitioning): every training image is distilled from whichever of the teacher and the '
        'frozen initial student is more confident (in the true class when supervised), so the student learns '
        'from the teacher only where the teacher knows better and keeps its own predictions elsewhere.',
        _build_kldp, needs_frozen_student=True, routes_samples=True,
        hyperparameters=('kd_temperature', 'dp_mode', 'xe_weight', 'dp_routing', 'dp_calibration'),
        defaults={'xe_weight': 0.0}, check=_check_kldp),
)}


def get_method(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f'Unknown transfer method {name!r}; choose one of {", ".join(METHODS)}.') from None


def methods_using(hyperparameter: str) -> list[str]:
    """Names of the methods that read a hyperparameter (for flag errors such as '--dp-mode applies to ...')."""
    return [m.name for m in METHODS.values() if m.uses(hyperparameter)]


def create_task(method: str | Method, student, teachers: Sequence, frozen_student, updates: int | None = None,
                calibration: tuple[float, float] | None = None, **hyperparameters: object):
    """The method's TrainingTask for a stage of ``updates`` optimizer updates; ``hyperparameters`` may hold more
    than the method reads (the rest is ignored; None means the method's default). ``calibration`` carries the
    fitted temperatures of a method that routes on calibrated probabilities. Values the builder derived (a
    scaled MCL τ, the temperatures) are in ``task.derived``."""
    method = method if isinstance(method, Method) else get_method(method)
    own: dict[str, object] = {k: hyperparameters[k] for k in method.hyperparameters
                              if hyperparameters.get(k) is not None}
    if method.uses('dp_calibration'):
        own['calibration'] = calibration
    return method.build(student, list(teachers), frozen_student, updates=updates, **own)
