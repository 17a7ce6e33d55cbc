"""The images a run transfers on and evaluates on: splits that exist, label spaces matched, seeded subsets.

:func:`open_data` is preflight's data step. In order, each failure one sentence before any compute:

1. the source exists and the flags fit its kind (:func:`check_data_source`);
2. both splits exist, without timm's fallback to the data root, and share no image
   (:mod:`timm_gkt.splits`; HF-style slices such as ``train[:55000]`` for every kind);
3. each split's class names are matched to the student's and its targets remapped into the
   student's class order (:mod:`timm_gkt.labels`);
4. ``--train-subset`` / ``--eval-subset`` take a seeded class-stratified sample (:mod:`timm_gkt.subsets`).

:meth:`RunData.record` is what results.json keeps of it, with local paths reduced to names.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, DataUnavailableError
from .sources import create_image_dataset
from .labels import LabelMatch, align_dataset_labels, check_class_map_covers, dataset_label_names, read_class_map
from ..report.public import hub_dataset_id, public_dataset_ref, public_path
from .splits import ResolvedSplit, check_disjoint, dataset_kind, resolve_split, take_slice
from .subsets import take_subset
from .unreadable import CountedReads

# what to do when timm or torchvision cannot read a split, per dataset kind
_READ_FIXES = {
    'torch': 'pass --dataset-download to let torchvision download it, or --data-dir with the folder that holds it',
    'folder': 'check that the split folder holds one subfolder of images per class',
    'hfds': 'check the dataset name and --data-dir (the Hugging Face datasets cache)',
}


def data_name(dataset: str, data_dir: str) -> str:
    """How logs, results and cards name the data: the folder's name for folders, the spec otherwise."""
    if dataset_kind(dataset) == 'folder':
        return Path(data_dir).resolve().name
    return public_dataset_ref(dataset)


def check_data_source(config) -> dict | None:
    """Flags that do not fit the dataset kind, and the class map (read here, so a bad file fails first).

    Returns the class map as ``{folder name: index}``, or None without ``--class-map``.
    """
    kind = dataset_kind(config.dataset)
    given = [f'--{k.replace("_", "-")}' for k in reader_kwargs(config)]
    if given and kind != 'hfds':
        raise ConfigError(f'{" and ".join(given)} name{"s" if len(given) == 1 else ""} columns of hfds/ datasets; '
                          f'{config.dataset} has none, so remove {"it" if len(given) == 1 else "them"}')
    if config.class_map and kind not in ('folder', 'hfds'):
        raise ConfigError(f'--class-map applies to folder and hfds/ datasets; {config.dataset} fixes its own class '
                          f'order, so remove the flag')
    if kind == 'hfds':
        try:
            import datasets  # noqa: F401
        except ImportError:
            raise DataUnavailableError("hfds/ datasets need the datasets package; pip install 'timm-gkt[datasets]'") \
                from None
    return read_class_map(config.class_map, config.data_dir) if config.class_map else None


def _class_map_path(config) -> str:
    """The class map as timm will find it (as given, else under the data folder, like timm's own lookup)."""
    given = Path(config.class_map)
    return str(given if given.exists() else Path(config.data_dir) / given)


def resolve_splits(config) -> tuple[ResolvedSplit, ResolvedSplit]:
    """Both splits checked to exist; the same split twice is refused here, overlapping slices once opened."""
    train = resolve_split(config.dataset, config.data_dir, config.train_split)
    evaluation = resolve_split(config.dataset, config.data_dir, config.val_split)
    check_disjoint(train, evaluation, None)
    return train, evaluation


def reader_kwargs(config) -> dict:
    """timm's ``input_key`` / ``target_key`` of hfds/ readers, when given (``--input-key`` / ``--target-key``)."""
    return {k: getattr(config, k) for k in ('input_key', 'target_key') if getattr(config, k, None)}


def read_split(config, split: ResolvedSplit):
    """The whole base split (before slicing) as a timm dataset; reading errors become one sentence."""
    kind = dataset_kind(config.dataset)
    root, kwargs = Path(config.data_dir), reader_kwargs(config)
    if kind == 'folder' and root.is_dir():
        # the split folder itself, so timm never searches and never falls back to the whole data root
        root, kwargs['search_split'] = root / split.timm_split, False
    if config.class_map:
        kwargs['class_map'] = _class_map_path(config)
    if kind == 'hfds':  # timm's reader does not check its columns; a missing one would fail mid-evaluation
        check_hfds_columns(config, split, _hfds_split(config, split))
    try:
        return create_image_dataset(config.dataset, root, split.timm_split, download=config.dataset_download,
                                    **kwargs)
    except DataUnavailableError:
        raise
    except (AssertionError, RuntimeError, OSError, ValueError, KeyError) as e:
        detail = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        raise DataUnavailableError(f'{config.dataset} split {split.timm_split} cannot be read from {config.data_dir} '
                                   f'({detail}); {_READ_FIXES.get(kind, "check --dataset and --data-dir")}') from None


