#!/usr/bin/env python
"""Transfer a teacher's complementary knowledge into a pretrained timm student.

    accelerate launch timm_gkt/train.py --model pit_b --teachers volo_d2,resmlp_36
    python -m timm_gkt.train --model local-dir:zoo/vit_a --teachers local-dir:zoo/convnext_a \\
        --dataset torch/fashion_mnist --data-dir data

Flags (timm's names and meanings) are in :mod:`timm_gkt.cli.flags`. Defaults follow METHOD.md:
``--model X --teachers Y`` runs supervised KL+DP, one sequential stage per teacher (weakest first).
The run itself is :mod:`timm_gkt.cli.run`: preflight -> the "before" evaluation and the stages
(:mod:`timm_gkt.transfer.engine`) -> results, export, card and push.
"""
from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ''):  # run as a file: accelerate launch timm_gkt/train.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = 'timm_gkt'

from timm_gkt.cli.config import TransferConfig, parse_args  # noqa: F401  (the script's public names)
from timm_gkt.cli.run import INTERRUPTED, main, run  # noqa: F401

if __name__ == '__main__':
    sys.exit(main())
