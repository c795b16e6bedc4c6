"""`python -m dropflow.daemon ...` is the `dropflow` command (for subprocesses and service units)."""

import sys

from dropflow.daemon.cli import main

sys.exit(main())
