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


class KneeLocalizationError(KoaError):
    """A film that decoded but has no knee koa can grade and report with its side.

    ``reason`` is the stable quarantine code (stage ``localize``).
    """

    reason = "no_knee_found"

    def __init__(self, path: str | Path, detail: str) -> None:
        self.path = str(path)
        self.detail = detail
        super().__init__(f"{self.path}: {self.reason}: {detail}")


class NoKneeFoundError(KneeLocalizationError):
    reason = "no_knee_found"


class KneeTruncatedError(KneeLocalizationError):
    reason = "knee_truncated"


class NotFrontalViewError(KneeLocalizationError):
    """The image itself shows a side view (the localizer's view head), whatever the header
    says: a PA/AP grader cannot grade it."""

    reason = "not_frontal_view"


class LateralityConflictError(KneeLocalizationError):
    """The header, the knees' positions and the anatomy disagree on a knee's side: a
    wrong-side report is the error radiologists fear most, so the film is not graded."""

    reason = "laterality_conflict"


class LateralityUnknownError(KneeLocalizationError):
    """One knee, no (0020,0062) ImageLaterality, and anatomy too unsure to tell the side."""

    reason = "laterality_unknown"


class LocalizerNotFoundError(KoaError):
    """No champion localizer: whole films cannot be read without one."""


class PhantomSpecError(KoaError, ValueError):
    """A synthetic image asked for with arguments it cannot have (a kind, side or grade)."""


class ResultBuildError(KoaError):
    """Findings that cannot be written as a DICOM SR or Secondary Capture."""


class DeliveryError(KoaError):
    """A DICOM result its destination refused (HTTP 4xx, a failed SOP): retrying won't help."""


class TransientDeliveryError(DeliveryError):
    """A delivery that may succeed later: connection refused/reset, timeout, HTTP 5xx/429."""


class ConformalError(KoaError, ValueError):
    """Prediction sets asked of inputs they cannot be built from (shapes, level, no knees)."""


class OverlayError(KoaError, ValueError):
    """An overlay picture asked of inputs it cannot be drawn from (shapes, boxes)."""


class CamError(KoaError, ValueError):
    """A class-activation map asked of a model or inputs it cannot be computed for."""


class TrainingBudgetError(KoaError):
    """A time budget too small for even one epoch of the fixed schedule."""
