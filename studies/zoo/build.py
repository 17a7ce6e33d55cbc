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
would pass for knowledge transfer. Training itself is :mod:`studies.zoo.training`.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

from timm_gkt.data import FASHION_MNIST_LABELS, create_image_dataset, load_fashion_mnist_tensors
from timm_gkt.models import InputAdaptor, count_parameters, load_model

from .recipe import ROOT
from .training import (
    FMNIST, HALF, IMAGENET, MAX_POLISH_ROUNDS, PIXELS, PLATEAU_EPOCHS, PLATEAU_LR, PLATEAU_TOLERANCE, POLISH_EPOCHS,
    Recipe, ZooEntry, continuation, create_zoo_model, data_config, evaluate, run_epochs,
)

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


# ----------------------------------------------------------------------------- per-model pipeline

def build_one(entry: ZooEntry, out_dir: Path, cache_dir: Path, data_dir: Path, train_tensors, test_ds,
              check_plateau: bool = True, log=print, max_polish_rounds: int = MAX_POLISH_ROUNDS) -> dict:
    """Train (or resume) one model, polish it to the plateau rule, save it in Hub layout and record it."""
    cache = cache_dir / entry.name
    cache.mkdir(parents=True, exist_ok=True)
    record_path = cache / 'record.json'
    if record_path.is_file() and (out_dir / entry.name / 'model.safetensors').is_file():
        record = json.loads(record_path.read_text())
        if record.get('recipe') == asdict(entry.recipe):
            log(f'{entry.name}: cached (top-1 {record["test_top1"]:.2f})')
            return record
    torch.manual_seed(entry.recipe.seed)
    images, labels = _training_images(entry.recipe, train_tensors)
    run = _Training(entry, images, labels, cache / 'state.pt', log)
    run.train(test_ds)
    while check_plateau and not run.plateau_round(test_ds, max_polish_rounds):
        pass
    record = _export(entry, run, out_dir, test_ds, log)
    record_path.write_text(json.dumps(record, indent=2))
    return record


def _training_images(recipe: Recipe, train_tensors):
    images, labels = train_tensors
    if recipe.train_subset:
        g = torch.Generator().manual_seed(recipe.seed)
        keep = torch.randperm(len(labels), generator=g)[:recipe.train_subset]
        images, labels = images[keep], labels[keep]
    return images, labels


