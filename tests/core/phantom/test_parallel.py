"""Big phantom sets are rendered in worker processes with the files one process writes."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from koa_core.phantom import film_roi_files, write_film_kl_folders
from koa_core.phantom.parallel import MIN_PER_WORKER, map_in_order
from koa_core.phantom.writers import assign_splits


def test_results_come_back_in_index_order_from_several_workers() -> None:
    n = 2 * MIN_PER_WORKER + 5
    assert list(map_in_order(partial(pow, 2), n, workers=2)) == [2**i for i in range(n)]


def test_a_set_written_by_workers_is_the_set_one_process_writes(tmp_path: Path) -> None:
    n, seed = 2 * MIN_PER_WORKER, 4
    spread = write_film_kl_folders(tmp_path / "spread", n, seed, size=64, spacing_mm=1.0)
    splits = assign_splits(n, seed)
    alone = [
        record
        for index in (0, n - 1)
        for record in film_roi_files(
            tmp_path / "alone", seed, index, splits[index], size=64, spacing_mm=1.0
        )
    ]
    spread_by_name = {record.path.name: record for record in spread}
    for record in alone:
        twin = spread_by_name[record.path.name]
        truth = (record.grade, record.true_grade, record.split)
        assert (twin.grade, twin.true_grade, twin.split) == truth
        assert twin.path.read_bytes() == record.path.read_bytes()
