"""``python -m paradigm_kit.doctor``: kept working since the doctor moved to ``paradigm_kit.workshop``."""

import sys

from .workshop.doctor import main

if __name__ == "__main__":
    sys.exit(main())
