"""Training a zoo model on in-memory Fashion-MNIST: recipes, batched augmentation, the epoch loop.

Training runs on in-memory tensors (28x28 images, batched augmentation) because the per-image PIL pipeline costs
more than these small models; the recorded top-1 always comes from the regular eval path: timm's eval transform
from each saved config. Used by the first zoo's builder (``studies/zoo/build.py``) and the converged zoo's
(``studies/converged/build.py``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from timm_gkt.data import FASHION_MNIST_LABELS, FASHION_MNIST_MEAN, FASHION_MNIST_STD
from timm_gkt.evaluation import predict, top1
from timm_gkt.models import Preprocessing

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
