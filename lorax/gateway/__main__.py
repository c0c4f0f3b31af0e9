"""``python -m lorax.gateway``: the same as ``lorax gateway``."""

from __future__ import annotations

import sys

from lorax.gateway.cli import main

if __name__ == "__main__":
    sys.exit(main())
