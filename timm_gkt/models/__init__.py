"""Models: specs (a timm name, ``hf-hub:ORG/REPO``, ``local-dir:PATH``) resolved once, weights found without a
download, models created with their own head and preprocessing, and the frozen models a transfer reads from.

- :mod:`.spec`: :class:`ModelSpec`, the one parser of the prefixes; the paper's short names (no torch);
- :mod:`.weights`: are the weights there? decided in seconds;
- :mod:`.load`: :func:`load_model`, :class:`Preprocessing`, :class:`InputAdaptor`, label permutations;
- :mod:`.frozen`: teachers and the frozen student (:class:`Teacher`, :class:`FrozenModel`).

Layer rule: models imports nothing from data, transfer, cache, hub or cli.
"""
from .._lazy import lazy_names, names_of
from .spec import HF_HUB, LOCAL_DIR, TIMM, ModelSpec, parse_spec, resolve_spec, short_name

_LAZY = names_of({
    '.weights': ('WeightsCheck', 'check_local_dir', 'check_weights_available'),
    '.load': ('InputAdaptor', 'Preprocessing', 'ResolvedModel', 'check_model_spec', 'count_parameters',
              'image_mode_for_channels', 'label_permutation', 'load_model', 'model_label_names', 'read_model_config'),
    '.frozen': ('FrozenModel', 'FrozenModels', 'InStudentOrder', 'Teacher', 'frozen_copy', 'stage_frozen_models'),
})
__getattr__ = lazy_names(__name__, _LAZY)
__all__ = ['HF_HUB', 'LOCAL_DIR', 'TIMM', 'ModelSpec', 'parse_spec', 'resolve_spec', 'short_name', *_LAZY]
