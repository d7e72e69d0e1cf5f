"""What a person asks of a file: can koa use it, what does it say, what will the model see."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from koa_core.config import get_settings
from koa_core.errors import ImageReadError
from koa_core.io.model_input import load_model_input
from koa_core.io.reader import read_metadata

COLUMNS = (
    "file",
    "format",
    "modality",
    "body part",
    "view",
    "side",
    "size",
    "bits",
    "photometric",
    "transfer syntax",
    "status",
)


@dataclass(frozen=True)
class InspectionRow:
    """One file's metadata, or the named reason it cannot be used (``status`` != "ok")."""

    path: str
    status: str
    file_format: str = ""
    modality: str = ""
    body_part: str = ""
    view: str = ""
    laterality: str = ""
    size: str = ""
    bits: str = ""
    photometric: str = ""
    transfer_syntax: str = ""

    def cells(self) -> tuple[str, ...]:
        return (
            self.path,
            self.file_format,
            self.modality,
            self.body_part,
            self.view,
            self.laterality,
            self.size,
            self.bits,
            self.photometric,
            self.transfer_syntax,
            self.status,
        )


def write_csv(rows: list[InspectionRow], path: Path) -> None:
    """The inspection rows as CSV, one line per file, headed by ``COLUMNS``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        writer.writerows(row.cells() for row in rows)


def inspect_file(path: Path, decode: bool = True) -> InspectionRow:
    """Read one file's header (and, with ``decode``, its pixels) into an inspection row."""
    try:
        meta = read_metadata(path)
        if decode:
            load_model_input(path, get_settings().input_size)
    except ImageReadError as error:
        return InspectionRow(path=str(path), status=f"{error.reason}: {error.detail}")
    return InspectionRow(
        path=str(path),
        status="ok",
        file_format=meta.file_format,
        modality=meta.modality or "",
        body_part=meta.body_part_examined or "",
        view=meta.view_position or "",
        laterality=meta.laterality or "",
        size=f"{meta.columns}x{meta.rows}",
        bits=str(meta.bits_stored),
        photometric=meta.photometric_interpretation,
        transfer_syntax=meta.transfer_syntax_uid or "",
    )


def write_preview(path: Path, out: Path, size: int | None = None) -> str:
    """Write the model input of ``path`` as the 8-bit PNG the grader sees; return a summary."""
    size = size or get_settings().input_size
    model_input = load_model_input(path, size)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(model_input.pixels, mode="L").save(out)
    side = model_input.meta.laterality or "unknown side"
    return f"{size}x{size}, {side}, mirrored: {model_input.flipped}"