def _hfds_split(config, split: ResolvedSplit):
    """The split as the datasets library holds it (memory-mapped; timm's reader opens the same files)."""
    import datasets
    try:
        return datasets.load_dataset(config.dataset.split('/', 1)[1], split=split.timm_split,
                                     cache_dir=str(config.data_dir) or None)
    except Exception:  # noqa: BLE001 - unreadable for another reason: timm's reader says why, below
        return None


def check_hfds_columns(config, split: ResolvedSplit, hf_dataset) -> None:
    """The image and label columns timm's hfds reader will read exist; the sentence names the columns there are
    (timm would fail later, mid-evaluation, or find no class names)."""
    if hf_dataset is None:
        return
    import datasets
    columns, features = list(hf_dataset.column_names), hf_dataset.features or {}
    wanted = (('--input-key', config.input_key or 'image', 'image', datasets.Image),
              ('--target-key', config.target_key or 'label', 'label', datasets.ClassLabel))
    for flag, keys, what, kind in wanted:
        missing = [k for k in keys.split(',') if k.strip() not in columns]
        if missing:
            likely = [c for c in columns if isinstance(features.get(c), kind)]
            raise DataUnavailableError(f'{config.dataset} split {split.timm_split} has no {what} column '
                                       f'{missing[0]!r} (its columns: {", ".join(columns)}); name the {what} '
                                       f'column with {flag} {likely[0] if likely else "COLUMN"}')


@dataclass
class SplitData:
    """One split as the run reads it: sliced, its targets in the student's class order, subset."""
    role: str  # 'train' or 'eval'
    split: ResolvedSplit
    dataset: object
    images: int  # images in the (sliced) split, before the subset
    subset: dict  # timm_gkt.subsets.take_subset's record
    labels: LabelMatch
    sliced: str | None = None  # how a slice was taken (timm_gkt.data.splits.take_slice), None when not sliced
    unreadable: dict | None = None  # images that could not be read (timm_gkt.data.unreadable), once a pass found any

    def record(self) -> dict:
        m = self.labels
        return {
            'split': self.split.requested,
            'read_as': self.split.timm_split + (f'[{self.split.slice.start or ""}:{self.split.slice.stop or ""}]'
                                                if self.split.slice.sliced else ''),
            'slice': self.sliced,
            'images': self.images, 'subset': self.subset,
            'unreadable': self.unreadable or {'count': 0, 'of': len(self.dataset), 'examples': []},
            'labels': {'verified_by': m.verified_by,
                       'target_map': list(m.target_map) if m.target_map is not None else None,
                       'normalised': [list(pair) for pair in m.normalised],
                       'dataset_names': list(m.dataset_names) if m.dataset_names else None},
        }


@dataclass
class RunData:
    """Both splits of a run and what its exported head's classes are called."""
    dataset: str
    name: str  # data_name(): no local path
    class_map: str
    train: SplitData
    eval: SplitData
    head_label_names: tuple[str, ...] | None

    def record(self) -> dict:
        kind = dataset_kind(self.dataset)
        # decided now: whether an hfds/ name is a local folder depends on the folder the run started in
        hub_id = hub_dataset_id(self.dataset) if kind in ('hfds', 'hfids') else None
        return {'dataset': public_dataset_ref(self.dataset), 'kind': kind, 'name': self.name, 'hub_id': hub_id,
                'class_map': public_path(self.class_map) or None, 'train': self.train.record(),
                'eval': self.eval.record()}

    def describe(self) -> list[str]:
        return [f'  data: {self.name}: transfer on {_describe_split(self.train)} -> '
                f'eval on {_describe_split(self.eval)}']


def _describe_split(s: SplitData) -> str:
    text = f'{s.split.requested} ({s.images} images'
    if s.subset['sampling'] != 'all':
        text += f'; a seeded class-stratified subset of {s.subset["size"]}'
    return text + ')'


def subset_record(ds, n: int, seed: int, what: str):
    """:func:`~timm_gkt.subsets.take_subset`, with per-class counts keyed by the dataset's class names."""
    out, record = take_subset(ds, n, seed, what)
    names = dataset_label_names(ds)
    if record.get('per_class') is not None and names and len(names) >= len(record['per_class']):
        record['per_class'] = {names[i]: c for i, c in enumerate(record['per_class'])}
    return out, record


