"""The localizer's weights file: written atomically with a sha256 sidecar, verified on load.

The sidecar has the format ``koa_core.model.checkpoint`` writes (``<sha256>  <name>``), so
the registry verifies and copies it like a grader's.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path

import torch

from koa_core.errors import CorruptCheckpointError
from koa_core.storage.files import atomic_write_bytes, bytes_sha256, file_sha256

SIDECAR_SUFFIX = ".sha256"


def save_weights(state: dict[str, torch.Tensor], path: Path) -> str:
    """``torch.save`` a state_dict atomically, then its sidecar; return the sha256."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()
    digest = bytes_sha256(data)
    atomic_write_bytes(path, data)
    atomic_write_bytes(
        path.with_name(path.name + SIDECAR_SUFFIX), f"{digest}  {path.name}\n".encode()
    )
    return digest


def load_weights(path: Path, expected_sha256: str) -> dict[str, torch.Tensor]:
    """The state_dict in ``path`` after checking its sha256 (``weights_only`` load).

    Raises:
        CorruptCheckpointError: missing, altered since its card was written, or unreadable.
    """
    if not path.is_file():
        raise CorruptCheckpointError(f"{path}: weights file is missing")
    actual = file_sha256(path)
    if expected_sha256 and actual != expected_sha256:
        raise CorruptCheckpointError(
            f"{path}: sha256 {actual[:12]} does not match its card's {expected_sha256[:12]};"
            " the file is truncated or was changed after it was written"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, pickle.UnpicklingError, EOFError, zipfile.BadZipFile) as error:
        raise CorruptCheckpointError(f"{path}: not a readable torch file: {error}") from error
    if not isinstance(state, dict):
        raise CorruptCheckpointError(f"{path}: not a state_dict")
    return state
