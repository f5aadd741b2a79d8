"""``python -m runstream.devstack up|down|status [--state-dir DIR]``."""

import sys

from runstream.devstack.stack import main

sys.exit(main())