@dataclass(frozen=True)
class DataSource:
    """What :func:`check_data` found without reading an image: the class map and both splits."""
    class_to_idx: dict | None
    train: ResolvedSplit
    eval: ResolvedSplit


def check_data(config) -> DataSource:
    """Steps 1 and 2 that need no image: cheap, so preflight runs them before loading any model."""
    class_to_idx = check_data_source(config)
    train, evaluation = resolve_splits(config)
    return DataSource(class_to_idx, train, evaluation)


def open_data(config, source: DataSource, student, say=print) -> RunData:
    """Steps 2 to 4 (see the module docstring) for a checked source; ``student`` is a ResolvedModel."""
    name = data_name(config.dataset, config.data_dir)
    bases = {}
    for split in (source.train, source.eval):
        if split.note:
            say(f'note: {split.note}')
        if source.class_to_idx is not None and dataset_kind(config.dataset) == 'folder':
            check_class_map_covers(Path(config.data_dir) / split.timm_split, source.class_to_idx,
                                   f'--class-map {public_path(config.class_map)}')
        if split.key not in bases:  # one dataset object per base split: train[:N] and train[N:] share it
            bases[split.key] = read_split(config, split)
    if source.train.key == source.eval.key:
        check_disjoint(source.train, source.eval, len(bases[source.train.key]))
    train = _open_split(config, 'train', source.train, bases[source.train.key], student, name, source, say)
    evaluation = _open_split(config, 'eval', source.eval, bases[source.eval.key], student, name, source, say)
    return RunData(config.dataset, name, config.class_map, train, evaluation, head_label_names(student, evaluation.labels))


def _open_split(config, role: str, split: ResolvedSplit, base, student, name: str, source: DataSource,
                say) -> SplitData:
    """Steps 3 and 4 for one split of an opened base dataset."""
    ds, sliced = take_slice(base, split.slice, config.seed)
    if sliced and sliced != 'contiguous':
        say(f'note: {name} {split.requested}: a slice of a source sorted by class, taken from a seeded '
            f'class-stratified order (seed {config.seed}) so that it holds every class in its share')
    match = align_dataset_labels(ds, student.model, model_name=student.name, dataset=f'{name} {split.requested}',
                                 trust_order=config.trust_label_order, class_map=source.class_to_idx is not None)
    for line in match.describe():
        say(line)
    images = len(ds)
    n, flag = (config.train_subset, '--train-subset') if role == 'train' else (config.eval_subset, '--eval-subset')
    ds, record = subset_record(ds, n, config.seed, flag)
    return SplitData(role, split, CountedReads(ds), images, record, match, sliced)


@dataclass(frozen=True)
class EvalFlags:
    """The data flags of a command that only evaluates (scan); a TransferConfig has the same names."""
    dataset: str
    data_dir: str
    val_split: str
    class_map: str = ''
    trust_label_order: bool = False
    eval_subset: int = 0
    seed: int = 42
    dataset_download: bool = False
    input_key: str | None = None
    target_key: str | None = None


def open_eval_data(flags: EvalFlags, student, say=print) -> SplitData:
    """The evaluation split alone, checked, label-aligned to ``student`` and subset as in a transfer run."""
    class_to_idx = check_data_source(flags)
    split = resolve_split(flags.dataset, flags.data_dir, flags.val_split)
    if split.note:
        say(f'note: {split.note}')
    if class_to_idx is not None and dataset_kind(flags.dataset) == 'folder':
        check_class_map_covers(Path(flags.data_dir) / split.timm_split, class_to_idx,
                               f'--class-map {public_path(flags.class_map)}')
    source = DataSource(class_to_idx, split, split)
    return _open_split(flags, 'eval', split, read_split(flags, split), student,
                       data_name(flags.dataset, flags.data_dir), source, say)


def head_label_names(student, match: LabelMatch) -> tuple[str, ...] | None:
    """The names of the student's classes in head order, which the exported config.json must carry.

    The student's own names when it has them (dataset targets were remapped into its order);
    else the model-side names the dataset matched (e.g. timm's ImageNet metadata); else, when
    the order was taken on trust or from a class map, target i is class i and the dataset names it.
    """
    if student.label_names:
        return tuple(student.label_names)
    if match.verified_by == 'names' and match.model_names:
        return tuple(match.model_names)
    return tuple(match.dataset_names) if match.dataset_names else None
