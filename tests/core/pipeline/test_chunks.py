"""How a night's files are cut into Dask tasks."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from koa_core.pipeline.chunks import chunked, ramped


@given(st.integers(0, 500), st.integers(1, 80), st.integers(1, 80))
def test_ramped_chunks_cover_every_item_once_in_order(n: int, size: int, first: int) -> None:
    items = list(range(n))
    chunks = list(ramped(items, size, first))
    assert [item for chunk in chunks for item in chunk] == items
    assert all(0 < len(chunk) <= size for chunk in chunks)


def test_ramped_chunks_double_from_the_first_to_the_full_size() -> None:
    sizes = [len(chunk) for chunk in ramped(list(range(200)), 64, 8)]
    assert sizes == [8, 16, 32, 64, 64, 16]


def test_a_first_chunk_larger_than_the_size_is_capped() -> None:
    items = list(range(10))
    assert list(ramped(items, 4, 100)) == list(chunked(items, 4))


def test_the_last_chunks_shrink_so_that_the_workers_finish_together() -> None:
    sizes = [len(chunk) for chunk in ramped(list(range(100)), 64, 8, workers=2)]
    assert sizes == [8, 16, 32, 22, 11, 8, 3]
    # One worker has nobody to wait for: the chunks only ramp up.
    assert [len(chunk) for chunk in ramped(list(range(100)), 64, 8)] == [8, 16, 32, 44]


@given(st.integers(1, 3000), st.integers(1, 8))
def test_no_chunk_is_bigger_than_a_workers_share_of_what_is_left(n: int, workers: int) -> None:
    start = 0
    for chunk in ramped(list(range(n)), 64, 8, workers):
        assert len(chunk) <= max(8, -(-(n - start) // workers))
        start += len(chunk)
