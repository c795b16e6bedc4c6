"""`python -m dropflow.daemon.cli`: what the TUI's supervisor starts (the same as `dropflow`)."""

import sys

from dropflow.daemon.cli import main

sys.exit(main())
