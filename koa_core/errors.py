"""Named errors: every input koa cannot use raises one that names the file and the reason."""

from __future__ import annotations

from pathlib import Path


class KoaError(Exception):
    """Base of every error koa raises on purpose."""


class ImageReadError(KoaError):
    """An input file that cannot be used; ``reason`` is a stable code for quarantine rows."""

    reason = "unreadable"

    def __init__(self, path: str | Path, detail: str) -> None:
        self.path = str(path)
        self.detail = detail
        super().__init__(f"{self.path}: {self.reason}: {detail}")


class EmptyFileError(ImageReadError):
    reason = "empty_file"


class NotDicomError(ImageReadError):
    reason = "not_dicom"


class TruncatedFileError(ImageReadError):
    reason = "truncated"


class CorruptImageError(ImageReadError):
    reason = "corrupt"


class NoPixelDataError(ImageReadError):
    reason = "no_pixel_data"


class UnsupportedImageError(ImageReadError):
    """A well-formed file of a kind koa does not grade (e.g. an SR document, a DICOMDIR)."""

    reason = "unsupported_image"


class UnsupportedTransferSyntaxError(ImageReadError):
    reason = "unsupported_transfer_syntax"


class ColourImageError(ImageReadError):
    reason = "colour_image"


class MultiFrameError(ImageReadError):
    reason = "multi_frame"


class DimensionsOutOfRangeError(ImageReadError):
    reason = "dimensions_out_of_range"


class BitDepthError(ImageReadError):
    reason = "unsupported_bit_depth"


class FileTooLargeError(ImageReadError):
    reason = "file_too_large"


class DecompressionBombError(ImageReadError):
    """A file that would inflate past ``max_file_bytes``: a deflated DICOM data set, a PNG,
    JPEG or TIFF header declaring over a hundred times its file in pixels, a PNG text chunk
    over Pillow's bound."""

    reason = "decompression_bomb"


class UnsafePathError(ImageReadError):
    """A path that escapes the batch root (a symlink pointing outside it)."""

    reason = "unsafe_path"


class DatasetError(KoaError):
    """A training or evaluation dataset that cannot be used as given."""


class ModelNotFoundError(KoaError):
    """A model reference that names no registered version."""


class CorruptCheckpointError(KoaError):
    """A checkpoint or weights file that fails its integrity check."""


class BelowQualityFloorError(KoaError):
    """A model the promotion rule refused as champion: its test QWK is under the floor."""


class BatchFailedError(KoaError):
    """A nightly batch that must fail loudly (no files, or too much quarantined)."""


class OutputWriteError(KoaError):
    """An output that could not be written (disk full, permission denied, read-only)."""

    def __init__(self, path: str | Path, detail: str) -> None:
        self.path = str(path)
        super().__init__(f"cannot write {self.path}: {detail}")


class TrainingBudgetError(KoaError):
    """A time budget too small for even one epoch of the fixed schedule."""
