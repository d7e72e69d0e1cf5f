"""``append_partition``: a night's deliveries grow by whole swaps; concurrent appends keep all."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from koa_core.errors import OutputWriteError
from koa_core.storage.results import (
    DELIVERIES,
    SchemaMismatchError,
    append_partition,
    build_table,
    columns_markdown,
    read_table,
)

NIGHT = date(2026, 11, 27)


def _rows(tag: str, n: int, night: date = NIGHT) -> list[dict[str, Any]]:
    return [
        {
            "batch_date": night,
            "run_id": f"run-{tag}",
            "source_sop_instance_uid": f"1.2.3.{i}",
            "study_instance_uid": "1.2.3",
            "sop_instance_uid": f"1.2.9.{tag}.{i}",
            "kind": "SR" if i % 2 else "SC",
            "destination": "http://pacs/dicom-web",
            "status": "failed" if i % 3 == 0 else "delivered",
            "attempts": i % 4,
            "error": "HTTP 503" if i % 3 == 0 else None,
            "delivered_at": None if i % 3 == 0 else datetime(2026, 11, 28, 1, i, tzinfo=UTC),
            "recorded_at": datetime(2026, 11, 28, 1, i, tzinfo=UTC),
        }
        for i in range(n)
    ]


def test_appends_keep_earlier_rows(tmp_path: Path) -> None:
    append_partition(DELIVERIES, NIGHT, build_table(DELIVERIES, _rows("a", 3)), tmp_path)
    append_partition(DELIVERIES, NIGHT, build_table(DELIVERIES, _rows("b", 2)), tmp_path)
    table = read_table(DELIVERIES, tmp_path, NIGHT)
    assert sorted(table.column("run_id").to_pylist()) == ["run-a"] * 3 + ["run-b"] * 2
    assert list((tmp_path / DELIVERIES).iterdir()) == [tmp_path / DELIVERIES / "2026-11-27"]
    assert not list((tmp_path / "_work" / DELIVERIES).iterdir())


def test_concurrent_appends_lose_nothing(tmp_path: Path) -> None:
    def append(tag: str) -> None:
        append_partition(DELIVERIES, NIGHT, build_table(DELIVERIES, _rows(tag, 4)), tmp_path)

    threads = [threading.Thread(target=append, args=(str(i),)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert read_table(DELIVERIES, tmp_path, NIGHT).num_rows == 16


@pytest.mark.parametrize(
    ("change", "column"),
    [({"kind": "PDF"}, "kind"), ({"status": "lost"}, "status"), ({"attempts": None}, "attempts")],
)
def test_delivery_rows_are_checked(change: dict[str, Any], column: str) -> None:
    with pytest.raises(SchemaMismatchError, match=column):
        build_table(DELIVERIES, [{**_rows("a", 1)[0], **change}])


def test_rows_of_another_night_are_refused(tmp_path: Path) -> None:
    table = build_table(DELIVERIES, _rows("a", 1, date(2026, 11, 28)))
    with pytest.raises(SchemaMismatchError):
        append_partition(DELIVERIES, NIGHT, table, tmp_path)


def test_an_unwritable_root_is_a_named_error_and_the_old_rows_stay(tmp_path: Path) -> None:
    append_partition(DELIVERIES, NIGHT, build_table(DELIVERIES, _rows("a", 2)), tmp_path)
    work = tmp_path / "_work" / DELIVERIES
    work.rmdir()
    work.write_text("a file where the work folder must be")  # root ignores chmod: block it
    with pytest.raises(OutputWriteError):
        append_partition(DELIVERIES, NIGHT, build_table(DELIVERIES, _rows("b", 2)), tmp_path)
    work.unlink()
    assert read_table(DELIVERIES, tmp_path, NIGHT).num_rows == 2


def test_the_deliveries_columns_are_documented() -> None:
    text = columns_markdown(DELIVERIES)
    for name in ("sop_instance_uid", "kind", "destination", "status", "attempts", "error"):
        assert f"`{name}`" in text
