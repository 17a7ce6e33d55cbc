"""The command line: every flag of ``timm_gkt.train`` with its default and help (timm's names and meanings).

:mod:`timm_gkt.config` parses it into the frozen :class:`~timm_gkt.config.TransferConfig`.
"""
from __future__ import annotations

import argparse

from ..transfer.methods import DEFAULT_METHOD, METHODS
from .boundary import DEBUG_ENV, emit
from ..transfer.stages import MULTI_TEACHER_MODES, TEACHER_ORDERS

DESCRIPTION = "Transfer a teacher's complementary knowledge into a pretrained timm student."
DEFAULT_LR = 1e-3  # METHOD.md's zoo-scale runs; the paper used 1e-4 * batch / 256
# "SGD momentum 0.9" (METHOD.md): timm's 'sgd' would add Nesterov momentum
DEFAULT_OPT = 'momentum'
DEFAULT_DATASET = 'torch/fashion_mnist'
DEFAULT_DATA_DIR = 'data'


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one ``error: ...`` line (exit 2) like every other bad input."""

    def error(self, message: str):
        emit(f'error: {message}; see --help for the flags and their values', 2)
        self.exit(2)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every flag's default, once: a help text that already states its default (``--lr``) is left as it is."""

    def _get_help_string(self, action):
        text = action.help or ''
        if 'default' in text or action.default is argparse.SUPPRESS or not action.option_strings:
            return text
        return f'{text} (default: %(default)s)'.lstrip()


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog='timm_gkt.train', description=DESCRIPTION, formatter_class=HelpFormatter)
    _add_dataset_flags(p.add_argument_group('Dataset (see README, "Your own data")'))
    g = p.add_argument_group('Model')
    g.add_argument('--model', required=False,
                   help='student: timm name (short names such as pit_b resolve to pit_b_224), hf-hub:ORG/REPO or '
                        'local-dir:PATH (required)')
    g.add_argument('--pretrained', action=argparse.BooleanOptionalAction, default=True,
                   help='load the student\'s pretrained weights (a transfer needs a trained student)')
    g.add_argument('--initial-checkpoint', default='', help='load these student weights after creation')
    g.add_argument('--resume', default='', help="continue from a checkpoint folder of this trainer, or 'auto'")
    g.add_argument('-b', '--batch-size', type=int, default=128,
                   help='images per process and step; the global batch is this times the number of processes')
    g.add_argument('-vb', '--validation-batch-size', type=int, default=None,
                   help='evaluation batch per process (default: twice --batch-size)')
    g.add_argument('-j', '--workers', type=int, default=None,
                   help='loader processes per rank (default: 0 on machines with 2 cores or fewer, else 4)')
    g.add_argument('--grad-accum-steps', type=int, default=1, help='batches per optimizer step')
    _add_refused_flags(g)

    g = p.add_argument_group('Optimizer and schedule')
    g.add_argument('--opt', default=DEFAULT_OPT,
                   help="timm optimizer name ('momentum': SGD with momentum, no Nesterov; timm's 'sgd' is Nesterov). "
                        'Weight decay skips 1-D parameters (biases, norm weights), as timm does')
    g.add_argument('--lr', type=float, default=None,
                   help=f'absolute learning rate, not scaled by batch size, processes or accumulation (default: '
                        f'{DEFAULT_LR:g} for the small zoo-scale runs of METHOD.md; the paper used 1e-4 * '
                        f'global batch/256)')
    g.add_argument('--momentum', type=float, default=0.9, help='SGD momentum')
    g.add_argument('--weight-decay', type=float, default=1e-4, help='weight decay')
    g.add_argument('--clip-grad', type=float, default=None, help='clip the gradient norm at this value (default: no '
                                                                  'clipping)')
    g.add_argument('--sched', default='cosine', help='timm scheduler name')
    g.add_argument('--sched-on-updates', action=argparse.BooleanOptionalAction, default=True,
                   help='step the schedule every optimizer update rather than every epoch')
    g.add_argument('--epochs', type=int, default=2, help='epochs per stage')
    g.add_argument('--warmup-epochs', type=int, default=0, help='linear warm-up epochs')
    g.add_argument('--warmup-lr', type=float, default=1e-5, help='learning rate the warm-up starts from')
    g.add_argument('--min-lr', type=float, default=0.0, help='lower bound of the schedule')

    _add_augmentation_flags(p.add_argument_group('Augmentation (timm transforms; flips only by default: a pretrained '
                                                 'model goes on seeing whole images)'))
    _add_transfer_flags(p.add_argument_group('Knowledge transfer'))
    _add_hub_flags(p.add_argument_group('Hub'))
    _add_misc_flags(p.add_argument_group('Misc'))
    return p


