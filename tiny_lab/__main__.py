"""``python -m tiny_lab``."""

from .cli import main

raise SystemExit(main())
