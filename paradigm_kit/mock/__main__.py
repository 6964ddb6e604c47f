"""``python -m paradigm_kit.mock [flags]``: run the mock server (see ``server.main``)."""

import sys

from .server import main

sys.exit(main())
