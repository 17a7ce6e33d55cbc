"""``python -m timm_gkt.push``: see :mod:`timm_gkt.cli.push`."""
import sys

from timm_gkt.cli.push import main

if __name__ == '__main__':
    sys.exit(main())