def _add_hub_flags(g) -> None:
    g.add_argument('--push-to-hub', default=None, metavar='REPO_ID',
                   help='push the student if it passes the gate (default: no push)')
    g.add_argument('--hub-private', action='store_true', help='create the repository private')
    g.add_argument('--hub-revision', default=None, help='branch to push to (default: main)')
    g.add_argument('--hub-create-pr', action='store_true', help='open a pull request instead of committing')
    g.add_argument('--push-min-delta', type=float, default=0.0, help='push only if Δtransf exceeds this (points)')
    g.add_argument('--push-max-pvalue', type=float, default=None,
                   help='push only if McNemar p is at most this (default: no p-value gate)')
    g.add_argument('--push-beat-control', action='store_true',
                   help='push only if the student is significantly better than the CE control (paired McNemar p < '
                        '0.05; needs --control ce); a student better than its start but not than more training '
                        'exits 4, not 3')


def _add_misc_flags(g) -> None:
    g.add_argument('--amp', action='store_true', help='mixed precision (Accelerate)')
    g.add_argument('--amp-dtype', default='bfloat16', choices=('bfloat16', 'float16'), help='mixed precision type')
    g.add_argument('--seed', type=int, default=42, help='seed of models, loaders and the subsets\' samples')
    g.add_argument('--log-interval', type=int, default=50, help='kept for timm configs; progress bars show progress')
    g.add_argument('--checkpoint-hist', type=int, default=2, help='epoch checkpoints to keep')
    g.add_argument('--output', default='output/train', help='parent folder of run folders')
    g.add_argument('--experiment', default='', help='run folder name (default: date, student and method)')
    g.add_argument('--debug', action='store_true', help=f'show the traceback behind an error (or set {DEBUG_ENV}=1)')


def _add_augmentation_flags(g) -> None:
    # whole images: crops of 80-100 % cost plateaued zoo students 0.45-1.66 points under plain CE (studies/defaults/)
    g.add_argument('--scale', type=float, nargs=2, default=(1.0, 1.0), metavar=('MIN', 'MAX'),
                   help='random resized crop: area range (1 1: the whole image; timm\'s from-scratch recipe is '
                        '0.08 1)')
    g.add_argument('--ratio', type=float, nargs=2, default=(1.0, 1.0), metavar=('MIN', 'MAX'),
                   help='random resized crop: aspect ratio range (timm\'s from-scratch recipe is 0.75 1.33)')
    g.add_argument('--hflip', type=float, default=0.5, help='horizontal flip probability')
    g.add_argument('--vflip', type=float, default=0.0, help='vertical flip probability')
    g.add_argument('--color-jitter', type=float, default=0.0, help='colour jitter strength')
    g.add_argument('--aa', default=None, help='auto-augment policy, e.g. rand-m9-mstd0.5 (default: none)')
    g.add_argument('--reprob', type=float, default=0.0, help='random erasing probability')
    g.add_argument('--mixup', type=float, default=0.0, help='mixup alpha (0: off)')
    g.add_argument('--cutmix', type=float, default=0.0, help='cutmix alpha (0: off)')
    g.add_argument('--mixup-prob', type=float, default=1.0, help='probability of mixup or cutmix per batch')
    g.add_argument('--smoothing', type=float, default=0.0,
                   help='label smoothing of the mixup/cutmix targets (timm\'s Mixup would add 0.1 unless told)')
    g.add_argument('--no-aug', action='store_true', help='no augmentation at all')


