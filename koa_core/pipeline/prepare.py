"""Decode and preprocess a chunk of a batch; write the model inputs to the run's scratch folder.

A chunk's inputs are stored as one uint8 ``.npy`` stack (the 8-bit grey levels the public
KL datasets and koa's training images use), written atomically so a chunk that is computed
twice (Dask recomputes results lost with a worker) leaves one complete file.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from koa_core.errors import ImageReadError
from koa_core.imaging.statistics import input_statistics
from koa_core.io.model_input import load_model_input
from koa_core.pipeline.manifest import READ_ERROR_DETAIL, with_sha256
from koa_core.storage.files import atomic_write_bytes


@dataclass(frozen=True)
class PreparedChunk:
    """The result of preparing one chunk: where its inputs are, and what became of each row.

    ``rows`` are the manifest rows that decoded, in the order of the array's first axis,
    each extended with ``flipped`` and the input statistics; ``failures`` are the rows that
    did not decode, with ``reasons`` and ``read_error_detail`` (the manifest's own column).
    """

    array_path: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)


def prepare_chunk(
    rows: list[dict[str, Any]], scratch_dir: Path, chunk_id: int, input_size: int
) -> PreparedChunk:
    """Hash, decode and preprocess every row of a chunk; save the stack as ``chunk-<id>.npy``.

    Rows without a ``sha256`` get one here, where the file is read in full anyway.
    """
    images: list[npt.NDArray[np.uint8]] = []
    prepared, failures = [], []
    for row in with_sha256(rows):
        try:
            model_input = load_model_input(Path(row["source_path"]), input_size)
        except ImageReadError as error:
            failures.append({**row, "reasons": error.reason, READ_ERROR_DETAIL: error.detail})
            continue
        image = model_input.pixels
        statistics = input_statistics(image.astype(np.float32) / np.float32(255.0))
        prepared.append(
            {**row, "array_index": len(images), "flipped": model_input.flipped, **statistics}
        )
        images.append(image)
    array_path = scratch_dir / f"chunk-{chunk_id:05d}.npy"
    stack = np.stack(images) if images else np.zeros((0, input_size, input_size), np.uint8)
    save_array_atomically(array_path, stack)
    return PreparedChunk(array_path=str(array_path), rows=prepared, failures=failures)


def save_array_atomically(path: Path, array: npt.NDArray[Any]) -> None:
    """``np.save`` ``array`` so that readers see either no file or the whole of it."""
    buffer = io.BytesIO()
    np.save(buffer, array)
    atomic_write_bytes(path, buffer.getvalue())
