"""Label spaces: read a dataset's class names, match them to a model's, remap dataset targets.

Every dataset kind timm creates says which name each target index means, in its own way:
torchvision datasets have ``classes``; timm's folder and tar readers a ``class_to_idx`` sorted
by timm's ``natural_key`` (so ``T-shirt_top`` lands after ``Sneaker``); ``hfds/`` readers the
names of the label column's ``ClassLabel`` feature; ``--class-map`` (timm's file: one folder
name per line, line number = index, or a pickled dict) overrides the folder and hfds readers.

When the dataset orders its classes differently from the model, the DATASET targets are
remapped into the model's order (:class:`TargetRemap`), never the model's head: the student,
its teachers' permutations, the exported config.json ``label_names`` and every per-class
metric then all stay in the model's order, and an exported student still loads with timm
and predicts the names it says it predicts.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from ..errors import LabelSpaceError
from ..models.load import normalize_label_name  # one rule for dataset and teacher names


# ----------------------------------------------------------------------------- reading names

def read_class_map(path: str | Path, root: str | Path = '') -> dict:
    """timm's ``load_class_map`` with its failures turned into one sentence.

    A relative path is looked up as given, then under ``root`` (timm does the same).
    """
    from timm.data.readers.class_map import load_class_map
    text = str(path)
    found = Path(text) if Path(text).exists() else Path(root) / text
    if not found.is_file():
        raise LabelSpaceError(f'class map {text} does not exist; give a .txt file with one class '
                              f'(folder) name per line in the model\'s class order')
    if found.suffix.lower() not in ('.txt', '.pkl'):
        raise LabelSpaceError(f'class map {text} is neither .txt nor .pkl; write one class name per line '
                              f'into a .txt file, line number = class index')
    try:
        class_to_idx = load_class_map(str(found))
    except Exception as e:  # a broken pickle or bad encoding: the file is the user's to fix
        raise LabelSpaceError(f'class map {text} cannot be read ({type(e).__name__}: {e}); '
                              f'write one class name per line into a .txt file') from None
    if not class_to_idx:
        raise LabelSpaceError(f'class map {text} is empty; list one class name per line')
    return class_to_idx


def names_by_index(class_to_idx: Mapping, source: str, source_names: Mapping[int, str] | None = None) -> tuple[str, ...]:
    """``{name: index}`` as names in index order; indices must be 0..K-1, each used once.

    Integer keys (a class map keyed by the dataset's source index, as timm allows for hfds)
    are named through ``source_names``.
    """
    by_index: dict[int, str] = {}
    for key, index in class_to_idx.items():
        name = source_names.get(key, str(key)) if source_names and isinstance(key, int) else str(key)
        if index in by_index:
            raise LabelSpaceError(f'{source} maps both {by_index[index]!r} and {name!r} to class {index}; '
                                  f'give every class its own index')
        by_index[int(index)] = name
    expected = set(range(len(by_index)))
    if set(by_index) != expected:
        gaps = sorted(expected - set(by_index))[:3]
        raise LabelSpaceError(f'{source} leaves class indices {gaps} without a name; '
                              f'number the classes 0..{len(by_index) - 1} without gaps')
    return tuple(by_index[i] for i in range(len(by_index)))


def _inner_datasets(ds):
    """The dataset and every dataset it wraps (Subset, ModeDataset, MultiViewDataset, ...)."""
    seen = 0
    while ds is not None and seen < 16:
        yield ds
        ds, seen = getattr(ds, 'dataset', None), seen + 1


def dataset_label_names(ds) -> tuple[str, ...] | None:
    """Class names in target-index order for any map-style dataset timm or torchvision creates, else None."""
    for inner in _inner_datasets(ds):
        reader = getattr(inner, 'reader', None)
        if reader is not None and not isinstance(reader, str):
            class_to_idx = getattr(reader, 'class_to_idx', None) or getattr(reader, 'class_name_to_idx', None)
            if class_to_idx:
                return names_by_index(class_to_idx, 'the class map', getattr(reader, '_source_names', None))
            return None
        classes = getattr(inner, 'classes', None)
        if classes:
            return tuple(str(c) for c in classes)
    return None


def model_label_aliases(model) -> list[tuple[str, tuple[str, ...]]]:
    """The model's class names, as (what they are, names) lists to try in order.

    ``label_names`` from the pretrained config come first. An ImageNet model without them is
    named by timm's ImageNet metadata: WordNet ids (how ImageNet folders are named) and
    descriptions (how ``hfds/imagenet-1k`` names its classes).
    """
    from ..models.load import model_label_names
    names = model_label_names(model)
    if names:
        return [('label names', names)]
    from timm.data import ImageNetInfo, infer_imagenet_subset
    subset = infer_imagenet_subset(model)
    if subset is None:
        return []
    info = ImageNetInfo(subset)
    if info.num_classes() != getattr(model, 'num_classes', None):
        return []
    return [(f'{subset} WordNet ids', tuple(info.label_names())),
            (f'{subset} descriptions', tuple(info.label_descriptions()))]


# ----------------------------------------------------------------------------- matching

@dataclass(frozen=True)
class LabelMatch:
    """How a dataset split's targets relate to a model's classes.

    ``target_map[i]`` is the model class of dataset target ``i`` (None: the same order).
    """
    dataset: str
    model: str
    verified_by: str  # 'names', 'class map' or 'trusted order'
    target_map: tuple[int, ...] | None = None
    normalised: tuple[tuple[str, str], ...] = ()  # (dataset name, model name) matched only after normalising
    dataset_names: tuple[str, ...] | None = None
    model_names: tuple[str, ...] | None = field(default=None, repr=False)

    def describe(self) -> list[str]:
        """Log lines: how the order was checked, what was normalised, what moves."""
        if self.verified_by == 'trusted order':
            return [f'warning: {self.dataset} and {self.model}: class order not verified (--trust-label-order); '
                    f'target i is taken to be model class i']
        lines = [f'labels: {self.dataset} matches {self.model} by {self.verified_by}']
        if self.normalised:
            pairs = ', '.join(f'{d!r} = {m!r}' for d, m in self.normalised)
            lines.append(f'  {len(self.normalised)} name(s) matched after normalising case and _ / - spaces: {pairs}')
        if self.target_map is not None:
            moved = sum(i != j for i, j in enumerate(self.target_map))
            lines.append(f'  {self.dataset} orders its classes differently: {moved} of {len(self.target_map)} '
                         f'targets are remapped into {self.model}\'s class order')
        return lines


def _index_names(names: Sequence[str]) -> tuple[dict[str, int], dict[str, int | None]]:
    exact = {n: i for i, n in enumerate(names)}
    normal: dict[str, int | None] = {}
    for i, n in enumerate(names):
        key = normalize_label_name(n)
        normal[key] = None if key in normal else i  # None: ambiguous after normalising, exact names only
    return exact, normal


def match_names(model_names: Sequence[str], dataset_names: Sequence[str], *, model: str, dataset: str
                ) -> tuple[tuple[int, ...], tuple[tuple[str, str], ...]]:
    """Model class of every dataset class, by name; raise when the two sets differ.

    Returns (model index per dataset index, pairs matched only after normalisation).
    """
    exact, normal = _index_names(model_names)
    index, normalised, unmatched = [], [], []
    for name in dataset_names:
        i = exact.get(name)
        if i is None:
            i = normal.get(normalize_label_name(name))
            if i is not None:
                normalised.append((name, model_names[i]))
        if i is None:
            unmatched.append(name)
        index.append(i)
    if unmatched:
        hit = set(i for i in index if i is not None)
        spare = [n for i, n in enumerate(model_names) if i not in hit]
        raise LabelSpaceError(
            f'{dataset} has classes {model} does not predict ({", ".join(map(repr, unmatched[:3]))}; '
            f'{model} has {", ".join(map(repr, spare[:3])) or "no other classes"}); rename the class folders to '
            f'the model\'s label names or give --class-map FILE with the folder names in the model\'s class order')
    doubles = sorted({model_names[i] for i in index if index.count(i) > 1})
    if doubles:
        raise LabelSpaceError(f'several classes of {dataset} match {model}\'s class {doubles[0]!r}; '
                              f'give each class folder a distinct name')
    return tuple(index), tuple(normalised)


def match_label_space(
        model_aliases: Sequence[tuple[str, Sequence[str]]],
        dataset_names: Sequence[str] | None,
        num_classes: int,
        *,
        model: str,
        dataset: str,
        trust_order: bool = False,
        class_map: bool = False,
) -> LabelMatch:
    """Check that a dataset split's labels mean the model's classes; say how to remap its targets.

    Rules, in order: the class counts must agree; names are matched (exactly, else after
    :func:`normalize_label_name`) against each of the model's name lists; with ``class_map``
    the user's file fixes the order when names cannot; ``trust_order`` accepts target i as
    class i when nothing can be checked. Anything else raises one sentence.
    """
    dataset_names = tuple(dataset_names) if dataset_names else None
    if dataset_names is not None and len(dataset_names) != num_classes:
        raise LabelSpaceError(f'{dataset} has {len(dataset_names)} classes but {model} predicts {num_classes}; '
                              f'use a model trained on this label space, or a split that holds every class')
    primary = tuple(model_aliases[0][1]) if model_aliases else None
    if dataset_names is not None and model_aliases:
        first_error = None
        for _, names in model_aliases:
            try:
                index, normalised = match_names(names, dataset_names, model=model, dataset=dataset)
            except LabelSpaceError as e:
                first_error = first_error or e
                continue
            target_map = None if index == tuple(range(num_classes)) else index
            return LabelMatch(dataset, model, 'names', target_map, normalised, dataset_names, tuple(names))
        if not class_map:  # both sides have names and they differ: trusting the order would be wrong
            raise first_error
    if class_map and dataset_names is not None:  # the user's file states the order names cannot
        return LabelMatch(dataset, model, 'class map', None, (), dataset_names, primary)
    if trust_order:
        return LabelMatch(dataset, model, 'trusted order', None, (), dataset_names, primary)
    if dataset_names is None:
        raise LabelSpaceError(f'{dataset} does not say which class each target is, so its order cannot be '
                              f'checked against {model}; give --class-map FILE or pass --trust-label-order')
    raise LabelSpaceError(f'{model} has no label names, so the order of {dataset}\'s classes cannot be checked; '
                          f'export the model with label_names, give --class-map FILE, or pass --trust-label-order')


def check_class_map_covers(split_root: str | Path, class_to_idx: Mapping, source: str) -> None:
    """timm's folder reader silently drops images whose folder is not in the class map: refuse that instead."""
    root = Path(split_root)
    if not root.is_dir():
        return
    folders = sorted(p.name for p in root.iterdir() if p.is_dir())
    missing = [f for f in folders if f not in class_to_idx]
    if missing:
        raise LabelSpaceError(f'class folders {", ".join(map(repr, missing[:3]))} under {root.name} are not in '
                              f'{source}, so timm would skip their images; add them to the class map or move them out')


# ----------------------------------------------------------------------------- remapping

class TargetRemap:
    """Target transform: dataset target -> model class. A class (not a lambda) so loader workers can pickle it."""

    def __init__(self, target_map: Sequence[int], then=None):
        self.target_map = tuple(int(i) for i in target_map)
        self.then = then  # a target transform the dataset already had

    def __call__(self, target):
        target = self.target_map[int(target)]
        return self.then(target) if self.then is not None else target

    def __repr__(self):
        return f'{self.__class__.__name__}({list(self.target_map)})'


def remap_dataset_targets(ds, target_map: Sequence[int] | None):
    """Make ``ds`` yield model class indices: install :class:`TargetRemap` on the dataset that owns the targets.

    Works through wrappers (Subset, ModeDataset) down to timm's ImageDataset or a torchvision
    dataset, both of which apply ``target_transform``. Returns ``ds``.
    """
    if target_map is None:
        return ds
    for inner in _inner_datasets(ds):
        if hasattr(inner, 'target_transform'):
            current = inner.target_transform
            if isinstance(current, TargetRemap):
                if current.target_map == tuple(target_map):  # the same dataset object checked for two splits
                    return ds
                raise LabelSpaceError(f'{type(inner).__name__} is already remapped to another class order; '
                                      f'create each split\'s dataset separately')
            inner.target_transform = TargetRemap(target_map, then=current)
            return ds
    raise LabelSpaceError(f'{type(ds).__name__} has no target_transform, so its classes cannot be reordered '
                          f'into the model\'s order; give --class-map FILE in the model\'s class order')


def align_dataset_labels(ds, model, *, model_name: str, dataset: str, trust_order: bool = False,
                         class_map: bool = False) -> LabelMatch:
    """Preflight for one split: read its class names, match them to ``model``, remap its targets if needed.

    ``dataset`` names the split in messages (e.g. ``'data/fashion validation'``). Call it for
    the train and the evaluation split; each may list other classes (a class missing from
    one split shifts every later index in timm's folder reader).
    """
    match = match_label_space(model_label_aliases(model), dataset_label_names(ds), model.num_classes,
                              model=model_name, dataset=dataset, trust_order=trust_order, class_map=class_map)
    remap_dataset_targets(ds, match.target_map)
    return match
