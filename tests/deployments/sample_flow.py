"""A tiny real flow the deployment tests register, run through a worker and read back."""

from __future__ import annotations

import os

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact

TABLE_KEY = "koa-sample-table"
REPORT_KEY = "koa-sample-report"


@flow(name="koa-sample")
def sample(greeting: str = "hello", repeats: int = 1) -> dict[str, object]:
    """Publish one markdown and one table artifact that depend on the parameters.

    Args:
        greeting: Text repeated in every table row.
        repeats: Number of table rows.
    """
    rows = [{"index": i, "greeting": greeting} for i in range(repeats)]
    create_table_artifact(rows, key=TABLE_KEY, description="one row per repeat")
    create_markdown_artifact(
        f"# {greeting}\n\nran in `{os.getcwd()}` with {repeats} repeats",
        key=REPORT_KEY,
    )
    return {"greeting": greeting, "repeats": repeats, "cwd": os.getcwd()}
