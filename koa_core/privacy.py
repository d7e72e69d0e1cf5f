"""Patient-id pseudonymisation: keyed hashes in every output, raw ids only when a site opts in."""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable

from koa_core.config import Settings
from koa_core.io.record import ImageMetadata

PSEUDONYM_PREFIX = "anon-"
# 128 bits of HMAC-SHA256: collisions are negligible at any site's patient count.
PSEUDONYM_HEX_CHARS = 32


def pseudonymise(patient_id: str | None, secret: str) -> str | None:
    """Keyed hash of a patient id: stable for one site secret, unlinkable without it.

    ``(0010,0020) PatientID`` is LO, whose leading and trailing spaces are not
    significant, so ids are stripped before hashing.

    Args:
        patient_id: The raw id, or ``None`` when the file carries none.
        secret: The site secret (``Settings.site_secret``).

    Returns:
        ``"anon-"`` followed by 32 hex characters, or ``None`` for a missing or blank id.
    """
    if patient_id is None or not patient_id.strip():
        return None
    digest = hmac.new(secret.encode(), patient_id.strip().encode(), hashlib.sha256).hexdigest()
    return PSEUDONYM_PREFIX + digest[:PSEUDONYM_HEX_CHARS]


def patient_key(meta: ImageMetadata, settings: Settings) -> str | None:
    """The patient column written to results: the raw id only if ``emit_raw_patient_ids``.

    Args:
        meta: The image's metadata.
        settings: Supplies ``site_secret`` and ``emit_raw_patient_ids``.

    Returns:
        The pseudonym (default) or the raw id; ``None`` when the image carries no id.
    """
    if settings.emit_raw_patient_ids:
        return meta.patient_id
    return pseudonymise(meta.patient_id, settings.site_secret.get_secret_value())


def redact(text: str, patient_ids: Iterable[str | None], secret: str) -> str:
    """Replace every whole-token occurrence of the given ids in ``text`` by their pseudonyms.

    Use on anything that leaves the process (log lines, quarantine details) and may
    quote header values. Pseudonyms rather than a fixed mask keep a log line joinable
    with the results table.

    Args:
        text: The message.
        patient_ids: Raw ids that may appear in it (``None`` and blanks are skipped).
        secret: The site secret.

    Returns:
        ``text`` with no raw id left in it.
    """
    ids = sorted({pid.strip() for pid in patient_ids if pid and pid.strip()}, key=len, reverse=True)
    if not ids:
        return text
    # Whole tokens only: a short id such as "12" must not mangle "2012" in the same line.
    pattern = re.compile(r"(?<!\w)(" + "|".join(map(re.escape, ids)) + r")(?!\w)")
    return pattern.sub(lambda match: str(pseudonymise(match.group(1), secret)), text)
