"""The converged zoo (``zoo/converged/``): larger models trained to convergence by a rule written before training.

    python -m studies.converged.build                      # every model (about an hour each at one thread; resumable)
    python -m studies.converged.build --only resnet_c,vit_c
    python -m studies.converged.build --verify             # reload every model, check its recorded top-1
    python -m studies.converged.build --markdown           # the README table, from zoo/converged/index.json

The rule and the recipes are in ``studies/converged/PLAN.md``: (a) the clean training loss fell by less than 2 %
over the recipe's last two epochs; (b) a check round, one more budget of the zoo study's CE control (seed
1000 + round), moves test top-1 by at most 0.10 points with McNemar p >= 0.3. A model that fails (b) is trained
longer: the check run's result becomes the model and the next round checks it afresh.

State: training checkpoints and check runs under ``.zoo_cache/converged/`` (a cache: a new machine has none and
starts an unfinished model again); weights (float16) in ``zoo/converged/NAME/`` and the model's record in
``studies/converged/zoo/NAME.json`` are committed as soon as training ends and after every check round, so a
later session continues at the next round.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from studies.converged.table import markdown_table
from studies.zoo.training import (
    FMNIST, HALF, IMAGENET, PIXELS, Recipe, ZooEntry, create_zoo_model, data_config, evaluate, run_epochs,
)
from studies.zoo.build import verify as verify_zoo
from studies.zoo.recipe import BASE_FLAGS
from timm_gkt.data import FASHION_MNIST_LABELS, create_image_dataset, load_fashion_mnist_tensors
from timm_gkt.models import InputAdaptor, count_parameters, load_model

ROOT = Path(__file__).resolve().parents[2]
ZOO = ROOT / 'zoo' / 'converged'
RECORDS = Path(__file__).resolve().parent / 'zoo'
CACHE = ROOT / '.zoo_cache' / 'converged'
TRANSFER_IMAGES = 55000  # train[:55000]; train[55000:] is the validation split
VALIDATION_SPLIT = 'train[55000:]'

LOSS_TOLERANCE = 0.02  # (a): relative fall of the clean training loss over the last two epochs
CHECK_DELTA = 0.10  # (b): |Δ test top-1| of one CE-control budget, points
CHECK_P = 0.3  # (b): and McNemar p at least this
MAX_ROUNDS = 4
MAX_EXTENSIONS = 3  # rule (a): at most this many extensions before the model is replaced
CHECK_SEED = 1000  # + round; the study's CE control uses seed 0
CHECK_FLAGS = [*BASE_FLAGS, '--transfer-method', 'ce', '--lr', '1e-3']

ENTRIES = [
    ZooEntry('resnet_c', 'resnet10t', 'CNN', 3, 32, IMAGENET,
             recipe=Recipe(opt='sgd', lr=0.1, weight_decay=5e-4, epochs=30, warmup_epochs=2, seed=10)),
    ZooEntry('mobilenet_c', 'mobilenetv3_small_100', 'CNN', 3, 32, HALF,
             recipe=Recipe(opt='adamw', lr=2e-3, weight_decay=0.05, epochs=30, warmup_epochs=2, seed=11)),
    ZooEntry('convnext_c', 'convnext_atto', 'CNN', 3, 32, HALF,
             recipe=Recipe(opt='adamw', lr=2e-3, weight_decay=0.05, epochs=30, warmup_epochs=2, seed=12)),
    ZooEntry('vit_c', 'vit_tiny_patch16_224', 'Transformer', 1, 28, FMNIST,
             dict(patch_size=7, embed_dim=192, depth=6, num_heads=3),
             recipe=Recipe(opt='adamw', lr=1e-3, weight_decay=0.05, epochs=40, warmup_epochs=2, seed=13)),
    ZooEntry('mobilevit_c', 'mobilevit_xs', 'hybrid', 3, 32, IMAGENET,
             recipe=Recipe(opt='adamw', lr=2e-3, weight_decay=0.05, epochs=30, warmup_epochs=2, seed=14)),
    ZooEntry('mixer_c', 'mixer_s16_224', 'MLP', 1, 48, FMNIST, dict(mlp_ratio=(0.0625, 0.5)),
             recipe=Recipe(opt='adamw', lr=1e-3, weight_decay=0.05, epochs=40, warmup_epochs=2, seed=15)),
]


def create_model(entry: ZooEntry):
    return create_zoo_model(entry)


# ----------------------------------------------------------------------------- the rule, on records

def loss_stopped_falling(clean_losses: list[float]) -> bool:
    """(a): the clean training loss of the last epoch is less than LOSS_TOLERANCE below that of two epochs before."""
    if len(clean_losses) < 3:
        return False
    first, last = clean_losses[-3], clean_losses[-1]
    return (first - last) / first < LOSS_TOLERANCE


def check_passes(delta: float, p_value: float) -> bool:
    """(b): one more budget of the CE control moves test top-1 by at most CHECK_DELTA, not significantly."""
    return abs(delta) <= CHECK_DELTA + 1e-9 and p_value >= CHECK_P


def convergence(record: dict) -> dict:
    """The rule's verdict on a record: each part, and the round whose model is kept (None while open)."""
    a = loss_stopped_falling([e['clean_train_loss'] for e in record['history'] if 'clean_train_loss' in e])
    rounds = record.get('rounds', [])
    passed = next((r['round'] for r in rounds if check_passes(r['delta'], r['p_value'])), None)
    return {'loss_stopped_falling': a, 'check_passed_in_round': passed, 'converged': a and passed is not None,
            'rounds': len(rounds)}


