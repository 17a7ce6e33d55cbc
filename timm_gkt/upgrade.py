"""``python -m timm_gkt.upgrade``: see :mod:`timm_gkt.cli.upgrade`."""
import sys

from timm_gkt.cli.upgrade import main

if __name__ == '__main__':
    sys.exit(main())
