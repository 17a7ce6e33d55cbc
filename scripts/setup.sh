#!/usr/bin/env bash
# Install everything timm_gkt needs on a fresh Debian/Ubuntu machine: the Fashion-MNIST package,
# a virtual environment with a torch build that suits the machine, timm_gkt itself, prepared data.
# Safe to run again: every step skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] && [ ! -f data/FashionMNIST/raw/t10k-labels-idx1-ubyte ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "[setup] installing Debian package dataset-fashion-mnist"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null
  else
    echo "[setup] no root apt: the data step below will try a torchvision download instead"
  fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv"
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
if ! .venv/bin/python -c "import torch, torchvision" 2>/dev/null; then
  case "$(uname -m)" in
    # versions known to install together here (see README, "Installation notes")
    x86_64)  TORCH="torch==2.14.1 torchvision==0.29.1" ;;
    aarch64) TORCH="torch==2.9.1 torchvision==0.24.1" ;;
    *)       TORCH="torch torchvision" ;;
  esac
  echo "[setup] installing $TORCH"
  .venv/bin/python -m pip install -q $TORCH
fi
echo "[setup] installing timm_gkt and its dependencies"
.venv/bin/python -m pip install -q -e '.[test]'
.venv/bin/python -m timm_gkt.data prepare --data-dir data
