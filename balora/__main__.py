"""`python -m balora`: the same command line as `balora`."""

import sys

from balora.cli import main

sys.exit(main())
