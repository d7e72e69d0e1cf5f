"""The nightly flow against a full, read-only or impossible results root: a clear error, no output.

Tests run as root, where ``chmod`` stops no write: a tiny tmpfs gives ENOSPC, the same
tmpfs remounted read-only gives EROFS, and a regular file where a folder should be gives
ENOTDIR. The tmpfs cases are skipped where mounting is not permitted.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from koa_core.config import get_settings
from koa_core.errors import OutputWriteError
from koa_core.storage import results
from tests.reliability.helpers import run_nightly

pytestmark = [pytest.mark.usefixtures("prefect_api"), pytest.mark.slow]


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True)


@pytest.fixture
def results_root(request: pytest.FixtureRequest, small_night: list[str]) -> Iterator[Path]:
    root = get_settings().results_dir
    if request.param == "not_a_directory":
        root.parent.mkdir(parents=True, exist_ok=True)
        root.write_text("a file where the results folder should be\n")
        yield root
        return
    root.mkdir(parents=True)
    try:
        _mount("-t", "tmpfs", "-o", "size=12k,nr_inodes=64", "koa-full", str(root))
    except (OSError, subprocess.CalledProcessError) as error:
        pytest.skip(f"cannot mount a tmpfs here: {error}")
    try:
        if request.param == "read_only":
            _mount("-o", "remount,ro", str(root))
        yield root
    finally:
        subprocess.run(["umount", str(root)], check=True)


@pytest.mark.parametrize(
    ("results_root", "errno_name"),
    [("not_a_directory", "ENOTDIR"), ("disk_full", "ENOSPC"), ("read_only", "EROFS")],
    indirect=["results_root"],
)
def test_unwritable_results_fail_the_run_naming_the_path(
    results_root: Path, errno_name: str, dask_cluster: str
) -> None:
    with pytest.raises(OutputWriteError) as raised:
        run_nightly(dask_cluster)
    assert str(results_root) in raised.value.path and errno_name in str(raised.value)
    if results_root.is_dir():
        for table_name in (results.SCORES, results.QUARANTINE, results.RUNS):
            assert list((results_root / table_name).rglob("*.parquet")) == []
        assert list((results_root / results.WORK_DIR).rglob("*.tmp")) == []
