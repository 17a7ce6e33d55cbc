#!/usr/bin/env python
"""Train the offline model zoo on Fashion-MNIST and save each model in Hub layout.

    python -m studies.zoo.build                 # the committed zoo (hours on 2 cores; cached, resumable)
    python -m studies.zoo.build --only vit_a    # one model
    python -m studies.zoo.build --verify        # reload every committed model, check its recorded top-1
    python -m studies.zoo.build --quick --out /tmp/microzoo   # 3 small models in about a minute, for tests

Every model is trained to a plateau: after training, a copy is fine-tuned for 2 more
epochs of plain cross-entropy at the transfer learning rate (SGD 1e-3, momentum 0.9);
if that moves test top-1 by more than 0.2 points the model is polished with 3 more
cosine-decayed epochs at that rate and checked again. Without this, "more training"
would pass for knowledge transfer.

Training runs on in-memory tensors (28x28 images, batched augmentation) because the
per-image PIL pipeline costs more than these tiny models; the recorded top-1 always
comes from the regular eval path: timm's eval transform from each saved config.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[2]

from timm_gkt.data import (
    FASHION_MNIST_LABELS, FASHION_MNIST_MEAN, FASHION_MNIST_STD, create_image_dataset, load_fashion_mnist_tensors,
)
from timm_gkt.evaluation import predict, top1
from timm_gkt.models import InputAdaptor, Preprocessing, count_parameters, load_model

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
HALF = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
FMNIST = (FASHION_MNIST_MEAN, FASHION_MNIST_STD)
PIXELS = Preprocessing(input_size=(1, 28, 28), mean=(0.0,), std=(1.0,))

PLATEAU_LR = 1e-3
PLATEAU_EPOCHS = 2
PLATEAU_TOLERANCE = 0.2
POLISH_EPOCHS = 3
MAX_POLISH_ROUNDS = 2


@dataclass
class Recipe:
    opt: str = 'adamw'
    lr: float = 2e-3
    weight_decay: float = 0.05
    momentum: float = 0.9
    epochs: int = 10
    warmup_epochs: int = 1
    batch_size: int = 128
    label_smoothing: float = 0.0
    mixup: float = 0.0
    random_erasing: float = 0.0
    translate: int = 2  # random shift in pixels (28 px scale)
    hflip: float = 0.5
    seed: int = 0
    train_subset: int = 0  # 0 = all 60k


@dataclass
class ZooEntry:
    name: str
    architecture: str
    family: str
    in_chans: int
    img_size: int
    norm: tuple
    model_kwargs: dict = field(default_factory=dict)
    recipe: Recipe = field(default_factory=Recipe)

    @property
    def preprocessing(self) -> Preprocessing:
        mean, std = self.norm
        if self.in_chans == 1:
            mean, std = mean[:1], std[:1]
        return Preprocessing(input_size=(self.in_chans, self.img_size, self.img_size), mean=tuple(mean),
                             std=tuple(std), interpolation='bilinear', crop_pct=1.0)


ZOO = [
    ZooEntry('resnet_a', 'test_resnet', 'CNN', 3, 32, IMAGENET,
             recipe=Recipe(opt='sgd', lr=0.1, weight_decay=5e-5, epochs=10, seed=0)),
    ZooEntry('convnext_a', 'test_convnext', 'CNN', 3, 32, HALF,
             recipe=Recipe(opt='adamw', lr=3e-3, weight_decay=0.05, epochs=10, label_smoothing=0.1, seed=1)),
    ZooEntry('effnet_a', 'test_efficientnet', 'CNN', 1, 28, FMNIST,
             recipe=Recipe(opt='adamw', lr=3e-3, weight_decay=0.02, epochs=10, random_erasing=0.25, seed=2)),
    ZooEntry('byob_a', 'test_byobnet', 'CNN', 1, 28, FMNIST,
             recipe=Recipe(opt='sgd', lr=0.05, weight_decay=1e-4, epochs=10, mixup=0.2, seed=3)),
    ZooEntry('mambaout_a', 'test_mambaout', 'CNN', 3, 32, IMAGENET,
             recipe=Recipe(opt='lamb', lr=4e-3, weight_decay=0.02, epochs=10, seed=4)),
    ZooEntry('vit_a', 'test_vit', 'Transformer', 1, 28, FMNIST, dict(patch_size=7),
             recipe=Recipe(opt='adamw', lr=1e-3, weight_decay=0.05, epochs=12, label_smoothing=0.1, seed=5)),
    ZooEntry('vit_b', 'test_vit2', 'Transformer', 3, 32, HALF, dict(patch_size=8),
             recipe=Recipe(opt='adamw', lr=1e-3, weight_decay=0.05, epochs=12, hflip=0.0, seed=6)),
    ZooEntry('mixer_a', 'mixer_s16_224', 'MLP', 1, 48, FMNIST, dict(mlp_ratio=(0.0625, 0.0625)),
             recipe=Recipe(opt='adamw', lr=1e-3, weight_decay=0.05, epochs=12, seed=7)),
]

QUICK_ZOO = [
    ZooEntry('q_cnn', 'test_resnet', 'CNN', 3, 32, IMAGENET,
             recipe=Recipe(opt='adamw', lr=3e-3, epochs=1, warmup_epochs=0, train_subset=6000, seed=0)),
    ZooEntry('q_vit', 'test_vit', 'Transformer', 1, 28, FMNIST, dict(patch_size=7, depth=2),
             recipe=Recipe(opt='adamw', lr=2e-3, epochs=1, warmup_epochs=0, train_subset=6000, seed=1)),
    ZooEntry('q_mlp', 'mixer_s16_224', 'MLP', 1, 32, HALF, dict(mlp_ratio=(0.0625, 0.0625)),
             recipe=Recipe(opt='adamw', lr=2e-3, epochs=1, warmup_epochs=0, train_subset=6000, seed=2)),
]


# ----------------------------------------------------------------------------- training on tensors

def augment(pixels: torch.Tensor, recipe: Recipe, generator: torch.Generator) -> torch.Tensor:
    """Random shift (zero padding, the background colour) and horizontal flip, batched."""
    b, _, h, w = pixels.shape
    if recipe.translate:
        t = recipe.translate
        padded = F.pad(pixels, (t, t, t, t))
        di = torch.randint(0, 2 * t + 1, (b,), generator=generator)
        dj = torch.randint(0, 2 * t + 1, (b,), generator=generator)
        rows = (di[:, None] + torch.arange(h)[None])[:, :, None]
        cols = (dj[:, None] + torch.arange(w)[None])[:, None, :]
        pixels = padded[torch.arange(b)[:, None, None], 0, rows, cols].unsqueeze(1)
    if recipe.hflip:
        flip = torch.rand(b, generator=generator) < recipe.hflip
        pixels = torch.where(flip[:, None, None, None], pixels.flip(-1), pixels)
    return pixels


def make_loss(recipe: Recipe):
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
    if recipe.mixup:
        return SoftTargetCrossEntropy()
    if recipe.label_smoothing:
        return LabelSmoothingCrossEntropy(recipe.label_smoothing)
    return torch.nn.CrossEntropyLoss()


def run_epochs(model, images, labels, recipe: Recipe, adaptor, optimizer, scheduler, start_epoch: int,
               end_epoch: int, desc: str, on_epoch_end=None):
    from timm.data import Mixup
    from timm.data.random_erasing import RandomErasing
    from tqdm.auto import tqdm
    loss_fn = make_loss(recipe)
    mixup = Mixup(mixup_alpha=recipe.mixup, label_smoothing=recipe.label_smoothing, num_classes=10) \
        if recipe.mixup else None
    erasing = RandomErasing(recipe.random_erasing, mode='pixel', device='cpu') if recipe.random_erasing else None
    n = len(labels)
    steps = n // recipe.batch_size
    model.train()
    for epoch in range(start_epoch, end_epoch):
        g = torch.Generator().manual_seed(recipe.seed * 1000 + epoch)
        order = torch.randperm(n, generator=g)
        bar = tqdm(range(steps), desc=f'{desc} ep {epoch + 1}/{end_epoch}', leave=False, mininterval=2)
        total = 0.0
        for step in bar:
            idx = order[step * recipe.batch_size:(step + 1) * recipe.batch_size]
            pixels = images[idx].unsqueeze(1).float().div_(255)
            x = adaptor(augment(pixels, recipe, g))
            y = labels[idx]
            if erasing is not None:
                x = erasing(x)
            if mixup is not None:
                x, y = mixup(x, y)
            loss = loss_fn(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step_update(epoch * steps + step + 1)
            total += loss.item()
            if step % 50 == 0:
                bar.set_postfix(loss=f'{total / (step + 1):.3f}')
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, total / max(steps, 1))


def create_zoo_model(entry: ZooEntry):
    import timm
    # CNNs (and MobileViT) take any input size; patch-based models fix theirs at construction
    size_arg = {} if entry.family in ('CNN', 'hybrid') else {'img_size': entry.img_size}
    model = timm.create_model(entry.architecture, pretrained=False, num_classes=10, in_chans=entry.in_chans,
                              **size_arg, **entry.model_kwargs)
    prep = entry.preprocessing
    # the architecture's default cfg names ImageNet weights (tag, source); these weights are ours
    model.pretrained_cfg = dict(model.pretrained_cfg, **data_config(prep), num_classes=10, tag=None,
                                license='apache-2.0', label_names=list(FASHION_MNIST_LABELS))
    return model


def data_config(prep: Preprocessing) -> dict:
    return dict(input_size=prep.input_size, mean=prep.mean, std=prep.std, crop_pct=prep.crop_pct,
                crop_mode=prep.crop_mode, interpolation=prep.interpolation)


def evaluate(model, prep: Preprocessing, test_ds, batch_size=500) -> float:
    (pred,), target = predict([model], [prep], test_ds, batch_size=batch_size, progress=False)
    return top1(pred, target)


def continuation(model, images, labels, adaptor, epochs: int, cosine: bool, seed: int, desc: str):
    """Plain cross-entropy at the transfer learning rate: SGD 1e-3, momentum 0.9, wd 1e-4, batch 128."""
    from timm.optim import create_optimizer_v2
    from timm.scheduler import create_scheduler_v2
    recipe = Recipe(opt='sgd', lr=PLATEAU_LR, weight_decay=1e-4, epochs=epochs, batch_size=128, seed=seed)
    opt = create_optimizer_v2(model, opt='momentum', lr=PLATEAU_LR, weight_decay=1e-4, momentum=0.9)
    sched = None
    if cosine:
        steps = len(labels) // recipe.batch_size
        sched, _ = create_scheduler_v2(opt, sched='cosine', num_epochs=epochs, warmup_epochs=0, min_lr=0.0,
                                       step_on_epochs=False, updates_per_epoch=steps)
    run_epochs(model, images, labels, recipe, adaptor, opt, sched, 0, epochs, desc)
    model.eval()


# ----------------------------------------------------------------------------- per-model pipeline

def build_one(entry: ZooEntry, out_dir: Path, cache_dir: Path, data_dir: Path, train_tensors, test_ds,
              check_plateau: bool = True, log=print, max_polish_rounds: int = MAX_POLISH_ROUNDS) -> dict:
    from timm.models import save_for_hf
    from timm.optim import create_optimizer_v2
    from timm.scheduler import create_scheduler_v2

    cache = cache_dir / entry.name
    cache.mkdir(parents=True, exist_ok=True)
    ckpt_path = cache / 'state.pt'
    record_path = cache / 'record.json'
    if record_path.is_file() and (out_dir / entry.name / 'model.safetensors').is_file():
        record = json.loads(record_path.read_text())
        if record.get('recipe') == asdict(entry.recipe):
            log(f'{entry.name}: cached (top-1 {record["test_top1"]:.2f})')
            return record

    torch.manual_seed(entry.recipe.seed)
    images, labels = train_tensors
    if entry.recipe.train_subset:
        g = torch.Generator().manual_seed(entry.recipe.seed)
        keep = torch.randperm(len(labels), generator=g)[:entry.recipe.train_subset]
        images, labels = images[keep], labels[keep]
    model = create_zoo_model(entry)
    prep = entry.preprocessing
    adaptor = InputAdaptor(PIXELS, prep)
    r = entry.recipe
    opt_name = 'momentum' if r.opt == 'sgd' else r.opt
    optimizer = create_optimizer_v2(model, opt=opt_name, lr=r.lr, weight_decay=r.weight_decay, momentum=r.momentum)
    steps = len(labels) // r.batch_size
    scheduler, _ = create_scheduler_v2(optimizer, sched='cosine', num_epochs=r.epochs, warmup_epochs=r.warmup_epochs,
                                       warmup_lr=r.lr * 0.01, min_lr=1e-6, step_on_epochs=False,
                                       updates_per_epoch=steps)
    state = {'epoch': 0, 'history': [], 'seconds': 0.0, 'polish_rounds': 0, 'plateau_checks': []}
    if ckpt_path.is_file():
        saved = torch.load(ckpt_path, map_location='cpu', weights_only=False)
        if saved.get('recipe') == asdict(r):
            model.load_state_dict(saved['model'])
            optimizer.load_state_dict(saved['optimizer'])
            state = saved['state']
            log(f'{entry.name}: resuming after epoch {state["epoch"]}')

    def save_ckpt():
        tmp = ckpt_path.with_suffix('.tmp')
        torch.save({'model': model.state_dict(), 'optimizer': optimizer.state_dict(), 'state': state,
                    'recipe': asdict(r)}, tmp)
        tmp.replace(ckpt_path)

    def on_epoch_end(epoch, loss):
        acc = evaluate(model, prep, test_ds)
        model.train()
        state['epoch'] = epoch
        state['history'].append({'epoch': epoch, 'train_loss': round(loss, 4), 'test_top1': round(acc, 2)})
        state['seconds'] += time.time() - t0_epoch[0]
        t0_epoch[0] = time.time()
        log(f'{entry.name}: epoch {epoch}/{r.epochs} loss {loss:.3f} test top-1 {acc:.2f}')
        save_ckpt()

    t0_epoch = [time.time()]
    if state['epoch'] < r.epochs:
        run_epochs(model, images, labels, r, adaptor, optimizer, scheduler, state['epoch'], r.epochs,
                   entry.name, on_epoch_end)
    model.eval()

    # plateau: 2 epochs of plain CE at the transfer lr must not move top-1 by more than the tolerance
    while check_plateau:
        last = state['plateau_checks'][-1] if state['plateau_checks'] else None
        if last is not None and last['polish_rounds_before'] == state['polish_rounds']:
            delta = last['delta']  # this round was checked before an interruption
        else:
            before = evaluate(model, prep, test_ds)
            probe = copy.deepcopy(model)
            tc = time.time()
            continuation(probe, images, labels, adaptor, PLATEAU_EPOCHS, cosine=False, seed=r.seed + 100,
                         desc=f'{entry.name} plateau check')
            after = evaluate(probe, prep, test_ds)
            state['seconds'] += time.time() - tc
            delta = after - before
            state['plateau_checks'].append({'top1_before': round(before, 2), 'top1_after': round(after, 2),
                                            'delta': round(delta, 2), 'polish_rounds_before': state['polish_rounds']})
            save_ckpt()
            log(f'{entry.name}: plateau check {before:.2f} -> {after:.2f} ({delta:+.2f})')
        if abs(delta) <= PLATEAU_TOLERANCE or state['polish_rounds'] >= max_polish_rounds:
            break
        tp = time.time()
        continuation(model, images, labels, adaptor, POLISH_EPOCHS, cosine=True,
                     seed=r.seed + 200 + state['polish_rounds'], desc=f'{entry.name} polish')
        state['polish_rounds'] += 1
        state['seconds'] += time.time() - tp
        save_ckpt()
        log(f'{entry.name}: polished ({POLISH_EPOCHS} cosine epochs at lr {PLATEAU_LR})')

    export = out_dir / entry.name
    model.eval()
    save_for_hf(model, export, model_config={'label_names': list(FASHION_MNIST_LABELS)},
                data_config=data_config(prep), safe_serialization=True)
    # the recorded top-1 comes from the saved folder, loaded the way users load it
    loaded = load_model(f'local-dir:{export}')
    acc = evaluate(loaded.model, loaded.preprocessing, test_ds)
    record = {
        'name': entry.name,
        'architecture': entry.architecture,
        'family': entry.family,
        'parameters': count_parameters(model),
        'input_size': list(prep.input_size),
        'mean': list(prep.mean),
        'std': list(prep.std),
        'test_top1': round(acc, 2),
        'recipe': asdict(r),
        'model_kwargs': entry.model_kwargs,
        'history': state['history'],
        'plateau': {
            'continuation': f'{PLATEAU_EPOCHS} epochs CE, SGD lr {PLATEAU_LR}, momentum 0.9, wd 1e-4, batch 128',
            'tolerance': PLATEAU_TOLERANCE,
            'checks': state['plateau_checks'],
            'polish_rounds': state['polish_rounds'],
            'final_delta': state['plateau_checks'][-1]['delta'] if state['plateau_checks'] else None,
        },
        'train_seconds': round(state['seconds'], 1),
        'weights_bytes': (export / 'model.safetensors').stat().st_size,
    }
    record_path.write_text(json.dumps(record, indent=2))
    log(f'{entry.name}: saved to {export} (top-1 {acc:.2f}, {record["parameters"] / 1e6:.3f} M params)')
    return record


def write_index(entries, out_dir: Path, cache_dir: Path) -> list[dict]:
    records = []
    for e in entries:
        path = cache_dir / e.name / 'record.json'
        if path.is_file() and (out_dir / e.name / 'model.safetensors').is_file():
            records.append(json.loads(path.read_text()))
    index = {
        'dataset': 'torch/fashion_mnist',
        'eval_split': 'test (10,000 images)',
        'label_names': list(FASHION_MNIST_LABELS),
        'models': records,
    }
    tmp = out_dir / 'index.json.tmp'
    tmp.write_text(json.dumps(index, indent=2))
    tmp.replace(out_dir / 'index.json')
    return records


def verify(out_dir: Path, data_dir: Path, tolerance: float = 0.0) -> bool:
    index = json.loads((out_dir / 'index.json').read_text())
    test_ds = create_image_dataset('torch/fashion_mnist', data_dir, 'test')
    ok = True
    for rec in index['models']:
        loaded = load_model(f'local-dir:{out_dir / rec["name"]}')
        acc = evaluate(loaded.model, loaded.preprocessing, test_ds)
        good = abs(acc - rec['test_top1']) <= tolerance + 1e-6
        ok &= good
        print(f'{rec["name"]:12s} recorded {rec["test_top1"]:6.2f}  reloaded {acc:6.2f}  {"ok" if good else "MISMATCH"}')
    return ok


def _study_cell(r) -> str:
    sp = r.get('study_plateau')
    if not sp:
        return ' |'
    check = sp['checks'][-1]
    return f" {sp['polish_rounds']}, {check['delta']:+.2f} (p = {check['p_value']:.2g}) |"


def markdown_table(records) -> str:
    study = any('study_plateau' in r for r in records)  # studies/zoo/polish.py --apply: the study recipe's rounds
    lines = ['| name | family | architecture | params | input (C×H×W) | normalisation (mean) | recipe | test top-1 | '
             'plateau check Δ |' + (' study-recipe polish: rounds, check Δ (p) |' if study else ''),
             '|---|---|---|---:|---|---|---|---:|---:|' + ('---:|' if study else '')]
    for r in records:
        rc = r['recipe']
        extras = [f"ls {rc['label_smoothing']}" if rc['label_smoothing'] else '', f"mixup {rc['mixup']}" if rc['mixup'] else '',
                  f"RE {rc['random_erasing']}" if rc['random_erasing'] else '', 'no flip' if not rc['hflip'] else '']
        recipe = f"{rc['opt']} lr {rc['lr']:g}, {rc['epochs']} ep" + ''.join(f', {e}' for e in extras if e) + \
            (f", +{3 * r['plateau']['polish_rounds']} polish ep" if r['plateau']['polish_rounds'] else '') + f", seed {rc['seed']}"
        d = r['plateau']['final_delta']
        lines.append(f"| {r['name']} | {r['family']} | `{r['architecture']}` | {r['parameters'] / 1e6:.2f} M | "
                     f"{'×'.join(str(v) for v in r['input_size'])} | {', '.join(f'{m:.3f}' for m in r['mean'])} | {recipe} | "
                     f"{r['test_top1']:.2f} | {'' if d is None else f'{d:+.2f}'} |" + (_study_cell(r) if study else ''))
    return '\n'.join(lines)


def print_table(records):
    print(f'\n{"name":12s} {"family":12s} {"arch":18s} {"params":>8s} {"input":>10s} {"top-1":>6s} {"plateau Δ":>9s}')
    for r in records:
        inp = 'x'.join(str(v) for v in r['input_size'])
        d = r['plateau']['final_delta']
        print(f'{r["name"]:12s} {r["family"]:12s} {r["architecture"]:18s} {r["parameters"] / 1e6:7.3f}M {inp:>10s} '
              f'{r["test_top1"]:6.2f} {"" if d is None else f"{d:+.2f}":>9s}')


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--out', default=str(ROOT / 'zoo'), help='zoo folder (default: zoo/)')
    p.add_argument('--data-dir', default=str(ROOT / 'data'))
    p.add_argument('--cache-dir', default=None, help='checkpoints for resuming (default: OUT/../.zoo_cache/OUT-NAME)')
    p.add_argument('--only', default='', help='comma-separated model names')
    p.add_argument('--quick', action='store_true', help='3-model micro-zoo for tests (no plateau check)')
    p.add_argument('--verify', action='store_true', help='reload every model in OUT and check its recorded top-1')
    p.add_argument('--threads', type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument('--markdown', action='store_true', help='print the zoo table of OUT/index.json as markdown')
    p.add_argument('--max-polish-rounds', type=int, default=MAX_POLISH_ROUNDS,
                   help='polish rounds (3 cosine epochs each) before a model is saved whatever its plateau check says')
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    out_dir = Path(args.out)
    data_dir = Path(args.data_dir)
    if args.verify:
        sys.exit(0 if verify(out_dir, data_dir) else 1)
    if args.markdown:
        print(markdown_table(json.loads((out_dir / 'index.json').read_text())['models']))
        return
    entries = QUICK_ZOO if args.quick else ZOO
    if args.only:
        wanted = set(args.only.split(','))
        unknown = wanted - {e.name for e in entries}
        if unknown:
            p.error(f'unknown zoo model(s) {sorted(unknown)}; choose from {[e.name for e in entries]}')
        by_name = {e.name: e for e in entries}
        todo = [by_name[n] for n in dict.fromkeys(args.only.split(','))]  # in the order given
    else:
        todo = entries
    cache_dir = Path(args.cache_dir) if args.cache_dir else out_dir.parent / '.zoo_cache' / out_dir.name
    out_dir.mkdir(parents=True, exist_ok=True)
    train_tensors = load_fashion_mnist_tensors(data_dir, train=True)
    test_ds = create_image_dataset('torch/fashion_mnist', data_dir, 'test')
    t0 = time.time()
    for entry in todo:
        build_one(entry, out_dir, cache_dir, data_dir, train_tensors, test_ds, check_plateau=not args.quick,
                  max_polish_rounds=args.max_polish_rounds)
    records = write_index(entries, out_dir, cache_dir)
    print_table(records)
    print(f'\nzoo in {out_dir} ({len(records)} models), this run took {time.time() - t0:.0f} s')


if __name__ == '__main__':
    main()
