"""`python -m peftkit` runs the CLI."""

import sys

from peftkit.cli import main

sys.exit(main())
