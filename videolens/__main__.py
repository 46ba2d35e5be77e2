"""``python -m videolens`` (and ``torchrun --nproc-per-node K -m videolens ...``): the command line."""

import sys

from .cli import main

sys.exit(main())
