"""Tiny deterministic networks and batches shared by the task and frozen-model tests."""
import timm
import torch
import torch.nn as nn

from timm_gkt.models.load import InputAdaptor, Preprocessing

NUM_CLASSES = 3
BATCH = 16
STUDENT_PREP = Preprocessing(input_size=(1, 8, 8), mean=(0.5,), std=(0.25,))
# the teacher was "trained" on larger RGB images with other statistics
TEACHER_PREP = Preprocessing(input_size=(3, 12, 12), mean=(0.4, 0.5, 0.6), std=(0.2, 0.3, 0.4))
PERM = torch.tensor([2, 0, 1])


class TinyStudent(nn.Module):
    """Deterministic student (no dropout, no BN) so ``output`` can be compared with a plain forward."""

    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.fc1 = nn.Linear(64, 16)
        self.fc2 = nn.Linear(16, NUM_CLASSES)

    def forward(self, x):
        return self.fc2(torch.tanh(self.fc1(x.flatten(1))))


class NoisyNet(nn.Module):
    """BatchNorm and dropout: outputs change between calls and BN statistics move in train mode."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.5)
        self.head = nn.Linear(4 * 8 * 8, NUM_CLASSES)

    def forward(self, x):
        return self.head(self.drop(torch.relu(self.bn(self.conv(x))).flatten(1)))


class ConstantLogits(nn.Module):
    def __init__(self, row):
        super().__init__()
        self.bias = nn.Parameter(torch.tensor(row))

    def forward(self, x):
        return self.bias.expand(x.shape[0], -1) + 0 * x.flatten(1).sum(1, keepdim=True)


def vit_teacher(seed, scale=6.0):
    torch.manual_seed(seed)
    model = timm.create_model('test_vit', num_classes=NUM_CLASSES, in_chans=3, img_size=12, patch_size=4, depth=1)
    with torch.no_grad():
        # sharper logits so routing decisions differ from sample to sample
        model.head.weight.mul_(scale)
    return model.eval()


def student_batch(seed=1):
    g = torch.Generator().manual_seed(seed)
    pixels = torch.rand(BATCH, 1, 8, 8, generator=g)
    target = torch.randint(0, NUM_CLASSES, (BATCH,), generator=g)
    return (pixels - 0.5) / 0.25, target


def teacher_logits_by_hand(model, x, perm=PERM):
    """What the task's teacher must answer: adapted input, raw model, reordered classes."""
    with torch.no_grad():
        return model(InputAdaptor(STUDENT_PREP, TEACHER_PREP)(x))[:, perm].float()
