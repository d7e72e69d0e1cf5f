"""The record every reader returns, whatever the file format: metadata plus pixels."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class ImageMetadata:
    """What a pipeline needs to know about one radiograph, read without decoding pixels.

    DICOM fields are ``None`` where the file does not carry them (PNG/JPEG carry few).
    ``laterality`` is ``"L"``, ``"R"`` or ``None``; ``study_date`` is ``YYYYMMDD``.
    """

    path: str
    file_format: str  # "dicom", "png", "jpeg" or "tiff"
    rows: int
    columns: int
    bits_stored: int
    photometric_interpretation: str
    sop_instance_uid: str | None = None
    study_instance_uid: str | None = None
    series_instance_uid: str | None = None
    sop_class_uid: str | None = None
    patient_id: str | None = None
    patient_name: str | None = None  # only to redact it: never written to results
    study_date: str | None = None
    modality: str | None = None
    body_part_examined: str | None = None
    view_position: str | None = None
    study_description: str | None = None  # (0008,1030); with the two below, evidence of
    series_description: str | None = None  # (0008,103E)   body part and view when the
    protocol_name: str | None = None  # (0018,1030)        coded attributes are missing
    laterality: str | None = None
    pixel_spacing_mm: tuple[float, float] | None = None
    image_type: tuple[str, ...] = ()
    manufacturer: str | None = None
    transfer_syntax_uid: str | None = None
    number_of_frames: int = 1
    samples_per_pixel: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    def to_row(self) -> dict[str, Any]:
        """A flat dict for manifests and tables (tuples become lists, spacing split in two)."""
        row = asdict(self)
        spacing = row.pop("pixel_spacing_mm")
        row["pixel_spacing_row_mm"] = spacing[0] if spacing else None
        row["pixel_spacing_col_mm"] = spacing[1] if spacing else None
        row["image_type"] = list(self.image_type)
        row.pop("extra")
        return row


@dataclass(frozen=True)
class Radiograph:
    """Decoded pixels (2-D float32, modality LUT applied, bone bright) and their metadata.

    ``decode_scale`` is the factor the pixels were reduced by at decode time (1 at full
    size; 2, 4, ... when a JPEG 2000 file was decoded at a lower resolution level).
    """

    pixels: npt.NDArray[np.float32]
    meta: ImageMetadata
    decode_scale: int = 1
