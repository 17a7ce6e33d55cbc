"""Transfer: the paper's objectives and this project's, as timm training tasks, run stage by stage.

- :mod:`.objectives`: losses and routing masks as pure tensor functions;
- :mod:`.tasks`: the objectives as ``timm.task.TrainingTask`` subclasses;
- :mod:`.methods`: the registry, one :class:`Method` per ``--transfer-method`` (no torch);
- :mod:`.stages`: how many stages, in which order, how many updates, MCL's τ;
- :mod:`.engine`: the "before" evaluation and the stages (Accelerate); :mod:`.rundir`: the run folder.

Layer rule: transfer imports models, data and evaluation, never cli, hub or cache (the engine is handed a
cache object by the CLI).
"""
from .._lazy import lazy_names, names_of
from .methods import DEFAULT_METHOD, METHODS, Method, create_task, get_method, methods_using

_LAZY = names_of({
    '.objectives': ('cross_entropy', 'flip_routing_counts', 'kl_div_loss', 'kldp_loss', 'parallel_kldp_loss',
                    'partitioned_targets', 'route_among', 'route_to_teacher', 'true_class_probability', 'xekl_loss'),
    '.tasks': ('CrossEntropyTask', 'KLDPTask', 'KLDistillationTask', 'ParallelKLDPTask', 'TransferTask', 'XEKLMCLTask',
               'XEKLTask'),
    '.stages': ('MULTI_TEACHER_MODES', 'TEACHER_ORDERS', 'Stage', 'order_teachers', 'plan_stages',
                'scaled_mcl_momentum', 'soup', 'updates_per_epoch'),
    '.engine': ('Baseline', 'Transfer', 'create_train_loader', 'measure_baseline', 'order_stages', 'run_stages'),
    '.rundir': ('export_student',),
})
__getattr__ = lazy_names(__name__, _LAZY)
__all__ = ['DEFAULT_METHOD', 'METHODS', 'Method', 'create_task', 'get_method', 'methods_using', *_LAZY]
