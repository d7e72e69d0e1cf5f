"""Patient-id pseudonymisation: the site secret, keyed hashes in every output, redacted text."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
import tempfile
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from koa_core.config import Settings
from koa_core.errors import KoaError
from koa_core.storage.files import fsync_directory

log = logging.getLogger(__name__)

SITE_SECRET_FILE = "site-secret"
# A shorter key could be guessed; koa's own is twice this.
MIN_SECRET_BYTES = 16
_CREATED_SECRET_BYTES = 32
PSEUDONYM_PREFIX = "anon-"
# 128 bits of HMAC-SHA256: collisions are negligible at any site's patient count.
PSEUDONYM_HEX_CHARS = 32
# Separators of a (0010,0010) PatientName value: components (^) and representations (=).
_NAME_SEPARATORS = re.compile(r"[\^=]")
# Shorter name components (a middle initial) identify no one and would mangle every "Q".
_MIN_NAME_PART = 2


class SiteSecretError(KoaError):
    """The site secret is missing, unreadable, ambiguous or too short to be a key."""


def site_secret(settings: Settings) -> str:
    """The key of every pseudonym: ``KOA_SITE_SECRET``, ``KOA_SITE_SECRET_FILE`` or koa's own.

    koa's own is created on first use: 32 random bytes, hex, in
    ``$KOA_HOME/secrets/site-secret`` (file 0600, folder 0700), logged once as a warning.
    Processes sharing ``$KOA_HOME`` (Dask workers, a rerun) use the same one; of two
    processes racing to create it, one secret wins and both use it. Losing the file changes
    every ``patient_key`` written from then on.

    Args:
        settings: Supplies ``site_secret``, ``site_secret_file`` and ``secrets_dir``.

    Returns:
        The secret; a file's surrounding whitespace (its newline) is stripped.

    Raises:
        SiteSecretError: Both settings are set, the file cannot be read, or the secret is
            shorter than ``MIN_SECRET_BYTES``.
    """
    if settings.site_secret is not None and settings.site_secret_file is not None:
        raise SiteSecretError("set KOA_SITE_SECRET or KOA_SITE_SECRET_FILE, not both")
    if settings.site_secret is not None:
        return _checked(settings.site_secret.get_secret_value(), "KOA_SITE_SECRET")
    if settings.site_secret_file is not None:
        return _checked(_read_secret(settings.site_secret_file), str(settings.site_secret_file))
    path = settings.secrets_dir / SITE_SECRET_FILE
    if not path.exists():
        _create_secret(path)
    return _checked(_read_secret(path), str(path))


def _read_secret(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as error:
        raise SiteSecretError(f"cannot read the site secret {path}: {error}") from error


def _checked(secret: str, where: str) -> str:
    size = len(secret.encode())
    if size < MIN_SECRET_BYTES:
        raise SiteSecretError(
            f"the site secret from {where} has {size} bytes, fewer than {MIN_SECRET_BYTES}: "
            "use a long random value, e.g. python -c 'import secrets; print(secrets.token_hex(32))'"
        )
    return secret


def _create_secret(path: Path) -> None:
    """Write a new random secret to ``path``, unless another process has just written one."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # mkstemp creates the file 0600; it is complete before it gets its name.
    descriptor, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(secrets.token_hex(_CREATED_SECRET_BYTES) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            # Unlike a rename, a link never replaces a file: the first process's secret wins.
            os.link(temp_name, path)
        except FileExistsError:
            return
    finally:
        Path(temp_name).unlink(missing_ok=True)
    fsync_directory(path.parent)
    log.warning(
        "created a new site secret in %s: back it up with the results; losing or replacing it "
        "changes every patient_key from then on",
        path,
    )


def name_parts(patient_name: str) -> list[str]:
    """The components of a ``(0010,0010) PatientName`` that identify someone, stripped.

    Components are split at ``^`` (and representations at ``=``); those with fewer than two
    letters or digits (a middle initial) are left out.
    """
    parts = (part.strip() for part in _NAME_SEPARATORS.split(patient_name))
    return [part for part in parts if sum(map(str.isalnum, part)) >= _MIN_NAME_PART]


def pseudonymise(patient_id: str | None, secret: str) -> str | None:
    """Keyed hash of a patient id: stable for one site secret, unlinkable without it.

    ``(0010,0020) PatientID`` is LO, whose leading and trailing spaces are not
    significant, so ids are stripped before hashing.

    Args:
        patient_id: The raw id, or ``None`` when the file carries none.
        secret: The site secret (``site_secret``).

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
        settings: Supplies the site secret (``site_secret``) and ``emit_raw_patient_ids``.

    Returns:
        The pseudonym (default) or the raw id; ``None`` when the image carries no id.
    """
    if settings.emit_raw_patient_ids:
        return patient_id
    return pseudonymise(patient_id, site_secret(settings))


class Redactor:
    """Replaces the patient ids and names it has learnt by their pseudonyms, in any text.

    Apply it to everything that leaves the process and may quote header values or file
    names (log lines, quarantine details, artifacts). Pseudonyms rather than a fixed mask
    keep a log line joinable with the results table. It redacts even where a site emits
    raw ids in ``scores.patient_key``: that opt-in covers the one column, not free text.
    Matching ignores case, as folders are often named ``DOE^JANE``. Safe to share between
    threads; it pickles with what it has learnt.

    Args:
        secret: The site secret (``site_secret``).
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
        # Case-folded value -> the value learnt: "DOE" in a path has Doe's pseudonym.
        self._learnt: dict[str, str] = {}
        self._lock = threading.Lock()
        self._pattern: re.Pattern[str] | None = None
        self.learn(patient_ids, patient_names)

    def learn(
        self, patient_ids: Iterable[str | None] = (), patient_names: Iterable[str | None] = ()
    ) -> None:
        """Redact these ids and names (each whole name, and its components) from now on."""
        values = {pid.strip() for pid in patient_ids if pid and pid.strip()}
        for name in (name.strip() for name in patient_names if name and name.strip()):
            values |= {name, *name_parts(name)}
        with self._lock:
            if not values <= self._values:
                self._values |= values
                self._learnt = {v.casefold(): v for v in sorted(self._values, reverse=True)}
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
        learnt = self._learnt
        return pattern.sub(
            lambda match: str(
                pseudonymise(learnt.get(match.group(1).casefold(), match.group(1)), self._secret)
            ),
            text,
        )

    def _compiled(self) -> re.Pattern[str] | None:
        with self._lock:
            if self._pattern is None and self._values:
                # Longest first, so a name wins over its own components. Whole tokens only,
                # between non-alphanumerics: a short id such as "12" must not mangle "2012",
                # but "PID-7_knee.dcm" holds the id "PID-7" (``_`` is a word character).
                values = sorted(self._values, key=len, reverse=True)
                alternatives = "|".join(map(re.escape, values))
                self._pattern = re.compile(rf"(?<![^\W_])({alternatives})(?![^\W_])", re.IGNORECASE)
            return self._pattern

    def __reduce__(self) -> tuple[Any, ...]:
        # Locks do not pickle: rebuild from the secret and what was learnt.
        return (Redactor, (self._secret, sorted(self._values)))
