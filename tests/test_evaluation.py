"""One pass of predictions (timm_gkt/evaluation.py): every model through its own eval transform, same images,
targets in order, modes restored; on hand-made images whose right answers are known."""
import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from timm_gkt.evaluation.predictions import build_eval_views, predict, top1
from timm_gkt.models.frozen import InStudentOrder
from timm_gkt.models.load import Preprocessing

GREY = Preprocessing(input_size=(1, 28, 28), mean=(0.0,), std=(1.0,))
RGB32 = Preprocessing(input_size=(3, 32, 32), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
LEVELS = [0, 40, 80, 120, 160, 200, 240]  # one flat grey image per level
TARGETS = [0, 0, 1, 1, 2, 2, 2]


class FlatImages(torch.utils.data.Dataset):
    transform = None

    def __len__(self):
        return len(LEVELS)

    def __getitem__(self, i):
        return Image.fromarray(np.full((28, 28), LEVELS[i], dtype=np.uint8), 'L'), TARGETS[i]


class Brightness(nn.Module):
    """Predicts the class of an image from its brightness (in [0, 1]) after undoing its own normalisation."""

    def __init__(self, prep: Preprocessing, cuts=(0.25, 0.55)):
        super().__init__()
        self.prep, self.cuts, self.seen = prep, cuts, []
        self.dummy = nn.Linear(1, 1)

    def forward(self, x):
        self.seen.append(tuple(x.shape[1:]))
        brightness = (x * self.prep.std[0] + self.prep.mean[0]).mean(dim=(1, 2, 3))
        cls = (brightness > self.cuts[0]).long() + (brightness > self.cuts[1]).long()
        return nn.functional.one_hot(cls, 3).float() * 5


def test_each_model_sees_the_images_through_its_own_eval_transform():
    grey, rgb = Brightness(GREY), Brightness(RGB32, cuts=(0.5, 0.7))
    (p_grey, p_rgb), target = predict([grey, rgb], [GREY, RGB32], FlatImages(), batch_size=3, progress=False)
    assert target.tolist() == TARGETS
    assert set(grey.seen) == {(1, 28, 28)} and set(rgb.seen) == {(3, 32, 32)}
    # brightness levels / 255: .00 .16 .31 .47 .63 .78 .94
    assert p_grey.tolist() == [0, 0, 1, 1, 2, 2, 2]
    assert p_rgb.tolist() == [0, 0, 0, 0, 1, 2, 2]
    assert top1(p_grey, target) == pytest.approx(100.0)
    assert top1(p_rgb, target) == pytest.approx(100.0 * 4 / 7)


def test_equal_preprocessing_is_transformed_once():
    views, index = build_eval_views([GREY, RGB32, Preprocessing((1, 28, 28), (0.0,), (1.0,))])
    assert len(views) == 2 and index == [0, 1, 0]


def test_models_come_back_in_the_mode_they_had_and_labels_can_be_reordered():
    training, frozen = Brightness(GREY).train(), Brightness(GREY).eval()
    reordered = InStudentOrder(frozen, torch.tensor([2, 1, 0]))  # the model's class i is the student's 2 - i
    (p_train, p_reordered), _ = predict([training, reordered], [GREY, GREY], FlatImages(), progress=False)
    assert training.training and not frozen.training and not reordered.training
    assert p_reordered.tolist() == [2 - c for c in p_train.tolist()]


class NearTie(nn.Module):
    """Logits 64.0 and 64.1 for every image: class 1 in float32, a tie (class 0) once bfloat16 rounds them."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(1, 2, bias=False)
        with torch.no_grad():
            self.head.weight.copy_(torch.tensor([[64.0], [64.1]]))

    def forward(self, x):
        return self.head(x.new_ones(x.shape[0], 1))


def test_under_amp_the_reported_predictions_are_the_float32_models():
    """--amp trains under autocast, but what is exported is the float32 model: evaluation must score that one."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    model = NearTie()
    AcceleratorState._reset_state(reset_partial_state=True)  # Accelerate keeps one state per process
    try:
        accelerator = Accelerator(cpu=True, mixed_precision='bf16')
        with accelerator.autocast():
            assert model(torch.zeros(1, 1, 28, 28)).argmax(-1).item() == 0  # what an autocast evaluation would say
        (pred,), _ = predict([model], [GREY], FlatImages(), accelerator=accelerator, progress=False)
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
    assert pred.tolist() == [1] * len(LEVELS)
