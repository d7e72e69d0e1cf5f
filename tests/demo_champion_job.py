"""Train the demo's champion grader in a process of its own.

    python -m tests.demo_champion_job HOME

The suite starts this as it collects (``tests/conftest.py``), niced, so the demo recipe's
~2 minutes of training overlap the unit tests instead of holding up the test that first
needs the champion. What the demo says goes to ``HOME/said.txt``, one line each.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

SAID = "said.txt"
# Niced: the tests in the foreground keep their timing; this takes the cycles they leave.
NICENESS = 5


def main(home: Path) -> None:
    """Train and promote the demo champion in the data root ``home``."""
    os.nice(NICENESS)
    os.environ["KOA_HOME"] = str(home)
    from koa_core.config import get_settings
    from koa_core.workflows import demo

    get_settings.cache_clear()
    with (home / SAID).open("w", encoding="utf-8") as said:
        demo.ensure_champion(get_settings(), lambda line: print(line, file=said, flush=True))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
