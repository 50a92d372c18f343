"""``python -m sparseflash`` runs the command line (see :mod:`sparseflash.cli`)."""
import sys

from .cli import main

sys.exit(main())
