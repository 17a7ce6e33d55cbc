"""``python -m timm_gkt.launch [--num-processes N] -- <train flags>``: see :mod:`timm_gkt.cli.launch`."""
import sys

from timm_gkt.cli.launch import main

if __name__ == '__main__':
    sys.exit(main())
