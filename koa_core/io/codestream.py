"""The image size a JPEG or JPEG 2000 codestream declares, read before any codec runs."""

from __future__ import annotations

import struct

from pydicom.pixels.utils import _get_jpg_parameters
from pydicom.uid import (
    UID,
    JPEG2000TransferSyntaxes,
    JPEGLSTransferSyntaxes,
    JPEGTransferSyntaxes,
)

J2K_SYNTAXES = frozenset(JPEG2000TransferSyntaxes)
JPEG_SYNTAXES = frozenset(JPEGTransferSyntaxes + JPEGLSTransferSyntaxes)
SIZED_SYNTAXES = J2K_SYNTAXES | JPEG_SYNTAXES
_JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
_SOC_SIZ = b"\xff\x4f\xff\x51"
_BOX_HEADER_BYTES = 8
_SIZ_BYTES = 24  # SOC, SIZ marker, Lsiz, Rsiz, Xsiz, Ysiz, XOsiz, YOsiz


def codestream_size(frame: bytes, syntax: UID) -> tuple[int, int] | None:
    """(rows, columns) that the codestream of one frame in ``syntax`` declares, or ``None``.

    JPEG 2000: the (FF51) SIZ segment, ``Ysiz - YOsiz`` by ``Xsiz - XOsiz``. JPEG and
    JPEG-LS: the first SOF segment. ``None`` when the frame has no such segment.
    """
    if syntax in J2K_SYNTAXES:
        return _j2k_size(frame)
    info = _get_jpg_parameters(frame)
    if "height" not in info:
        return None
    return int(info["height"]), int(info["width"])


def _j2k_size(frame: bytes) -> tuple[int, int] | None:
    offset = _j2k_codestream_offset(frame)
    if offset is None or frame[offset : offset + 4] != _SOC_SIZ:
        return None
    if len(frame) < offset + _SIZ_BYTES:
        return None
    xsiz, ysiz, xosiz, yosiz = struct.unpack_from(">IIII", frame, offset + 8)
    return ysiz - yosiz, xsiz - xosiz


def _j2k_codestream_offset(frame: bytes) -> int | None:
    """Where the codestream starts: 0, or inside the (jp2c) box of a JP2-wrapped frame.

    DICOM forbids the JP2 wrapper (PS3.5 A.4.4), yet some writers add it. A box before
    (jp2c) whose length is 0 (to the end) or 1 (64-bit) is not walked: pydicom's
    ``get_j2k_parameters`` loops forever on a zero length.
    """
    if not frame.startswith(_JP2_SIGNATURE):
        return 0
    offset = len(_JP2_SIGNATURE)
    while offset + _BOX_HEADER_BYTES <= len(frame):
        length, box = struct.unpack_from(">I4s", frame, offset)
        if box == b"jp2c":
            return offset + _BOX_HEADER_BYTES
        if length < _BOX_HEADER_BYTES:
            return None
        offset += length
    return None
