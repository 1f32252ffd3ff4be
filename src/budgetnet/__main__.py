"""`python -m budgetnet` (and `torchrun -m budgetnet train ...`) runs the command line."""
import sys

from .cli import main

sys.exit(main())
