"""``python -m granvae_edge`` is the same as the ``granvae-edge`` console script."""

import sys

from .cli import main

sys.exit(main())
