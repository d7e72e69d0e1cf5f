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