# timm flags users reach for first that a transfer cannot honour: accepted by the parser so the error says why
REFUSED_FLAGS = {
    'img_size': 'each model reads images at the input size of its pretrained config (a different size would '
                'change what the pretrained student and teachers see); export the model with the size you want',
    'input_size': 'each model reads images at the input size of its pretrained config; export the model with the '
                  'input size you want',
    'model_ema': 'timm\'s weight EMA would export an average the transfer metrics never evaluated; use '
                 '--transfer-method xekl-mcl, whose slow weights are the evaluated and exported student',
}


def _add_refused_flags(g) -> None:
    g.add_argument('--img-size', type=int, default=None, help='refused: each model keeps its own input size')
    g.add_argument('--input-size', type=int, nargs=3, default=None, metavar=('C', 'H', 'W'),
                   help='refused: each model keeps its own input size')
    g.add_argument('--model-ema', action='store_true', help='refused: timm\'s weight EMA (see README)')


def control_choice(value: str) -> str | None:
    """``--control``: 'ce', or 'none' (None), so that a command line can turn off the control of a ``-c`` config."""
    if value not in ('ce', 'none'):
        raise argparse.ArgumentTypeError(f"invalid choice: {value!r} (choose from 'ce', 'none')")
    return None if value == 'none' else value


def _add_transfer_flags(g) -> None:
    g.add_argument('--teachers', default='',
                   help="comma-separated teacher specs (short timm names resolve too), or 'auto' to choose them from "
                        '--teacher-pool')
    g.add_argument('--teacher-pool', default='', metavar='SPECS',
                   help='with --teachers auto: the candidate teachers (comma-separated specs), scanned on a selection '
                        'split carved from the transfer data and ranked by predicted gain (ρpos without a predictor)')
    g.add_argument('--max-teachers', type=int, default=3, metavar='K',
                   help='with --teachers auto: at most this many teachers, in a sequential run')
    g.add_argument('--selection-subset', type=int, default=5000, metavar='N',
                   help='with --teachers auto: the selection split, a seeded class-stratified sample of N images of '
                        'the transfer split (never the evaluation split)')
    g.add_argument('--control', default=None, type=control_choice, metavar='{ce,none}',
                   help='after the transfer, train the CE control (plain cross-entropy from the same student, data '
                        'order, seed and budget) and compare the two on the same images (paired McNemar): one more '
                        'training run, which the teacher cache does not shorten; none turns off a -c config\'s '
                        'control (default: none)')
    g.add_argument('--transfer-teacher', action='append', default=[], metavar='SPEC', help='one teacher (repeatable)')
    g.add_argument('--transfer-method', default=DEFAULT_METHOD, choices=list(METHODS),
                   help='; '.join(f'{m.name}: {m.title}' for m in METHODS.values()))
    g.add_argument('--dp-mode', default='supervised', choices=('supervised', 'unsupervised'),
                   help='KL+DP routing by true-class probability (supervised) or confidence (no labels)')
    g.add_argument('--kd-temperature', type=float, default=1.0, help='distillation temperature T')
    g.add_argument('--xe-weight', type=float, default=None,
                   help='weight λ of cross-entropy on the labels, the KL term gets 1 - λ (default: 0.3 for XE-KL and '
                        'XE-KL + MCL, the paper\'s λ = 0.7 on KL; 0 for KL+DP, the paper\'s)')
    g.add_argument('--dp-routing', default='two-way', choices=('two-way', 'three-way', 'soft'),
                   help='KL+DP: two-way is the paper\'s (teacher or frozen student); three-way learns the label where '
                        'the more confident model is wrong; soft mixes both by their true-class probabilities')
    g.add_argument('--dp-calibration', default='none', choices=('none', 'temperature'),
                   help='KL+DP: route on temperature-calibrated probabilities (one temperature per frozen model, '
                        'fitted before training on --dp-calibration-images transfer images)')
    g.add_argument('--dp-calibration-images', type=int, default=2000, metavar='N',
                   help='seeded class-stratified transfer images the temperatures are fitted on')
    g.add_argument('--mcl-momentum', type=float, default=None,
                   help='MCL τ (default: 0.9999 scaled to the run length so the initial student keeps ~61%%)')
    g.add_argument('--mcl-interval', type=int, default=2, help='MCL: interpolate every N optimizer steps')
    g.add_argument('--multi-teacher', default='sequential', choices=MULTI_TEACHER_MODES,
                   help='several teachers: one stage each, all at once, or a soup of per-teacher transfers')
    g.add_argument('--teacher-order', default='ascending', choices=TEACHER_ORDERS,
                   help='sequential stage order by measured teacher top-1')
    g.add_argument('--allow-below-chance', action='store_true',
                   help='train even when a model is right far less often than guessing on the evaluation split '
                        '(refused by default: the mark of classes in another order)')
    g.add_argument('--teacher-cache', default=None, metavar='DIR',
                   help='store teacher and frozen-student outputs per (epoch, sample) and every model\'s "before" '
                        'predictions here; a later run with the same models, data, seed and augmentation reads '
                        'them instead of computing them (results are unchanged)')
    g.add_argument('--teacher-cache-storage', default='float32', metavar='FORMAT',
                   help='cached logits as float32 (exact), float16 (half the size) or topk:K (many classes)')
    g.add_argument('--dry-run', action='store_true',
                   help='resolve models, check weights (without downloading them), labels, splits, data and '
                        'credentials, print the plan, exit')


