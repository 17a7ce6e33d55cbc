"""The teacher-output cache: a frozen model's logits per (epoch, sample) and every model's "before" predictions.

- :mod:`.keys`: what decides a set of outputs, hashed into a :class:`CacheKey`;
- :mod:`.store`: the folder (:class:`TeacherCache`), storage formats, all-or-nothing files;
- :mod:`.frozen`: frozen models that read and fill it, and :class:`RunCache`, what a run's engine calls.

Layer rule: cache imports models, data and evaluation; transfer never imports it.
"""
from .._lazy import lazy_names, names_of

_LAZY = names_of({
    '.keys': ('CacheKey', 'eval_predictions_key', 'train_outputs_key'),
    '.store': ('CachedOutputs', 'TeacherCache', 'check_cache_dir', 'storage_format'),
    '.frozen': ('CachedFrozenModel', 'RunCache', 'bind_batch', 'cache_frozen_models', 'cache_report', 'cached_batch',
                'cached_frozen_model', 'cached_predict', 'commit_cached'),
})
__getattr__ = lazy_names(__name__, _LAZY)
__all__ = list(_LAZY)
