"""``-c args.yaml`` written by timm's own train.py: which keys timm_gkt uses, ignores, or refuses.

timm's train.py dumps every argument (``yaml.safe_dump(args.__dict__)``), ~170 keys, most
at timm's defaults. Rules, for a config that holds keys only timm knows ("timm-style"):

- setup keys (model, dataset, data folder, splits, class map) describe the user's data and
  model: used whenever set;
- a timm key at timm's default carries no choice of the user's: dropped, so timm_gkt's own
  default applies (timm's ``epochs: 300`` or ``smoothing: 0.1`` must not become the transfer's);
- a timm key the user changed: used when timm_gkt has the flag; listed in ONE warning line
  when it is deliberately ignored (hardware, logging, schedule shapes, regularisers of a
  from-scratch run, timm's run folder and checkpoints); an error when ignoring it would
  change what a model sees or what a label means (mean/std, losses, timm's own distillation);
- keys neither timm nor timm_gkt knows are errors.

A config with only timm_gkt keys (timm_gkt's own args.yaml) is used as it is, every key.
``TIMM_TRAIN_DEFAULTS`` is the union of timm train.py's arguments, v1.0.15 to 2026-08
(a key's newest default), read from timm's argument parser.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping
from ..errors import TimmConfigError



TIMM_TRAIN_DEFAULTS: dict[str, Any] = {
    'aa': None, 'amp': False, 'amp_dtype': 'float16', 'amp_impl': 'native', 'aug_repeats': 0, 'aug_splits': 0,
    'batch_size': 128, 'bce_loss': False, 'bce_pos_weight': None, 'bce_sum': False, 'bce_target_thresh': None,
    'bn_eps': None, 'bn_momentum': None, 'channels_last': False, 'checkpoint_hist': 10, 'class_map': '',
    'clip_grad': None, 'clip_mode': 'norm', 'color_jitter': 0.4, 'color_jitter_prob': None, 'cooldown_epochs': 0,
    'crop_pct': None, 'cutmix': 0.0, 'cutmix_minmax': None, 'data': None, 'data_dir': None, 'dataset': '',
    'dataset_download': False, 'dataset_trust_remote_code': False, 'decay_epochs': 90,
    'decay_milestones': [90, 180, 270], 'decay_rate': 0.1, 'device': 'cuda', 'device_modules': None,
    'dist_bn': 'reduce', 'distill_loss_weight': None, 'drop': 0.0, 'drop_block': None, 'drop_connect': None,
    'drop_path': None, 'epoch_repeats': 0.0, 'epochs': 300, 'eval_metric': 'top1', 'experiment': '',
    'fast_norm': False, 'fuser': '', 'gaussian_blur_prob': None, 'gp': None, 'grad_accum_steps': 1,
    'grad_checkpointing': False, 'grayscale_prob': None, 'head_init_bias': None, 'head_init_scale': None,
    'hflip': 0.5, 'img_size': None, 'in_chans': None, 'initial_checkpoint': '', 'input_img_mode': None,
    'input_key': None, 'input_size': None, 'interpolation': '', 'jsd_loss': False, 'kd_distill_type': 'logit',
    'kd_loss_type': 'kl', 'kd_model_name': None, 'kd_student_feature_dim': None, 'kd_teacher_feature_dim': None,
    'kd_temperature': 4.0, 'kd_token_distill_type': 'soft', 'layer_decay': None, 'layer_decay_min_scale': 0,
    'layer_decay_no_opt_scale': None, 'local_rank': 0, 'log_interval': 50, 'log_wandb': False, 'lr': None,
    'lr_base': 0.1, 'lr_base_scale': '', 'lr_base_size': 256, 'lr_cycle_decay': 0.5, 'lr_cycle_limit': 1,
    'lr_cycle_mul': 1.0, 'lr_k_decay': 1.0, 'lr_noise': None, 'lr_noise_pct': 0.67, 'lr_noise_std': 1.0,
    'mean': None, 'min_lr': 0, 'mixup': 0.0, 'mixup_mode': 'batch', 'mixup_off_epoch': 0, 'mixup_prob': 1.0,
    'mixup_switch_prob': 0.5, 'model': 'resnet50', 'model_dtype': None, 'model_ema': False,
    'model_ema_decay': 0.9998, 'model_ema_force_cpu': False, 'model_ema_warmup': False, 'model_kwargs': {},
    'momentum': 0.9, 'naflex_loader': False, 'naflex_loss_scale': 'linear', 'naflex_max_seq_len': 576,
    'naflex_patch_size_probs': None, 'naflex_patch_sizes': None, 'naflex_patchify_channels_first': False,
    'naflex_train_seq_lens': [128, 256, 576, 784, 1024], 'no_aug': False, 'no_ddp_bb': False, 'no_prefetcher': False,
    'no_resume_opt': False, 'num_classes': None, 'opt': 'sgd', 'opt_betas': None, 'opt_eps': None, 'opt_kwargs': {},
    'output': '', 'patience_epochs': 10, 'pin_mem': False, 'pretrained': False, 'pretrained_path': None,
    'ratio': [0.75, 1.3333333333333333], 'recount': 1, 'recovery_interval': 0, 'remode': 'pixel', 'reprob': 0.0,
    'resplit': False, 'resume': '', 'save_images': False, 'scale': [0.08, 1.0], 'sched': 'cosine',
    'sched_on_updates': False, 'seed': 42, 'smoothing': 0.1, 'split_bn': False, 'start_epoch': None, 'std': None,
    'sync_bn': False, 'synchronize_step': False, 'target_key': None, 'task_loss_weight': None, 'torchcompile': None,
    'torchcompile_mode': None, 'torchscript': False, 'train_batch_sizes': None, 'train_batches_per_epoch': None,
    'train_crop_mode': None, 'train_img_sizes': None, 'train_interpolation': 'random', 'train_num_samples': None,
    'train_size_probs': None, 'train_size_random_mix': 0.1, 'train_size_schedule': 'constant',
    'train_size_schedule_spread': 0.65, 'train_split': 'train', 'tta': 0, 'use_multi_epochs_loader': False,
    'val_interval': 1, 'val_num_samples': None, 'val_split': 'validation', 'validation_batch_size': None,
    'variable_batch_loss_scale': 'none', 'vflip': 0.0, 'wandb_project': None, 'wandb_resume_id': '',
    'wandb_tags': [], 'warmup_epochs': 5, 'warmup_lr': 1e-05, 'warmup_prefix': False, 'weight_decay': 2e-05,
    'worker_seeding': 'all', 'workers': 4,}

# timm key -> timm_gkt flag where the names differ (timm's positional DIR is the old --data-dir)
TIMM_RENAMED = {'data': 'data_dir'}

# describe the user's model and data, not a recipe: used whenever they hold a value
TIMM_SETUP_KEYS = frozenset({'model', 'dataset', 'data', 'data_dir', 'train_split', 'val_split', 'class_map',
                             'dataset_download', 'input_key', 'target_key'})

# timm_gkt has these flags, but in timm's args.yaml they name timm's own run, not this one
TIMM_RUN_KEYS = {
    'initial_checkpoint': 'the weights timm\'s run started from, not its result (pass the trained checkpoint as '
                          '--initial-checkpoint or the export as local-dir:)',
    'resume': 'a timm checkpoint; --resume takes a timm_gkt checkpoint folder',
    'output': 'timm\'s output folder', 'experiment': 'timm\'s run name',
}

_HARDWARE = 'hardware and speed settings; Accelerate decides these'
_LOGGING = 'logging and checkpointing of timm\'s run'
_SCHEDULE = 'schedule shape details of a from-scratch run; the transfer uses --sched, --warmup-epochs, --min-lr'
_AUGMENT = 'augmentation details beyond the supported flags'
_REGULARISE = 'regularisation set when a model is created for training from scratch; models are created as pretrained'
_EMA = ('timm\'s weight EMA; the transfer keeps its own slow weights where the method has them '
        '(--transfer-method xekl-mcl)')

# deliberately ignored when set: one warning line lists them
TIMM_IGNORED_KEYS: dict[str, str] = {
    **dict.fromkeys(('device', 'local_rank', 'device_modules', 'channels_last', 'fuser', 'torchscript', 'torchcompile',
                     'torchcompile_mode', 'no_ddp_bb', 'synchronize_step', 'pin_mem', 'no_prefetcher',
                     'use_multi_epochs_loader', 'worker_seeding', 'amp_impl', 'model_dtype', 'grad_checkpointing',
                     'fast_norm', 'dist_bn', 'sync_bn'), _HARDWARE),
    **dict.fromkeys(('log_wandb', 'wandb_project', 'wandb_tags', 'wandb_resume_id', 'save_images',
                     'recovery_interval', 'eval_metric', 'val_interval', 'no_resume_opt', 'start_epoch'),
                    _LOGGING),
    **dict.fromkeys(('lr_noise', 'lr_noise_pct', 'lr_noise_std', 'lr_cycle_mul', 'lr_cycle_decay', 'lr_cycle_limit',
                     'lr_k_decay', 'decay_epochs', 'decay_milestones', 'decay_rate', 'cooldown_epochs',
                     'patience_epochs', 'warmup_prefix', 'epoch_repeats', 'lr_base', 'lr_base_size', 'lr_base_scale',
                     'layer_decay', 'layer_decay_min_scale', 'layer_decay_no_opt_scale', 'opt_eps', 'opt_betas',
                     'opt_kwargs', 'clip_mode', 'train_batches_per_epoch'), _SCHEDULE),
    **dict.fromkeys(('color_jitter_prob', 'grayscale_prob', 'gaussian_blur_prob', 'train_crop_mode',
                     'train_interpolation', 'remode', 'recount', 'mixup_mode', 'mixup_switch_prob', 'mixup_off_epoch',
                     'cutmix_minmax', 'aug_repeats', 'train_img_sizes', 'train_batch_sizes', 'train_size_probs',
                     'train_size_schedule', 'train_size_schedule_spread', 'train_size_random_mix',
                     'variable_batch_loss_scale'), _AUGMENT),
    **dict.fromkeys(('drop', 'drop_path', 'drop_block', 'drop_connect', 'bn_momentum', 'bn_eps', 'head_init_scale',
                     'head_init_bias'), _REGULARISE),
    **dict.fromkeys(('model_ema', 'model_ema_decay', 'model_ema_force_cpu', 'model_ema_warmup'), _EMA),
    # used (as --smoothing, the mixup/cutmix targets' smoothing) when the config turns mixup or cutmix on
    'smoothing': 'label smoothing of the student\'s own training; transfer targets come from the models',
    'num_classes': 'the class count comes from the model and is checked against the dataset',
    'tta': 'test-time augmentation; every model is evaluated through its own eval transform',
    'train_num_samples': 'sizes of streamed datasets; use --train-subset', 'val_num_samples': 'use --eval-subset',
}

_PREPROCESS = ('changes the preprocessing the student was trained with; timm_gkt takes it from each model\'s '
               'pretrained config (export the model with it, e.g. timm.models.save_for_hf)')
_LOSS = 'a training loss timm_gkt does not implement; the transfer objective is --transfer-method'
_KD = 'timm\'s own distillation; pass the teacher as --teachers and choose --transfer-method'
# changing these would change what a model sees or what a label means: an error when set
TIMM_REFUSED_KEYS: dict[str, str] = {
    **dict.fromkeys(('mean', 'std', 'crop_pct', 'interpolation', 'in_chans', 'input_size', 'img_size', 'gp',
                     'model_kwargs', 'naflex_loader', 'naflex_train_seq_lens', 'naflex_max_seq_len',
                     'naflex_patch_sizes', 'naflex_patch_size_probs', 'naflex_loss_scale',
                     'naflex_patchify_channels_first'), _PREPROCESS),
    **dict.fromkeys(('bce_loss', 'bce_sum', 'bce_target_thresh', 'bce_pos_weight', 'jsd_loss', 'aug_splits',
                     'split_bn', 'resplit'), _LOSS),
    **dict.fromkeys(('kd_model_name', 'kd_distill_type', 'kd_loss_type', 'kd_student_feature_dim',
                     'kd_teacher_feature_dim', 'kd_token_distill_type', 'distill_loss_weight', 'task_loss_weight'), _KD),
    'pretrained_path': 'loads other weights into the student; give them as local-dir: or --initial-checkpoint',
    'input_img_mode': 'the channel mode comes from each model\'s input size',
    'dataset_trust_remote_code': 'runs a dataset\'s loading script; convert the dataset to parquet or folders',
}


def _same(value, default) -> bool:
    if isinstance(value, (list, tuple)) and isinstance(default, (list, tuple)):
        return list(value) == list(default)
    return value == default


@dataclass
class ConfigKeys:
    """A config's keys sorted into what happens to them; ``used`` maps timm_gkt dests to values."""
    timm_style: bool
    used: dict[str, Any] = field(default_factory=dict)
    ignored: dict[str, str] = field(default_factory=dict)  # key -> why
    defaulted: list[str] = field(default_factory=list)  # timm keys at timm's default: timm_gkt's default applies
    refused: dict[str, str] = field(default_factory=dict)  # key -> why
    unknown: list[str] = field(default_factory=list)

    def warning(self) -> str | None:
        """The one warning line for deliberately ignored keys (None when there are none)."""
        if not self.ignored:
            return None
        return (f'warning: ignoring timm train.py settings timm_gkt does not use: {", ".join(sorted(self.ignored))} '
                f'(see timm_gkt.timm_config.TIMM_IGNORED_KEYS for why)')


