"""`python -m cnnlab ...` (also what torchrun launches: torchrun --nproc-per-node N -m cnnlab train ...)."""

import sys

from .cli import main

sys.exit(main())