# ----------------------------------------------------------------------------- measuring

@torch.no_grad()
def clean_train_metrics(model, images, labels, adaptor, batch_size: int = 500) -> tuple[float, float]:
    """Cross-entropy and top-1 (%) of the model in eval mode on the transfer images, no augmentation."""
    was = model.training
    model.eval()
    loss, correct = 0.0, 0
    for i in range(0, len(labels), batch_size):
        x = adaptor(images[i:i + batch_size].unsqueeze(1).float().div_(255))
        y = labels[i:i + batch_size]
        logits = model(x)
        loss += F.cross_entropy(logits, y, reduction='sum').item()
        correct += (logits.argmax(-1) == y).sum().item()
    model.train(was)
    return loss / len(labels), 100.0 * correct / len(labels)


def save_weights(model, entry: ZooEntry, folder: Path) -> None:
    """float16 safetensors in Hub layout (timm loads them into float32 parameters)."""
    from timm.models import save_for_hf
    half = {k: (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    shadow = create_model(entry)
    shadow.load_state_dict(half)  # float32 again, holding exactly the float16 values
    shadow.half()
    folder.mkdir(parents=True, exist_ok=True)
    save_for_hf(shadow, folder, model_config={'label_names': list(FASHION_MNIST_LABELS)},
                data_config=data_config(entry.preprocessing), safe_serialization=True)


def write_record(record: dict) -> None:
    RECORDS.mkdir(parents=True, exist_ok=True)
    path = RECORDS / f'{record["name"]}.json'
    tmp = path.with_suffix('.tmp')
    tmp.write_text(json.dumps(record, indent=1))
    tmp.replace(path)


def read_record(name: str) -> dict | None:
    path = RECORDS / f'{name}.json'
    return json.loads(path.read_text()) if path.is_file() else None


# ----------------------------------------------------------------------------- training

def phase_recipe(recipe: Recipe, phase: int) -> Recipe:
    """Phase 0 is the model's recipe; phase k >= 1 the k-th extension of rule (a) (PLAN.md): half the recipe's
    epochs, a new cosine cycle at a tenth of its lr, no warm-up, its own data order."""
    if phase == 0:
        return recipe
    return replace(recipe, lr=recipe.lr / 10, epochs=max(1, recipe.epochs // 2), warmup_epochs=0,
                   seed=recipe.seed + 100 * phase)


def phase_clean_losses(history: list[dict], phase: int) -> list[float]:
    return [h['clean_train_loss'] for h in history if h.get('phase', 0) == phase and 'clean_train_loss' in h]


def train(entry: ZooEntry, images, labels, test_ds, val_ds, log=print) -> dict:
    """Train one model with its recipe, then extend it while rule (a) fails (at most MAX_EXTENSIONS times);
    resumable per epoch; save it and start its record."""
    cache = CACHE / entry.name
    cache.mkdir(parents=True, exist_ok=True)
    ckpt = cache / 'state.pt'
    torch.manual_seed(entry.recipe.seed)
    model = create_model(entry)
    adaptor = InputAdaptor(PIXELS, entry.preprocessing)
    saved = torch.load(ckpt, map_location='cpu', weights_only=False) if ckpt.is_file() else None
    if saved is not None and saved.get('recipe') != asdict(entry.recipe):
        saved = None  # written for another recipe: start again
    state = saved['state'] if saved else {'epoch': 0, 'history': [], 'seconds': 0.0}
    state.setdefault('phase', 0)
    if saved:
        model.load_state_dict(saved['model'])
        log(f'{entry.name}: resuming after epoch {state["epoch"]} of phase {state["phase"]}')
    while True:
        _train_phase(entry, model, adaptor, images, labels, val_ds, state, ckpt, saved, log)
        saved = None  # an optimizer state belongs to the phase it was saved in
        if loss_stopped_falling(phase_clean_losses(state['history'], state['phase'])) \
                or state['phase'] >= MAX_EXTENSIONS:
            break
        state['phase'] += 1
        state['epoch'] = 0
        log(f'{entry.name}: rule (a) failed (the clean training loss still falls by 2 % or more over two epochs); '
            f'extension {state["phase"]}: {phase_recipe(entry.recipe, state["phase"]).epochs} epochs at lr '
            f'{phase_recipe(entry.recipe, state["phase"]).lr:g}')
    model.eval()
    save_weights(model, entry, ZOO / entry.name)
    loaded = load_model(f'local-dir:{ZOO / entry.name}')
    prep = entry.preprocessing
    record = {
        'name': entry.name, 'architecture': entry.architecture, 'family': entry.family,
        'parameters': count_parameters(model), 'input_size': list(prep.input_size), 'mean': list(prep.mean),
        'std': list(prep.std), 'model_kwargs': entry.model_kwargs, 'recipe': asdict(entry.recipe),
        'extensions': state['phase'], 'train_split': f'train[:{TRANSFER_IMAGES}]', 'history': state['history'],
        'train_seconds': round(state['seconds'], 1),
        'trained': model_numbers(loaded.model, loaded.preprocessing, images, labels, test_ds, val_ds),
        'rounds': [],
    }
    record['model'] = dict(record['trained'], after_rounds=0)
    write_record(record)
    log(f'{entry.name}: trained; test top-1 {record["trained"]["test_top1"]:.2f} (weights in {ZOO / entry.name})')
    return record


def _train_phase(entry, model, adaptor, images, labels, val_ds, state: dict, ckpt: Path, saved, log) -> None:
    """The epochs of the current phase not done yet, each evaluated on the validation split and checkpointed;
    the clean training loss (rule a) after each of the phase's last three."""
    pr = phase_recipe(entry.recipe, state['phase'])
    optimizer, scheduler = _optimizer(pr, model, len(labels) // pr.batch_size)
    if saved is not None:
        optimizer.load_state_dict(saved['optimizer'])
    clock = [time.time()]

    def on_epoch_end(epoch: int, loss: float) -> None:
        row = {'phase': state['phase'], 'epoch': epoch, 'train_loss': round(loss, 4),
               'val_top1': round(evaluate(model, entry.preprocessing, val_ds), 2)}
        if epoch > pr.epochs - 3:  # (a) reads the last three
            clean_loss, clean_top1 = clean_train_metrics(model, images, labels, adaptor)
            row.update(clean_train_loss=round(clean_loss, 5), clean_train_top1=round(clean_top1, 2))
        model.train()
        state['epoch'] = epoch
        state['history'].append(row)
        state['seconds'] += time.time() - clock[0]
        clock[0] = time.time()
        log(f'{entry.name}: epoch {epoch}/{pr.epochs} ' + ' '.join(f'{k} {v}' for k, v in row.items() if k != 'epoch'))
        tmp = ckpt.with_suffix('.tmp')
        torch.save({'model': model.state_dict(), 'optimizer': optimizer.state_dict(), 'state': state,
                    'recipe': asdict(entry.recipe)}, tmp)
        tmp.replace(ckpt)

    if state['epoch'] < pr.epochs:
        run_epochs(model, images, labels, pr, adaptor, optimizer, scheduler, state['epoch'], pr.epochs, entry.name,
                   on_epoch_end)


def _optimizer(recipe: Recipe, model, steps: int):
    """A phase's optimizer and per-update cosine schedule."""
    from timm.optim import create_optimizer_v2
    from timm.scheduler import create_scheduler_v2
    r = recipe
    optimizer = create_optimizer_v2(model, opt='momentum' if r.opt == 'sgd' else r.opt, lr=r.lr,
                                    weight_decay=r.weight_decay, momentum=r.momentum)
    scheduler, _ = create_scheduler_v2(optimizer, sched='cosine', num_epochs=r.epochs, warmup_epochs=r.warmup_epochs,
                                       warmup_lr=r.lr * 0.01, min_lr=1e-6, step_on_epochs=False,
                                       updates_per_epoch=steps)
    return optimizer, scheduler


def model_numbers(model, prep, images, labels, test_ds, val_ds) -> dict:
    loss, top1 = clean_train_metrics(model, images, labels, InputAdaptor(PIXELS, prep))
    return {'test_top1': round(evaluate(model, prep, test_ds), 2), 'val_top1': round(evaluate(model, prep, val_ds), 2),
            'clean_train_loss': round(loss, 5), 'clean_train_top1': round(top1, 2)}


# ----------------------------------------------------------------------------- check rounds

def check_round(entry: ZooEntry, k: int, data_dir: str, threads: int, log=print) -> dict:
    """Round k: the study's CE control from the model now in zoo/converged/NAME, seed CHECK_SEED + k."""
    work = CACHE / 'checks'
    name = f'{entry.name}__check{k}'
    flags = list(CHECK_FLAGS)
    flags[flags.index('--seed') + 1] = str(CHECK_SEED + k)
    cmd = [sys.executable, '-m', 'timm_gkt.train', '--model', f'local-dir:{ZOO / entry.name}', '--data-dir', data_dir,
           '--output', str(work), '--experiment', name, '--resume', 'auto', *flags]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    t0 = time.time()
    log(f'{entry.name}: check round {k} (CE control, seed {CHECK_SEED + k})')
    (work / f'{name}.log').parent.mkdir(parents=True, exist_ok=True)
    with open(work / f'{name}.log', 'w') as out:
        code = subprocess.run(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
    if code != 0:
        raise SystemExit(f'{entry.name}: check round {k} failed (exit {code}); log: {work / f"{name}.log"}')
    res = json.loads((work / name / 'results.json').read_text())
    return {'round': k, 'seed': CHECK_SEED + k, 'top1_before': res['top1_before'], 'top1_after': res['top1_after'],
            'delta': res['transfer_delta'], 'p_value': res['p_value'], 'gains': res['gains'], 'losses': res['losses'],
            'export': str((work / name / 'export').relative_to(ROOT)), 'seconds': round(time.time() - t0, 1)}


def converge(entry: ZooEntry, record: dict, images, labels, test_ds, val_ds, data_dir: str, threads: int,
             log=print) -> dict:
    """Check rounds until one passes (the model it started from is kept) or MAX_ROUNDS have failed.

    A round is recorded before a failed round's result replaces the model, and the replacement is finished on
    resume (it copies the round's export again), so a process killed in between neither repeats the round nor
    leaves weights that the record does not describe."""
    while True:
        adopt_failed_round(entry, record, images, labels, test_ds, val_ds, log)
        verdict = convergence(record)
        if verdict['check_passed_in_round'] is not None or len(record['rounds']) >= MAX_ROUNDS:
            break
        k = len(record['rounds']) + 1
        result = check_round(entry, k, data_dir, threads, log)
        after = load_model(f'local-dir:{ROOT / result["export"]}')
        before = load_model(f'local-dir:{ZOO / entry.name}')
        result['val_delta'] = round(evaluate(after.model, after.preprocessing, val_ds)
                                    - evaluate(before.model, before.preprocessing, val_ds), 2)
        result['passed'] = check_passes(result['delta'], result['p_value'])
        log(f'{entry.name}: round {k}: test {result["delta"]:+.2f} (p = {result["p_value"]:.2g}), validation '
            f'{result["val_delta"]:+.2f}: {"passed" if result["passed"] else "not converged yet"}')
        record['rounds'].append(result)
        record['convergence'] = convergence(record)
        write_record(record)
    record['convergence'] = convergence(record)
    write_record(record)
    return record


def adopt_failed_round(entry: ZooEntry, record: dict, images, labels, test_ds, val_ds, log=print) -> None:
    """A failed last round trains the model longer: its export becomes the model (idempotent)."""
    last = record['rounds'][-1] if record.get('rounds') else None
    if last is None or last['passed'] or record['model'].get('after_rounds') == last['round']:
        return
    after = load_model(f'local-dir:{ROOT / last["export"]}')
    model = create_model(entry)
    model.load_state_dict(after.model.state_dict())
    save_weights(model.eval(), entry, ZOO / entry.name)
    kept = load_model(f'local-dir:{ZOO / entry.name}')
    record['model'] = dict(model_numbers(kept.model, kept.preprocessing, images, labels, test_ds, val_ds),
                           after_rounds=last['round'])
    log(f'{entry.name}: the model is round {last["round"]}\'s result now (test {record["model"]["test_top1"]})')
    write_record(record)


# ----------------------------------------------------------------------------- index, verify, table

def write_index() -> list[dict]:
    records = [r for e in ENTRIES if (r := read_record(e.name)) and (ZOO / e.name / 'model.safetensors').is_file()]
    models = [{'name': r['name'], 'architecture': r['architecture'], 'family': r['family'],
               'parameters': r['parameters'], 'input_size': r['input_size'], 'mean': r['mean'], 'std': r['std'],
               'test_top1': r['model']['test_top1'], 'val_top1': r['model']['val_top1'],
               'clean_train_loss': r['model']['clean_train_loss'], 'clean_train_top1': r['model']['clean_train_top1'],
               'recipe': r['recipe'], 'extensions': r.get('extensions', 0), 'model_kwargs': r['model_kwargs'],
               'train_split': r['train_split'], 'convergence': convergence(r), 'check_rounds': r['rounds']} for r in records]
    index = {'dataset': 'torch/fashion_mnist', 'train_split': f'train[:{TRANSFER_IMAGES}]',
             'validation_split': VALIDATION_SPLIT, 'eval_split': 'test (10,000 images)',
             'label_names': list(FASHION_MNIST_LABELS),
             'rule': {'loss_tolerance': LOSS_TOLERANCE, 'check_delta': CHECK_DELTA, 'check_p': CHECK_P,
                      'max_rounds': MAX_ROUNDS, 'check_recipe': CHECK_FLAGS, 'plan': 'studies/converged/PLAN.md'},
             'models': models}
    ZOO.mkdir(parents=True, exist_ok=True)
    tmp = ZOO / 'index.json.tmp'
    tmp.write_text(json.dumps(index, indent=1))
    tmp.replace(ZOO / 'index.json')
    return models


def verify(data_dir: Path) -> bool:
    """Reload every model of zoo/converged and check its recorded top-1 (the first zoo's check, this zoo's folder)."""
    return verify_zoo(ZOO, data_dir)


def _extendable(record: dict) -> bool:
    """A record whose model failed rule (a) and may still be extended (made before extensions existed, or cut)."""
    phase = record.get('extensions', 0)
    return not loss_stopped_falling(phase_clean_losses(record['history'], phase)) and phase < MAX_EXTENSIONS


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--only', default='', help='comma-separated model names')
    p.add_argument('--data-dir', default=str(ROOT / 'data'))
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--verify', action='store_true', help='reload every model and check its recorded top-1')
    p.add_argument('--markdown', action='store_true', help='print the zoo table from zoo/converged/index.json')
    p.add_argument('--train-only', action='store_true', help='train and save; leave the check rounds for later')
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.verify:
        sys.exit(0 if verify(Path(args.data_dir)) else 1)
    if args.markdown:
        print(markdown_table(json.loads((ZOO / 'index.json').read_text())['models']))
        return
    by_name = {e.name: e for e in ENTRIES}
    wanted = [n for n in args.only.split(',') if n] or list(by_name)
    unknown = [n for n in wanted if n not in by_name]
    if unknown:
        p.error(f'unknown model(s) {unknown}; choose from {list(by_name)}')
    images, labels = load_fashion_mnist_tensors(args.data_dir, train=True)
    images, labels = images[:TRANSFER_IMAGES], labels[:TRANSFER_IMAGES]
    test_ds = create_image_dataset('torch/fashion_mnist', args.data_dir, 'test')
    val_ds = create_image_dataset('torch/fashion_mnist', args.data_dir, VALIDATION_SPLIT)
    for name in wanted:
        entry = by_name[name]
        record = read_record(name)
        if record is None or record['recipe'] != asdict(entry.recipe) \
                or not (ZOO / name / 'model.safetensors').is_file() or _extendable(record):
            record = train(entry, images, labels, test_ds, val_ds)
        if not args.train_only:
            record = converge(entry, record, images, labels, test_ds, val_ds, args.data_dir, args.threads)
        write_index()
        print(f'{name}: {json.dumps(convergence(record))}', flush=True)


if __name__ == '__main__':
    main()
