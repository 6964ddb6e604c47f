"""Run the bundled mock Paradigm API server: ``python scripts/mock_paradigm.py --port 0``.

A thin CLI over ``paradigm_kit.mock`` (``--help`` lists every flag). It prints
``PARADIGM_BASE_URL=http://127.0.0.1:PORT/api/v2`` first; export that, with any non-empty
``PARADIGM_API_KEY``, and the kit's scripts and notebooks talk to the mock. Ctrl-C stops it.
"""

import sys

from paradigm_kit.mock.server import main

if __name__ == "__main__":
    sys.exit(main())
