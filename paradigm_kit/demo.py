"""``python -m paradigm_kit.demo``: kept working since the demo moved to ``scripts/demo.py``.

Runs that script in this interpreter, with the same arguments (``make demo`` calls it directly).
"""

import runpy
from pathlib import Path

if __name__ == "__main__":
    runpy.run_path(
        str(Path(__file__).resolve().parent.parent / "scripts" / "demo.py"), run_name="__main__"
    )