def classify_config_keys(cfg: Mapping[str, Any], own_keys: Iterable[str]) -> ConfigKeys:
    """Sort the keys of a ``-c`` config by the rules in this module's docstring. Never raises."""
    own = set(own_keys)
    cfg = {str(k).replace('-', '_'): v for k, v in cfg.items()}
    timm_style = any(k in TIMM_TRAIN_DEFAULTS and TIMM_RENAMED.get(k, k) not in own for k in cfg)
    out = ConfigKeys(timm_style)
    for key, value in cfg.items():
        dest = TIMM_RENAMED.get(key, key)
        if not timm_style or key not in TIMM_TRAIN_DEFAULTS:
            if dest in own:
                out.used[dest] = value
            else:
                out.unknown.append(key)
        elif key in TIMM_SETUP_KEYS and dest in own:
            if value is None or (key in ('data', 'data_dir') and value == ''):
                out.defaulted.append(key)
            elif not (key == 'data' and cfg.get('data_dir')):  # timm: --data-dir wins over the positional DIR
                out.used[dest] = value
        elif _same(value, TIMM_TRAIN_DEFAULTS[key]):
            out.defaulted.append(key)
        elif key in TIMM_RUN_KEYS:
            out.ignored[key] = TIMM_RUN_KEYS[key]
        elif key == 'smoothing' and not (cfg.get('mixup') or cfg.get('cutmix')):
            out.ignored[key] = TIMM_IGNORED_KEYS[key]  # timm smooths its own CE; --smoothing only mixup targets
        elif dest in own:
            out.used[dest] = value
        elif key in TIMM_IGNORED_KEYS:
            out.ignored[key] = TIMM_IGNORED_KEYS[key]
        else:
            out.refused[key] = TIMM_REFUSED_KEYS.get(key, f'timm_gkt has no --{key.replace("_", "-")}')
    return out


def check_config_keys(cfg: Mapping[str, Any], own_keys: Iterable[str], source: str = 'the config') -> ConfigKeys:
    """:func:`classify_config_keys`, raising one sentence for unknown or refused keys."""
    keys = classify_config_keys(cfg, own_keys)
    if keys.unknown:
        raise TimmConfigError(f'unknown keys in {source}: {", ".join(sorted(keys.unknown))}; use timm_gkt\'s or '
                              f'timm train.py\'s flag names with _ for -')
    if keys.refused:
        key, why = sorted(keys.refused.items())[0]
        more = f' (also: {", ".join(sorted(keys.refused)[1:])})' if len(keys.refused) > 1 else ''
        raise TimmConfigError(f'{source} sets {key}: {cfg.get(key, cfg.get(key.replace("_", "-")))!r}, which '
                              f'timm_gkt cannot honour{more}; {why}, or remove the key')
    return keys
