"""Each input's ``source_path``: its name in the batch, with no patient identifier in it.

PACS exports and modality folders are often named after the patient
(``DOE^JANE_12345678/...``), and the results tables and Prefect artifacts are read freely.
So ``source_path`` is the input's name relative to the batch root
(``BatchListing.relative_name``), and every path component that names a patient is replaced,
whole, by that patient's pseudonym (``anon-...``: the ``patient_key`` of pseudonymised
results). The real path stays with the operators, in the run's own folder
(``PATH_MAP_FILE``), never in tables or Prefect.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from koa_core.privacy import name_parts, pseudonymise
from koa_core.storage.files import atomic_write_bytes

PATH_MAP_FILE = "paths.csv"
PATH_MAP_COLUMNS = ("source_path", "real_path")
# Identifiers are compared run by run (a run: letters, or digits), so case and separators do
# not matter ("PID-77" is "pid_77" is "PID77"), but a run is never cut: the id "12" is not in
# "2012" or in a UID's digits, "Doe" is not in "Does".
_RUN = re.compile(r"[^\W\d_]+|\d+")
# A file's extension survives its name's replacement: "anon-....dcm" still says what it is.
_EXTENSION = re.compile(r"\.[A-Za-z][A-Za-z0-9]{0,4}$")
# Hex digits of the keyed tag that tells apart two inputs whose names became one.
_TAG_HEX = 8

Runs = tuple[str, ...]


@dataclass(frozen=True)
class SourceIdentity:
    """One input as the night knows it: its name in the batch and its header's patient.

    ``patient_id`` and ``patient_name`` are ``None`` where the header could not be read.
    """

    name: str
    patient_id: str | None = None
    patient_name: str | None = None


def source_paths(
    inputs: Sequence[SourceIdentity], secret: str, pattern: str | None = None
) -> list[str]:
    """The ``source_path`` of each of a night's inputs, in order, no two alike.

    A component of ``name`` (split at ``/``) is replaced when it holds the input's own
    PatientID or a component of its PatientName (case and separators ignored, never inside
    a longer run of letters or digits), the whole PatientName (its components in any order,
    with any separators or none), the id or a name component of any other patient of the
    night (what the other headers taught: the only help for a file whose header could not
    be read), or a match of ``pattern``. It becomes the input's pseudonym, or the named
    patient's, or (for a pattern match on an input without a patient) the component's own
    keyed hash. Names that end up equal get a keyed tag of their real name
    (``anon-...~1a2b3c4d.dcm``).

    Args:
        inputs: Every input of the night (listed and rejected ones).
        secret: The site secret (``koa_core.privacy.site_secret``).
        pattern: ``Settings.path_identifier_pattern``: more components to replace.

    Returns:
        One ``source_path`` per input.
    """
    patients = {
        key: _Patient(*key, secret)
        for key in {(i.patient_id, i.patient_name) for i in inputs}
        if any(value and value.strip() for value in key)
    }
    rule = _Rule(patients.values(), re.compile(pattern) if pattern else None, secret)
    names = [rule.rename(i.name, patients.get((i.patient_id, i.patient_name))) for i in inputs]
    counts = Counter(names)
    return [
        _tagged(name, identity.name, secret) if counts[name] > 1 else name
        for name, identity in zip(names, inputs, strict=True)
    ]


def write_path_map(path: Path, real_paths: Mapping[str, str]) -> None:
    """Write the operators' map ``source_path -> real path`` as CSV, readable by its owner only.

    Args:
        path: Where (``<run folder>/PATH_MAP_FILE``).
        real_paths: Each ``source_path`` and the input's origin (path or URL).
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(PATH_MAP_COLUMNS)
    writer.writerows(sorted(real_paths.items()))
    # atomic_write_bytes writes through mkstemp, whose file is 0600 and keeps that mode.
    atomic_write_bytes(path, buffer.getvalue().encode())


def read_path_map(path: Path) -> dict[str, str]:
    """The map ``write_path_map`` wrote: ``source_path -> real path``."""
    with path.open(newline="", encoding="utf-8") as handle:
        return {row["source_path"]: row["real_path"] for row in csv.DictReader(handle)}


def _runs(text: str) -> Runs:
    return tuple(_RUN.findall(text.casefold()))


def _spans(runs: Runs, longest: int) -> set[Runs]:
    """Every stretch of up to ``longest`` consecutive runs."""
    return {
        runs[i:j] for i in range(len(runs)) for j in range(i + 1, min(i + longest, len(runs)) + 1)
    }


class _Patient:
    """One patient's identifiers, as runs (see ``_RUN``), and pseudonym."""

    def __init__(self, patient_id: str | None, patient_name: str | None, secret: str) -> None:
        self.name_parts = {_runs(part) for part in name_parts(patient_name or "")} - {()}
        self.identifiers = {_runs(patient_id or ""), *self.name_parts} - {()}
        pseudonym = pseudonymise(patient_id, secret) or pseudonymise(patient_name, secret)
        self.pseudonym = str(pseudonym)

    def named_in(self, spans: set[Runs], squashed: str) -> bool:
        """Whether a component (its ``spans``, its runs joined) holds this patient's id or name."""
        if not self.identifiers.isdisjoint(spans):
            return True
        # The whole name, in any order and with any separators or none ("JANEDOE").
        parts = self.name_parts
        return len(parts) > 1 and all("".join(part) in squashed for part in parts)


class _Rule:
    """Replaces the components of names that name a patient of the night (or the pattern)."""

    def __init__(
        self, patients: Iterable[_Patient], pattern: re.Pattern[str] | None, secret: str
    ) -> None:
        self._pattern = pattern
        self._secret = secret
        # One look-up per stretch of a component, not a scan of every patient: nights are large.
        self._index: defaultdict[Runs, set[str]] = defaultdict(set)
        for patient in patients:
            for identifier in patient.identifiers:
                self._index[identifier].add(patient.pseudonym)
        self._longest = max(map(len, self._index), default=1)

    def rename(self, name: str, patient: _Patient | None) -> str:
        """``name`` with each identifying component replaced (a last one keeps its extension)."""
        parts = name.split("/")
        for index, part in enumerate(parts):
            replacement = self._replacement(part, patient)
            if replacement is None:
                continue
            extension = _EXTENSION.search(part) if index == len(parts) - 1 else None
            if extension and self._replacement(extension.group(), patient) is None:
                replacement += extension.group()
            parts[index] = replacement
        return "/".join(parts)

    def _replacement(self, part: str, patient: _Patient | None) -> str | None:
        runs = _runs(part)
        if not runs:
            return None
        spans = _spans(runs, self._longest)
        if patient is not None and patient.named_in(spans, "".join(runs)):
            return patient.pseudonym
        # Another patient of the night: the only help for a file whose header was unreadable.
        named = set().union(*(self._index.get(span, set()) for span in spans))
        if len(named) == 1:
            return named.pop()
        if named or (self._pattern is not None and self._pattern.search(part)):
            return patient.pseudonym if patient else str(pseudonymise(part, self._secret))
        return None


def _tagged(name: str, real_name: str, secret: str) -> str:
    """``name`` with a keyed tag of the input's real name, before its extension."""
    digest = hmac.new(secret.encode(), real_name.encode(), hashlib.sha256).hexdigest()
    extension = _EXTENSION.search(name)
    stem = name[: extension.start()] if extension else name
    return f"{stem}~{digest[:_TAG_HEX]}{extension.group() if extension else ''}"
