"""``python -m rayrlhf.planner [options]``: the memory plan without the CLI wiring."""

import sys

from rayrlhf.planner.command import main

sys.exit(main())