class _Training:
    """One model's training state: weights, optimizer and what has happened, checkpointed after every step."""

    def __init__(self, entry: ZooEntry, images, labels, ckpt_path: Path, log):
        from timm.optim import create_optimizer_v2
        from timm.scheduler import create_scheduler_v2
        self.entry, self.images, self.labels, self.ckpt_path, self.log = entry, images, labels, ckpt_path, log
        r = self.recipe = entry.recipe
        self.model = create_zoo_model(entry)
        self.prep = entry.preprocessing
        self.adaptor = InputAdaptor(PIXELS, self.prep)
        self.optimizer = create_optimizer_v2(self.model, opt='momentum' if r.opt == 'sgd' else r.opt, lr=r.lr,
                                             weight_decay=r.weight_decay, momentum=r.momentum)
        self.scheduler, _ = create_scheduler_v2(
            self.optimizer, sched='cosine', num_epochs=r.epochs, warmup_epochs=r.warmup_epochs, warmup_lr=r.lr * 0.01,
            min_lr=1e-6, step_on_epochs=False, updates_per_epoch=len(labels) // r.batch_size)
        self.state = {'epoch': 0, 'history': [], 'seconds': 0.0, 'polish_rounds': 0, 'plateau_checks': []}
        if ckpt_path.is_file():
            saved = torch.load(ckpt_path, map_location='cpu', weights_only=False)
            if saved.get('recipe') == asdict(r):
                self.model.load_state_dict(saved['model'])
                self.optimizer.load_state_dict(saved['optimizer'])
                self.state = saved['state']
                log(f'{entry.name}: resuming after epoch {self.state["epoch"]}')

    def save(self) -> None:
        tmp = self.ckpt_path.with_suffix('.tmp')
        torch.save({'model': self.model.state_dict(), 'optimizer': self.optimizer.state_dict(), 'state': self.state,
                    'recipe': asdict(self.recipe)}, tmp)
        tmp.replace(self.ckpt_path)

    def train(self, test_ds) -> None:
        r, state, clock = self.recipe, self.state, [time.time()]

        def on_epoch_end(epoch, loss):
            acc = evaluate(self.model, self.prep, test_ds)
            self.model.train()
            state['epoch'] = epoch
            state['history'].append({'epoch': epoch, 'train_loss': round(loss, 4), 'test_top1': round(acc, 2)})
            state['seconds'] += time.time() - clock[0]
            clock[0] = time.time()
            self.log(f'{self.entry.name}: epoch {epoch}/{r.epochs} loss {loss:.3f} test top-1 {acc:.2f}')
            self.save()

        if state['epoch'] < r.epochs:
            run_epochs(self.model, self.images, self.labels, r, self.adaptor, self.optimizer, self.scheduler,
                       state['epoch'], r.epochs, self.entry.name, on_epoch_end)
        self.model.eval()

    def plateau_round(self, test_ds, max_polish_rounds: int) -> bool:
        """2 epochs of plain CE at the transfer lr must not move top-1 by more than the tolerance; True when the
        model is done (at its plateau, or out of polish rounds), else it is polished once more."""
        state, name = self.state, self.entry.name
        last = state['plateau_checks'][-1] if state['plateau_checks'] else None
        if last is not None and last['polish_rounds_before'] == state['polish_rounds']:
            delta = last['delta']  # this round was checked before an interruption
        else:
            before = evaluate(self.model, self.prep, test_ds)
            probe = copy.deepcopy(self.model)
            tc = time.time()
            continuation(probe, self.images, self.labels, self.adaptor, PLATEAU_EPOCHS, cosine=False,
                         seed=self.recipe.seed + 100, desc=f'{name} plateau check')
            after = evaluate(probe, self.prep, test_ds)
            state['seconds'] += time.time() - tc
            delta = after - before
            state['plateau_checks'].append({'top1_before': round(before, 2), 'top1_after': round(after, 2),
                                            'delta': round(delta, 2), 'polish_rounds_before': state['polish_rounds']})
            self.save()
            self.log(f'{name}: plateau check {before:.2f} -> {after:.2f} ({delta:+.2f})')
        if abs(delta) <= PLATEAU_TOLERANCE or state['polish_rounds'] >= max_polish_rounds:
            return True
        tp = time.time()
        continuation(self.model, self.images, self.labels, self.adaptor, POLISH_EPOCHS, cosine=True,
                     seed=self.recipe.seed + 200 + state['polish_rounds'], desc=f'{name} polish')
        state['polish_rounds'] += 1
        state['seconds'] += time.time() - tp
        self.save()
        self.log(f'{name}: polished ({POLISH_EPOCHS} cosine epochs at lr {PLATEAU_LR})')
        return False


def _export(entry: ZooEntry, run: _Training, out_dir: Path, test_ds, log) -> dict:
    """Save in Hub layout; the recorded top-1 comes from the saved folder, loaded the way users load it."""
    from timm.models import save_for_hf
    export = out_dir / entry.name
    run.model.eval()
    save_for_hf(run.model, export, model_config={'label_names': list(FASHION_MNIST_LABELS)},
                data_config=data_config(run.prep), safe_serialization=True)
    loaded = load_model(f'local-dir:{export}')
    acc = evaluate(loaded.model, loaded.preprocessing, test_ds)
    state, prep = run.state, run.prep
    record = {
        'name': entry.name, 'architecture': entry.architecture, 'family': entry.family,
        'parameters': count_parameters(run.model), 'input_size': list(prep.input_size), 'mean': list(prep.mean),
        'std': list(prep.std), 'test_top1': round(acc, 2), 'recipe': asdict(entry.recipe),
        'model_kwargs': entry.model_kwargs, 'history': state['history'],
        'plateau': {
            'continuation': f'{PLATEAU_EPOCHS} epochs CE, SGD lr {PLATEAU_LR}, momentum 0.9, wd 1e-4, batch 128',
            'tolerance': PLATEAU_TOLERANCE, 'checks': state['plateau_checks'], 'polish_rounds': state['polish_rounds'],
            'final_delta': state['plateau_checks'][-1]['delta'] if state['plateau_checks'] else None,
        },
        'train_seconds': round(state['seconds'], 1),
        'weights_bytes': (export / 'model.safetensors').stat().st_size,
    }
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
