"""`python -m vitssl` (and `torchrun -m vitssl`) runs the command line."""

import sys

from vitssl.cli import main

sys.exit(main())
