"""``python -m lorax.testing``: the same as ``lorax fake-server``."""

from __future__ import annotations

from lorax.testing.cli import main

raise SystemExit(main())
