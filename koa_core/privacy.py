"""Patient-id pseudonymisation: keyed hashes in every output, raw ids only when a site opts in."""

from __future__ import annotations

import hashlib
import hmac
import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from koa_core.config import Settings

PSEUDONYM_PREFIX = "anon-"
# 128 bits of HMAC-SHA256: collisions are negligible at any site's patient count.
PSEUDONYM_HEX_CHARS = 32
# Separators of a (0010,0010) PatientName value: components (^) and representations (=).
_NAME_SEPARATORS = re.compile(r"[\^=]")
# Shorter name components (a middle initial) identify no one and would mangle every "Q".
_MIN_NAME_PART = 2


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


def patient_key(patient_id: str | None, settings: Settings) -> str | None:
    """The patient column written to results: the raw id only if ``emit_raw_patient_ids``.

    Args:
        patient_id: The image's ``(0010,0020) PatientID``, or ``None``.
        settings: Supplies ``site_secret`` and ``emit_raw_patient_ids``.

    Returns:
        The pseudonym (default) or the raw id; ``None`` when the image carries no id.
    """
    if settings.emit_raw_patient_ids:
        return patient_id
    return pseudonymise(patient_id, settings.site_secret.get_secret_value())


class Redactor:
    """Replaces the patient ids and names it has learnt by their pseudonyms, in any text.

    Apply it to everything that leaves the process and may quote header values or file
    names (log lines, quarantine details, artifacts). Pseudonyms rather than a fixed mask
    keep a log line joinable with the results table. It redacts even where a site emits
    raw ids in ``scores.patient_key``: that opt-in covers the one column, not free text.
    Safe to share between threads; it pickles with what it has learnt.

    Args:
        secret: The site secret (``Settings.site_secret``).
        patient_ids: Ids to redact from the start (``None`` and blanks are skipped).
        patient_names: ``(0010,0010) PatientName`` values to redact from the start.
    """

    def __init__(
        self,
        secret: str,
        patient_ids: Iterable[str | None] = (),
        patient_names: Iterable[str | None] = (),
    ) -> None:
        self._secret = secret
        self._values: set[str] = set()
        self._lock = threading.Lock()
        self._pattern: re.Pattern[str] | None = None
        self.learn(patient_ids, patient_names)

    def learn(
        self, patient_ids: Iterable[str | None] = (), patient_names: Iterable[str | None] = ()
    ) -> None:
        """Redact these ids and names (each whole name, and its components) from now on."""
        values = {pid.strip() for pid in patient_ids if pid and pid.strip()}
        for name in (name.strip() for name in patient_names if name and name.strip()):
            parts = (part.strip() for part in _NAME_SEPARATORS.split(name))
            values |= {name} | {part for part in parts if len(part) >= _MIN_NAME_PART}
        with self._lock:
            if not values <= self._values:
                self._values |= values
                self._pattern = None

    def learn_rows(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Learn the ``patient_id`` and ``patient_name`` of metadata or manifest rows."""
        rows = list(rows)
        self.learn(
            [row.get("patient_id") for row in rows], [row.get("patient_name") for row in rows]
        )

    def __call__(self, text: str) -> str:
        """``text`` with every whole-token occurrence of a learnt value pseudonymised."""
        pattern = self._compiled()
        if pattern is None:
            return text
        return pattern.sub(lambda match: str(pseudonymise(match.group(1), self._secret)), text)

    def _compiled(self) -> re.Pattern[str] | None:
        with self._lock:
            if self._pattern is None and self._values:
                # Longest first, so a name wins over its own components. Whole tokens only,
                # between non-alphanumerics: a short id such as "12" must not mangle "2012",
                # but "PID-7_knee.dcm" holds the id "PID-7" (``_`` is a word character).
                values = sorted(self._values, key=len, reverse=True)
                alternatives = "|".join(map(re.escape, values))
                self._pattern = re.compile(rf"(?<![^\W_])({alternatives})(?![^\W_])")
            return self._pattern

    def __reduce__(self) -> tuple[Any, ...]:
        # Locks do not pickle: rebuild from the secret and what was learnt.
        return (Redactor, (self._secret, sorted(self._values)))
