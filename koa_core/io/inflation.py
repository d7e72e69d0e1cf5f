"""Bounded inflation: nothing koa expands from a file may grow past ``max_file_bytes``."""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from pathlib import Path

from koa_core.errors import DecompressionBombError, ImageReadError

INPUT_CHUNK_BYTES = 16 * 1024
OUTPUT_CHUNK_BYTES = 256 * 1024
MAX_INFLATION_RATIO = 100
"""Decoded bytes per stored byte past which an image over the limit is a bomb, not just large.

Lossless codecs shrink radiographs 2-4x; a hundredfold is Apache POI's zip-bomb threshold
(``ZipSecureFile``: an entry under 1 % of its inflated size is refused).
"""


def inflate_chunks(deflated: bytes) -> Iterator[bytes]:
    """Inflate the raw deflate stream (RFC 1951, no zlib header) in ``deflated``, a chunk at a time.

    No chunk is over ``OUTPUT_CHUNK_BYTES``, so a consumer that stops early has held no more.
    Bytes after the final block are ignored, as ``zlib.decompress`` ignores them.

    Raises:
        EOFError: the stream ends before its final block.
        zlib.error: the bytes are not a deflate stream.
    """
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    view = memoryview(deflated)
    offset = 0
    while not inflater.eof:
        pending: bytes | memoryview = inflater.unconsumed_tail
        if not pending:
            pending = view[offset : offset + INPUT_CHUNK_BYTES]
            offset += len(pending)
        chunk = inflater.decompress(pending, OUTPUT_CHUNK_BYTES)
        if not chunk and not pending:
            raise EOFError("the deflate stream ends before its final block")
        if chunk:
            yield chunk


def check_inflated_size(path: Path, deflated: bytes, limit: int) -> None:
    """Count what ``deflated`` inflates to, keeping none of it; refuse it past ``limit``.

    Counting first keeps a refusal in constant memory: a few MB of deflate can claim gigabytes.

    Raises:
        DecompressionBombError: it inflates to more than ``limit`` bytes.
        EOFError, zlib.error: as ``inflate_chunks``.
    """
    size = 0
    for chunk in inflate_chunks(deflated):
        size += len(chunk)
        if size > limit:
            raise DecompressionBombError(
                path, f"{len(deflated)} deflated bytes inflate past max_file_bytes={limit}"
            )


def oversized_error(
    decoded_bytes: int, stored_bytes: int, large: type[ImageReadError]
) -> type[ImageReadError]:
    """The error for a decode over the limit: a bomb when it expands past any radiograph.

    ``decoded_bytes`` over ``MAX_INFLATION_RATIO`` times the ``stored_bytes`` they come from
    give ``DecompressionBombError``; a lesser expansion is a legitimately large image (or a
    header that disagrees with another) and gives ``large``.
    """
    if decoded_bytes > MAX_INFLATION_RATIO * max(stored_bytes, 1):
        return DecompressionBombError
    return large
