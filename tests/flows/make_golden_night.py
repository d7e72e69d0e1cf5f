"""Regenerate ``golden_night.json``: run the nightly flow on the golden night, keep its rows.

The committed fixture was produced on commit 60323d4 (before koa_core was regrouped), so
the test pins that code's behaviour. To regenerate it there::

    git worktree add /tmp/golden 60323d4
    cp tests/flows/golden_night.py tests/flows/make_golden_night.py /tmp/golden/tests/flows/
    cd /tmp/golden && python -m tests.flows.make_golden_night /path/to/golden_night.json

It takes about a minute (a Prefect test API and a two-worker Dask LocalCluster).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")


def main(out: Path) -> None:
    """Score the golden night in a scratch data root and write its rows to ``out``."""
    from distributed import LocalCluster
    from prefect.testing.utilities import prefect_test_harness
    from prefect_dask import DaskTaskRunner

    from tests.flows import golden_night as golden

    with tempfile.TemporaryDirectory() as home:
        os.environ.update(
            KOA_HOME=home,
            KOA_INPUT_SIZE=str(golden.INPUT_SIZE),
            KOA_CHUNK_SIZE=str(golden.CHUNK_SIZE),
        )
        from koa_core.config import get_settings

        get_settings.cache_clear()
        settings = get_settings()
        folder = golden.write_night(settings.incoming_dir)
        from tests.flows.models import register_tiny_champion

        register_tiny_champion(golden.INPUT_SIZE, seed=golden.MODEL_SEED)
        from flows.nightly import nightly_scoring

        cluster = LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None)
        with prefect_test_harness(server_startup_timeout=120), cluster:
            runner = DaskTaskRunner(address=cluster.scheduler_address)
            nightly_scoring.with_options(task_runner=runner)(batch_date=golden.BATCH_DATE)
        rows = golden.night_rows(settings.results_dir, folder)
    out.write_text(json.dumps(rows, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"{out}: {len(rows['scores'])} scores, {len(rows['quarantine'])} quarantined")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("golden_night.json"))
