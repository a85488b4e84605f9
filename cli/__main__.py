"""`python -m cli` is the `aiwebimage` command."""

import sys

from cli.main import main

sys.exit(main())
