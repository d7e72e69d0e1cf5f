"""The champion pointer and its audit log: the pointer never moves without a logged decision.

Layout under the registry root::

    champion            JSON pointer to the serving version (atomic replace)
    promotions.jsonl    one line per promotion decision, promoted or refused, forced or not
    .registry.lock      held while a decision reads the champion and moves the pointer

The pointer is replaced first and the decision appended after it, so a process killed
half way leaves the old champion and no line claiming otherwise.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from filelock import FileLock

from koa_core.errors import CorruptCheckpointError
from koa_core.registry.policy import PromotionDecision
from koa_core.storage.files import append_json_line, atomic_write_json, read_json_lines

log = logging.getLogger(__name__)

CHAMPION_POINTER = "champion"
PROMOTIONS_LOG = "promotions.jsonl"
LOCK_NAME = ".registry.lock"
LOCK_TIMEOUT_S = 60


@dataclass(frozen=True)
class PromotionRecord:
    """One line of ``promotions.jsonl``: every decision has these keys, and only these.

    Attributes:
        challenger: the version the decision was about.
        champion: the champion when the decision was taken (None before the first).
        promoted: the pointer now names ``challenger``.
        forced: an operator's override; no rule was applied.
        reason: the rule's reason, or the operator's.
        policy: the rule's thresholds (``PromotionPolicy.to_dict()``); None when forced.
        below_floor: refused for quality alone: the challenger's test QWK is under the
            policy's floor.
        at: when the decision was taken (UTC, ISO 8601).
    """

    challenger: str
    champion: str | None
    promoted: bool
    forced: bool
    reason: str
    policy: Mapping[str, float] | None
    below_floor: bool = False
    at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    @classmethod
    def of_rule(
        cls,
        challenger: str,
        champion: str | None,
        decision: PromotionDecision,
        policy: Mapping[str, float],
    ) -> PromotionRecord:
        """The record of a decision a promotion rule took (not forced)."""
        return cls(
            challenger,
            champion,
            promoted=decision.promote,
            forced=False,
            reason=decision.reason,
            policy=policy,
            below_floor=decision.below_floor,
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["policy"] = None if self.policy is None else dict(self.policy)
        return data


class ChampionPointer:
    """The champion pointer and promotion log under one registry ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def pointer_path(self) -> Path:
        return self.root / CHAMPION_POINTER

    @property
    def log_path(self) -> Path:
        return self.root / PROMOTIONS_LOG

    def lock(self) -> FileLock:
        """The lock a decision holds from reading the champion to logging its outcome."""
        self.root.mkdir(parents=True, exist_ok=True)
        return FileLock(self.root / LOCK_NAME, timeout=LOCK_TIMEOUT_S)

    def version_id(self) -> str | None:
        """The version the pointer names, or None before the first promotion.

        Raises:
            CorruptCheckpointError: the pointer file exists but cannot be read.
        """
        if not self.pointer_path.is_file():
            return None
        try:
            return str(json.loads(self.pointer_path.read_text(encoding="utf-8"))["version"])
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise CorruptCheckpointError(
                f"{self.pointer_path}: unreadable champion pointer"
            ) from error

    def decide(self, record: PromotionRecord) -> None:
        """Log ``record``, moving the pointer to its challenger first when it was promoted.

        The caller holds ``lock()`` and has verified the challenger's weights.
        """
        if record.promoted:
            pointer = {"version": record.challenger, "promoted_at": record.at}
            atomic_write_json(self.pointer_path, pointer)
            log.info("champion is now %s", record.challenger)
        append_json_line(self.log_path, record.to_dict())

    def history(self) -> list[dict[str, Any]]:
        """Every logged decision, oldest first."""
        return read_json_lines(self.log_path)
