"""Flags, ``-c`` YAML configs and the frozen :class:`TransferConfig` every other module reads.

Flags follow timm's train.py names and meanings; transfer flags are grouped. The command
line is parsed once (timm's two-step parse: ``-c`` sets defaults, flags override) into an
immutable config. Values derived while running (the MCL τ actually used, resolved worker
counts) go into results.json, never back into the config, so the ``args.yaml`` a run
writes (:meth:`TransferConfig.to_yaml_dict`) is a ``-c`` config for the same run.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path


from .flags import (  # noqa: F401  (re-exported for the modules that read defaults from the config)
    DEBUG_ENV, DEFAULT_DATA_DIR, DEFAULT_DATASET, DEFAULT_LR, DEFAULT_OPT, DESCRIPTION, REFUSED_FLAGS, HelpFormatter,
    OneLineParser, build_parser,
)
from ..transfer.methods import DEFAULT_METHOD, METHODS, Method, get_method, methods_using
from ..models.spec import ModelSpec, resolve_spec
from ..errors import ConfigError
from .decisions import AUTO_TEACHERS, check_decision_flags, resolve_teachers, teacher_specs  # noqa: F401



@dataclass(frozen=True)
class TransferConfig:
    """Every flag of one run, typed and immutable (field names are the flags' dest names)."""
    model: ModelSpec
    teachers: tuple[ModelSpec, ...] = ()
    # dataset
    data_dir: str = DEFAULT_DATA_DIR
    dataset: str = DEFAULT_DATASET
    train_split: str = 'train'
    val_split: str = 'test'  # parse_args resolves the per-dataset default (timm_gkt.splits.default_val_split)
    class_map: str = ''
    trust_label_order: bool = False
    dataset_download: bool = False
    input_key: str | None = None  # hfds/ columns (timm's reader: 'image', 'label')
    target_key: str | None = None
    train_subset: int = 0
    eval_subset: int = 0
    data_in_memory: bool = False
    # model and loader
    pretrained: bool = True
    initial_checkpoint: str = ''
    resume: str = ''
    batch_size: int = 128
    validation_batch_size: int | None = None
    workers: int | None = None
    grad_accum_steps: int = 1
    # optimizer and schedule
    opt: str = DEFAULT_OPT
    lr: float | None = None
    momentum: float = 0.9
    weight_decay: float = 1e-4
    clip_grad: float | None = None
    sched: str = 'cosine'
    sched_on_updates: bool = True
    epochs: int = 2
    warmup_epochs: int = 0
    warmup_lr: float = 1e-5
    min_lr: float = 0.0
    # augmentation
    scale: tuple[float, float] = (1.0, 1.0)
    ratio: tuple[float, float] = (1.0, 1.0)
    hflip: float = 0.5
    vflip: float = 0.0
    color_jitter: float = 0.0
    aa: str | None = None
    reprob: float = 0.0
    mixup: float = 0.0
    cutmix: float = 0.0
    mixup_prob: float = 1.0
    smoothing: float = 0.0
    no_aug: bool = False
    # knowledge transfer
    transfer_method: str = DEFAULT_METHOD
    dp_mode: str = 'supervised'
    kd_temperature: float = 1.0
    xe_weight: float | None = None  # None: the method's own default (XE-KL 0.3, KL+DP 0)
    dp_routing: str = 'two-way'
    dp_calibration: str = 'none'
    dp_calibration_images: int = 2000
    mcl_momentum: float | None = None
    mcl_interval: int = 2
    multi_teacher: str = 'sequential'
    teacher_order: str = 'ascending'
    allow_below_chance: bool = False
    teacher_cache: str | None = None
    teacher_cache_storage: str = 'float32'
    dry_run: bool = False
    control: str | None = None  # the user's decisions (cli.decisions): the CE control, teachers from a pool
    teacher_pool: tuple[ModelSpec, ...] = ()  # --teachers auto
    max_teachers: int = 3
    selection_subset: int = 5000
    # hub
    push_to_hub: str | None = None
    hub_private: bool = False
    hub_revision: str | None = None
    hub_create_pr: bool = False
    push_min_delta: float = 0.0
    push_max_pvalue: float | None = None
    push_beat_control: bool = False
    # misc
    amp: bool = False
    amp_dtype: str = 'bfloat16'
    seed: int = 42
    log_interval: int = 50
    checkpoint_hist: int = 2
    output: str = 'output/train'
    experiment: str = ''
    debug: bool = False

    @classmethod
    def from_namespace(cls, ns: argparse.Namespace) -> 'TransferConfig':
        values = {f.name: getattr(ns, f.name) for f in dataclasses.fields(cls) if hasattr(ns, f.name)}
        # resolved once, here (the paper's short names included): the ModelSpec travels from here to the loss
        values['model'] = resolve_spec(ns.model)
        values['teachers'], values['teacher_pool'] = resolve_teachers(ns)  # --teachers auto: (), the pool
        values['scale'], values['ratio'] = tuple(ns.scale), tuple(ns.ratio)
        values['dataset'] = DEFAULT_DATASET if ns.dataset is None else ns.dataset
        values['data_dir'] = DEFAULT_DATA_DIR if ns.data_dir is None else str(ns.data_dir)
        if ns.val_split is None:
            from ..data.splits import default_val_split
            values['val_split'] = default_val_split(values['dataset'])
        return cls(**values)

    @property
    def method(self) -> Method:
        return get_method(self.transfer_method)

    @property
    def multi(self) -> str | None:
        """The multi-teacher mode, or None with a single teacher."""
        return self.multi_teacher if len(self.teachers) > 1 else None

    @property
    def auto_teachers(self) -> bool:  # --teachers auto (parse_args refuses a pool without it)
        return bool(self.teacher_pool)

    @property
    def teacher_candidates(self) -> tuple[ModelSpec, ...]:
        """The teachers preflight checks and loads: those given, or with ``--teachers auto`` the whole pool."""
        return self.teacher_pool or self.teachers

    @property
    def learning_rate(self) -> float:
        return DEFAULT_LR if self.lr is None else self.lr

    @property
    def eval_batch_size(self) -> int:
        return self.validation_batch_size or 2 * self.batch_size

    @property
    def loader_workers(self) -> int:
        if self.workers is not None:
            return self.workers
        # torch threads plus loader processes oversubscribe a 2-core machine (measured 163 vs 950 img/s)
        return 0 if (os.cpu_count() or 1) <= 2 else 4

    def hyperparameter(self, name: str):
        """A method hyperparameter as the run uses it: the flag's value, else the method's default."""
        value = getattr(self, name)
        return self.method.defaults.get(name) if value is None else value

    def task_hyperparameters(self) -> dict:
        """The values a method's task builder may read, by name (see :class:`~timm_gkt.transfer.methods.Method`)."""
        return {name: self.hyperparameter(name) for name in
                ('kd_temperature', 'xe_weight', 'mcl_momentum', 'mcl_interval', 'dp_mode', 'dp_routing',
                 'dp_calibration')}

    def to_yaml_dict(self) -> dict:
        """The run's flags as a ``-c`` config (specs as strings, tuples as lists)."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == 'model':
                value = value.text
            elif f.name in ('teachers', 'teacher_pool'):  # auto stays auto: the run's choice is in results.json
                value = AUTO_TEACHERS if f.name == 'teachers' and self.auto_teachers else [t.text for t in value]
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out


def parse_args(argv=None) -> TransferConfig:
    """timm's two-step parse: ``-c config.yaml`` sets defaults, the command line overrides them.

    Flags that contradict the data or cannot be honoured raise :class:`ConfigError` (one sentence);
    argparse's own usage errors (an unknown flag, a bad choice) exit 2 as usual.
    """
    config_parser = OneLineParser(add_help=False)
    config_parser.add_argument('-c', '--config', default='')
    config_args, remaining = config_parser.parse_known_args(argv)
    parser = build_parser()
    parser.add_argument('-c', '--config', default='',
                        help="YAML of flag defaults: a run's args.yaml, or one written by timm's train.py "
                             "(default: none)")
    if config_args.config:
        from .config_file import read_config_file
        parser.set_defaults(**read_config_file(parser, Path(config_args.config)))
    args = parser.parse_args(remaining)
    if not args.model:
        raise ConfigError('--model is required; give the student as a timm name, hf-hub:ORG/REPO or local-dir:PATH')
    for dest, why in REFUSED_FLAGS.items():
        if getattr(args, dest) not in (None, False, 0, 0.0):
            raise ConfigError(f'--{dest.replace("_", "-")} is not supported with transfer: {why}')
    check_dataset_named(args.dataset, args.data_dir)
    return TransferConfig.from_namespace(args)


def check_dataset_named(dataset: str | None, data_dir: str | None) -> None:
    """``--data-dir`` without ``--dataset`` is accepted only for a folder that holds Fashion-MNIST (the default
    dataset): for any other folder the run would copy Fashion-MNIST into it and evaluate on that instead."""
    if dataset is not None or data_dir is None:
        return
    from ..data.sources import fashion_mnist_ready
    if not fashion_mnist_ready(data_dir):
        raise ConfigError(f'--data-dir {data_dir} was given without --dataset and holds no Fashion-MNIST (the default '
                          f'dataset); name the data: --dataset folder for {data_dir}/train/<class>/<images>, '
                          f'--dataset hfds/NAME for a Hugging Face dataset, or --dataset {DEFAULT_DATASET} to put '
                          f'Fashion-MNIST there')


# Counts: the smallest value each accepts and how to fix a value below it (0 means "all" where it is allowed).
_COUNTS = {
    'batch_size': (1, 'give the number of images per process and step, e.g. -b 64'),
    'epochs': (1, 'give the number of epochs per stage, e.g. --epochs 2'),
    'grad_accum_steps': (1, 'use 1 for an optimizer update after every batch'),
    'mcl_interval': (1, 'interpolate the slow weights every N >= 1 optimizer updates (the paper uses 2)'),
    'log_interval': (1, 'give a positive number of batches'),
    'train_subset': (0, 'give a number of images, or 0 to use them all'),
    'eval_subset': (0, 'give a number of images, or 0 to use them all'),
    'warmup_epochs': (0, 'use 0 for no warm-up'),
    'dp_calibration_images': (100, 'give at least 100 transfer images to fit the temperatures on, e.g. 2000'),
    'checkpoint_hist': (0, 'give the number of epoch checkpoints to keep (0 keeps all)'),
}
# Fractions: (lowest, highest, whether the bounds are allowed, how to fix).
_RANGES = {
    'momentum': (0.0, 1.0, (True, False), 'use a value in [0, 1), e.g. --momentum 0.9'),
    'hflip': (0.0, 1.0, (True, True), 'give a probability in [0, 1]'),
    'vflip': (0.0, 1.0, (True, True), 'give a probability in [0, 1]'),
    'reprob': (0.0, 1.0, (True, True), 'give a probability in [0, 1]'),
    'mixup_prob': (0.0, 1.0, (True, True), 'give a probability in [0, 1]'),
    'smoothing': (0.0, 1.0, (True, False), 'give a value in [0, 1), e.g. --smoothing 0.1'),
}
_NON_NEGATIVE = ('weight_decay', 'min_lr', 'warmup_lr', 'mixup', 'cutmix', 'color_jitter')


def flag_name(dest: str) -> str:
    return '--' + dest.replace('_', '-')


def check_values(config: TransferConfig) -> None:
    """Numbers outside what they can mean (ConfigError, ``<what is wrong>; <how to fix it>``)."""
    for name, (lowest, fix) in _COUNTS.items():
        value = getattr(config, name)
        if value < lowest:
            raise ConfigError(f'{flag_name(name)} {value} is {"zero" if value == 0 else "negative"}; {fix}')
    for name in ('validation_batch_size', 'workers'):
        value = getattr(config, name)
        if value is not None and value < (1 if name == 'validation_batch_size' else 0):
            raise ConfigError(f'{flag_name(name)} {value} is {"zero" if value == 0 else "negative"}; '
                              f'give a positive number or leave it out for the default')
    for name, (low, high, (low_ok, high_ok), fix) in _RANGES.items():
        value = getattr(config, name)
        if value < low or value > high or (value == low and not low_ok) or (value == high and not high_ok):
            raise ConfigError(f'{flag_name(name)} {value} is out of range; {fix}')
    for name in _NON_NEGATIVE:
        if getattr(config, name) < 0:
            raise ConfigError(f'{flag_name(name)} {getattr(config, name)} is negative; give 0 or more')
    if config.lr is not None and config.lr <= 0:
        raise ConfigError(f'--lr {config.lr} is not positive; give the absolute learning rate, e.g. --lr 1e-3')
    if config.clip_grad is not None and config.clip_grad <= 0:
        raise ConfigError(f'--clip-grad {config.clip_grad} is not positive; give a gradient norm, or leave it out')
    if not 0.0 < config.scale[0] <= config.scale[1] <= 1.0:
        raise ConfigError(f'--scale {config.scale[0]} {config.scale[1]} is not a crop area range; '
                          f'give MIN MAX with 0 < MIN <= MAX <= 1, e.g. --scale 0.8 1')
    if not 0.0 < config.ratio[0] <= config.ratio[1]:
        raise ConfigError(f'--ratio {config.ratio[0]} {config.ratio[1]} is not an aspect ratio range; '
                          f'give MIN MAX with 0 < MIN <= MAX, e.g. --ratio 0.75 1.33')
    if config.push_max_pvalue is not None and not 0.0 < config.push_max_pvalue <= 1.0:
        raise ConfigError(f'--push-max-pvalue {config.push_max_pvalue} is not a p-value; give one in (0, 1], '
                          f'e.g. 0.05')
    if not 0 <= config.seed < 2 ** 32:
        raise ConfigError(f'--seed {config.seed} is out of range; give a seed in [0, 2^32)')


def check_flags(config: TransferConfig) -> None:
    """Flag values and combinations that cannot work, refused before anything is loaded (ConfigError, one sentence)."""
    check_values(config)
    check_decision_flags(config)
    method = config.method
    if method.needs_teacher and not (config.teachers or config.auto_teachers):
        raise ConfigError(f'--transfer-method {method.name} needs a teacher: add --teachers SPEC[,SPEC...].')
    if config.multi == 'parallel' and not method.routes_samples:
        routers = [m for m in METHODS.values() if m.routes_samples]
        raise ConfigError(f'--multi-teacher parallel routes samples between teachers, which only '
                          f'{" or ".join(m.title.replace(" ", "") for m in routers)} does; use --transfer-method '
                          f'{" or ".join(m.name for m in routers)} or --multi-teacher sequential.')
    _check_method_flag(method, 'dp_mode', config.dp_mode != 'supervised')
    _check_method_flag(method, 'mcl_momentum', config.mcl_momentum is not None)
    _check_method_flag(method, 'xe_weight', config.xe_weight is not None)
    _check_method_flag(method, 'dp_routing', config.dp_routing != 'two-way')
    _check_method_flag(method, 'dp_calibration', config.dp_calibration != 'none')
    if config.mcl_momentum is not None and not 0.0 < config.mcl_momentum < 1.0:
        raise ConfigError('--mcl-momentum must lie strictly between 0 and 1.')
    if config.kd_temperature <= 0:
        raise ConfigError('--kd-temperature must be positive.')
    if config.xe_weight is not None and not 0.0 <= config.xe_weight <= 1.0:
        raise ConfigError('--xe-weight must lie in [0, 1].')
    if method.check is not None:
        method.check({**config.task_hyperparameters(), 'multi_teacher': config.multi})
    if config.smoothing and not (config.mixup > 0 or config.cutmix > 0):
        raise ConfigError(f'--smoothing {config.smoothing} smooths mixup/cutmix targets, and neither is on; '
                          f'add --mixup or --cutmix, or leave --smoothing out')
    if config.data_in_memory:
        from ..data.memory import unsupported_augmentation
        bad = unsupported_augmentation(config)
        if bad:
            raise ConfigError(f'--data-in-memory replays flips only, not {", ".join(bad)}; use --scale 1 1 '
                              f'--ratio 1 1 without colour jitter, AutoAugment or erasing, or drop --data-in-memory.')
    if config.initial_checkpoint and not Path(config.initial_checkpoint).is_file():
        raise ConfigError(f'--initial-checkpoint {config.initial_checkpoint} does not exist; give a checkpoint file '
                          f'of the student.')
    if config.teacher_cache and (config.mixup > 0 or config.cutmix > 0):
        # a cached output belongs to one augmented sample; mixup shows the teacher a new random blend every time
        raise ConfigError('--teacher-cache stores one teacher output per augmented sample but --mixup/--cutmix show '
                          'the teachers random blends of two samples; drop --mixup/--cutmix or --teacher-cache.')
    if config.resume == 'auto' and not config.experiment:
        raise ConfigError('--resume auto needs --experiment NAME to know which run to continue.')


def _check_method_flag(method: Method, hyperparameter: str, given: bool) -> None:
    if given and not method.uses(hyperparameter):
        users = ', '.join(methods_using(hyperparameter))
        raise ConfigError(f'--{hyperparameter.replace("_", "-")} applies to --transfer-method {users} only.')
