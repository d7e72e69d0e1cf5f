"""Where a registered model came from: the code revision that trained it."""

from __future__ import annotations

import subprocess
from pathlib import Path


def code_revision() -> str:
    """``git rev-parse HEAD`` of the koa checkout, or ``"unknown"`` outside git."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return result.stdout.strip() or "unknown"
