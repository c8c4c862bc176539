"""``python -m forsun.cli``: the same as the ``forsun`` console script."""

import sys

from . import main

sys.exit(main())
