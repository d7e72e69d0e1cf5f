"""Integrity-checked torch files for weights and checkpoints.

Files are written with ``koa_core.storage.files.atomic_write_bytes``. Torch files get a
``<name>.sha256`` sidecar written after them; readers verify it, so a file
truncated or altered outside koa (a copy that stopped, a full disk) is refused instead of
loaded. A crash between the two replaces leaves a complete file whose sidecar is stale:
that is refused too, which costs one epoch on resume and never loads bad weights.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from koa_core.errors import CorruptCheckpointError
from koa_core.model.card import ModelCard
from koa_core.model.network import GraderNet, build_model, place
from koa_core.storage.files import atomic_write_bytes, bytes_sha256, file_sha256

SIDECAR_SUFFIX = ".sha256"


def sidecar_path(path: Path) -> Path:
    """Where the sha256 of ``path`` is kept."""
    return path.with_name(path.name + SIDECAR_SUFFIX)


def save_torch(obj: Any, path: Path) -> str:
    """``torch.save`` ``obj`` atomically with a sha256 sidecar; return the digest."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    data = buffer.getvalue()
    digest = bytes_sha256(data)
    atomic_write_bytes(path, data)
    atomic_write_bytes(sidecar_path(path), f"{digest}  {path.name}\n".encode())
    return digest


def verify_sidecar(path: Path) -> None:
    """Check ``path`` against its sha256 sidecar when it has one.

    Raises:
        CorruptCheckpointError: the file is missing or its content does not match.
    """
    if not path.is_file():
        raise CorruptCheckpointError(f"{path}: no such file")
    sidecar = sidecar_path(path)
    if not sidecar.is_file():
        return
    expected = sidecar.read_text(encoding="utf-8").split()[0] if sidecar.stat().st_size else ""
    actual = file_sha256(path)
    if actual != expected:
        raise CorruptCheckpointError(
            f"{path}: sha256 {actual[:12]} does not match its sidecar ({expected[:12] or 'empty'});"
            " the file is truncated or was changed after it was written"
        )


def load_torch(path: Path, map_location: str | torch.device = "cpu") -> Any:
    """Load a file ``save_torch`` wrote (``weights_only=True``) after verifying its sidecar.

    Raises:
        CorruptCheckpointError: missing, truncated, corrupt or not a safe torch file.
    """
    verify_sidecar(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, OSError, pickle.UnpicklingError, EOFError, zipfile.BadZipFile) as error:
        raise CorruptCheckpointError(f"{path}: not a readable torch file: {error}") from error


def load_model(
    weights_path: Path, card: ModelCard, device: str | torch.device = "cpu"
) -> GraderNet:
    """The network for ``card`` with the state_dict in ``weights_path``, in eval mode.

    Raises:
        CorruptCheckpointError: the file is truncated or corrupt, fails its sha256
            sidecar, or holds weights for another architecture.
    """
    state = load_torch(weights_path, map_location=device)
    model = build_model(card)
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as error:
        raise CorruptCheckpointError(
            f"{weights_path}: weights do not match architecture {card.architecture}: {error}"
        ) from error
    return place(model, device).eval()
