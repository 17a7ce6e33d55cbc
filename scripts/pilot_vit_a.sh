#!/usr/bin/env bash
# Pilot of the zoo study on its one plateaued student: vit_a after two polish rounds
# (`python scripts/polish_zoo.py --only vit_a` makes .zoo_cache/polish/vit_a/round2/export, top-1 86.88;
# its CE control is polish round 3: +0.14, p = 0.14). The study's recipe (scripts/study.py BASE_FLAGS) at
# lr 1e-3, the CE control's (not chosen on the validation split: the pilot compares like with like).
# Metrics on the 10,000 test images. Resumable: a finished run (its record in studies/zoo/pilot/) is skipped.
#   bash scripts/pilot_vit_a.sh "resnet_a kldp" "resnet_a kl" "vit_b kldp" "vit_b kl"
set -u
cd "$(dirname "$0")/.."
S=local-dir:.zoo_cache/polish/vit_a/round2/export
FLAGS="--opt momentum --weight-decay 1e-4 --epochs 2 -b 128 --scale 1 1 --ratio 1 1 --hflip 0.5 --seed 0
       --checkpoint-hist 1 --train-split train[:55000] --lr 1e-3"
mkdir -p studies/zoo/pilot .zoo_cache/pilot
for spec in "$@"; do
  set -- $spec; T=$1; M=$2; NAME=vit_a_r2__${T}__${M}
  [ -f studies/zoo/pilot/$NAME.json ] && continue
  OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 .venv/bin/python -m timm_gkt.train --model $S --teachers local-dir:zoo/$T \
     --transfer-method $M $FLAGS --data-dir data --output .zoo_cache/pilot --experiment $NAME --resume auto \
     > .zoo_cache/pilot/$NAME.log 2>&1 && cp .zoo_cache/pilot/$NAME/results.json studies/zoo/pilot/$NAME.json
done
