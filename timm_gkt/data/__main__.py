"""``python -m timm_gkt.data prepare --data-dir data``: put Fashion-MNIST where timm reads it."""
from __future__ import annotations

import argparse

from timm_gkt.data.sources import DEBIAN_FASHION_MNIST, DataUnavailableError, prepare_fashion_mnist


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m timm_gkt.data', description=__doc__.split('\n')[0])
    sub = parser.add_subparsers(dest='command', required=True)
    p = sub.add_parser('prepare', help='put Fashion-MNIST under DATA_DIR/FashionMNIST/raw')
    p.add_argument('--data-dir', default='data')
    p.add_argument('--source', default=None, help=f'folder with the .gz files (default {DEBIAN_FASHION_MNIST})')
    p.add_argument('--no-download', action='store_true', help='never try torchvision download')
    args = parser.parse_args(argv)
    try:
        raw = prepare_fashion_mnist(args.data_dir, args.source, allow_download=not args.no_download)
    except DataUnavailableError as e:
        raise SystemExit(f'error: {e}')
    print(f'Fashion-MNIST ready in {raw}')



if __name__ == '__main__':
    main()
