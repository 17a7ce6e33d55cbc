"""The zoo study's recipe, its files and its plan constants: what every script of the study shares.

Imported by the study (``studies/zoo/study.py``), its report, the polish to the recipe's plateau, the pilot and
the converged zoo's builder, so that "the study's recipe" is one list of flags.
"""
from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STUDY_DIR = Path(__file__).resolve().parent
RUNS_DIR = STUDY_DIR / 'runs'
ZOO = ROOT / 'zoo'
WORK = ROOT / 'output' / 'study'  # run folders (checkpoints, exports); --work

# The study's one recipe (shared with studies/zoo/polish.py, whose rounds are exactly the CE control):
# SGD with momentum 0.9 (timm 'momentum': no Nesterov), per-update cosine decay, weight decay 1e-4,
# batch 128, flips only (the zoo was trained with shifts and flips), two passes over the 55,000
# transfer images: the first 55,000 training images; the last 5,000 are the validation split on
# which the learning rate was chosen. All reported metrics are on the 10,000 test images.
TRANSFER_SPLIT = 'train[:55000]'
VALIDATION_SPLIT = 'train[55000:]'
BASE_FLAGS = ['--opt', 'momentum', '--weight-decay', '1e-4', '--epochs', '2', '-b', '128',
              '--scale', '1', '1', '--ratio', '1', '1', '--hflip', '0.5', '--seed', '0', '--checkpoint-hist', '1',
              '--train-split', TRANSFER_SPLIT]
LR_GRID = ('1e-4', '3e-4', '1e-3')
# chosen on the validation split by `run --part select` (studies/zoo/README.md, "The learning rate"); None until then
CHOSEN_LR_FILE = STUDY_DIR / 'chosen.json'

PAIR_METHODS = {
    'kl': ['--transfer-method', 'kl'],
    'xekl': ['--transfer-method', 'xekl'],
    'xekl-mcl': ['--transfer-method', 'xekl-mcl'],
    'kldp': ['--transfer-method', 'kldp'],
    'kldp-unsup': ['--transfer-method', 'kldp', '--dp-mode', 'unsupervised'],
}
FIRST_WAVE = ('kldp', 'kl')  # studies/zoo/study.py run --part main runs these for every pair before the rest
# three pairs for the choice of lr: a stronger, an about equal and a weaker teacher, three families
SELECT_PAIRS = (('vit_a', 'resnet_a'), ('effnet_a', 'byob_a'), ('resnet_a', 'convnext_a'))


def zoo_names() -> list[str]:
    return [m['name'] for m in json.loads((ZOO / 'index.json').read_text())['models']]


def chosen_lr() -> str:
    if not CHOSEN_LR_FILE.is_file():
        raise SystemExit('no learning rate chosen yet: run `python -m studies.zoo.study run --part select` first.')
    return json.loads(CHOSEN_LR_FILE.read_text())['lr']


def model_dir(name: str) -> Path:
    """A zoo model's folder: the first zoo's (``zoo/NAME``) or the converged zoo's (``zoo/converged/NAME``)."""
    first, converged = ZOO / name, ZOO / 'converged' / name
    return converged if converged.is_dir() and not first.is_dir() else first


def repo_relative(record: dict) -> dict:
    """A record as it is committed: models in this checkout named by their path in the repository
    (``local-dir:zoo/vit_a``), never by this machine's absolute path."""
    return json.loads(json.dumps(record).replace(f'local-dir:{ROOT.as_posix()}/', 'local-dir:'))
