"""`python -m cocogan ...` (and `torchrun ... -m cocogan train ...`): the `cocogan` command."""

import sys

from cocogan.cli import main

sys.exit(main())
