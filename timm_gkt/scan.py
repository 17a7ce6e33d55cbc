"""``python -m timm_gkt.scan``: see :mod:`timm_gkt.cli.scan`."""
import sys

from timm_gkt.cli.scan import main

if __name__ == '__main__':
    sys.exit(main())
