"""Data: where the images come from, which of them a run reads, and what their labels mean.

- :mod:`.sources`: Fashion-MNIST offline, timm's ``create_dataset`` with split slices, per-model views;
- :mod:`.splits`: split names and HF-style slices (``train[:55000]``), checked to exist and not to overlap;
- :mod:`.labels`: class names of every dataset kind, matched to a model's, targets remapped into its order;
- :mod:`.subsets`: seeded class-stratified subsets; :mod:`.plan`: preflight's data step (all of the above);
- :mod:`.replay`: augmentation as a pure function of (seed, epoch, index); :mod:`.memory`: ``--data-in-memory``;
- :mod:`.unreadable`: images that cannot be read, counted and named instead of silently replaced.

Layer rule: data imports models (class names, channel modes) and nothing from transfer, cache, hub or cli.
"""
from .._lazy import lazy_names, names_of

_LAZY = names_of({
    '.sources': ('FASHION_MNIST_LABELS', 'FASHION_MNIST_MEAN', 'FASHION_MNIST_STD', 'ModeDataset', 'MultiViewDataset',
                 'create_image_dataset', 'fashion_mnist_ready', 'load_fashion_mnist_tensors', 'prepare_fashion_mnist'),
    '.splits': ('apply_slice', 'dataset_kind', 'default_val_split', 'parse_split', 'resolve_split', 'take_slice'),
    '.labels': ('align_dataset_labels', 'dataset_label_names', 'match_label_space', 'read_class_map'),
    '.subsets': ('stratified_order', 'stratified_subset_indices', 'take_subset', 'targets_as_seen'),
    '.unreadable': ('CountedReads', 'MAX_UNREADABLE_SHARE', 'check_unreadable'),
    '.plan': ('EvalFlags', 'RunData', 'SplitData', 'check_data', 'open_data', 'open_eval_data'),
    '.replay': ('ReplayDataset',),
    '.memory': ('InMemoryLoader', 'create_memory_loader'),
})
__getattr__ = lazy_names(__name__, _LAZY)
__all__ = list(_LAZY)