def _add_dataset_flags(g) -> None:
    g.add_argument('--data-dir', default=None,
                   help=f'dataset root: the folder holding train/ and validation/ (folders), the datasets cache '
                        f'(hfds/) or FashionMNIST/ (torch/) (default: {DEFAULT_DATA_DIR})')
    g.add_argument('--dataset', '-d', default=None,
                   help=f'timm dataset: torch/NAME, hfds/NAME or folder (timm\'s ImageFolder layout under '
                        f'--data-dir) (default: {DEFAULT_DATASET}; a --data-dir without Fashion-MNIST needs it)')
    g.add_argument('--train-split', default='train',
                   help='transfer images: a split name, or a slice such as "train[:55000]" or "train[:90%%]"')
    g.add_argument('--val-split', default=None,
                   help='held-out split every metric is computed on; a split name or a slice such as '
                        '"train[55000:]" (default: test for torchvision datasets with only train and test, '
                        'such as Fashion-MNIST; validation otherwise)')
    g.add_argument('--class-map', default='',
                   help='timm\'s class map: a .txt file with one class (folder) name per line, line number = the '
                        'model\'s class index (folder and hfds/ datasets; default: none, classes matched by name)')
    g.add_argument('--trust-label-order', action='store_true',
                   help='accept dataset target i as model class i when no class names exist to check the order')
    g.add_argument('--dataset-download', action='store_true', help='let torch/ datasets download when missing')
    g.add_argument('--input-key', default=None, metavar='COLUMN',
                   help='hfds/ datasets: the image column (default: timm\'s reader reads "image")')
    g.add_argument('--target-key', default=None, metavar='COLUMN',
                   help='hfds/ datasets: the label column, a ClassLabel (default: timm\'s reader reads "label")')
    g.add_argument('--train-subset', type=int, default=0, metavar='N',
                   help='transfer on a seeded, class-stratified sample of N images (quick runs; 0 = all)')
    g.add_argument('--data-in-memory', action='store_true',
                   help='decode the training images once and augment batches on the device (small datasets; '
                        'flips only: needs --scale 1 1 --ratio 1 1 and no colour jitter, AutoAugment or erasing)')
    g.add_argument('--eval-subset', type=int, default=0, metavar='N',
                   help='evaluate on a seeded, class-stratified sample of N images (quick runs; 0 = all)')
