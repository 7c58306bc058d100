"""``python -m rayrlhf.planner [options]``: the memory plan without the CLI wiring."""

import sys

from rayrlhf.planner.report import main

sys.exit(main())
