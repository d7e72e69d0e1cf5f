"""Run a named Great Expectations suite on a table; split its rows into passed and quarantined."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from koa_core.config import get_settings
from koa_core.errors import KoaError
from koa_core.schema import PROBABILITY_COLUMNS, p_koa

SUITES_DIR = Path(__file__).parent / "suites"
SUITE_NAMES = ("manifest", "model_input", "predictions")
READ_ERROR_COLUMN = "read_error"
REASONS_COLUMN = "reasons"
REASON_SEPARATOR = ";"
_COMPLETE = {"result_format": "COMPLETE"}
_DATASOURCE = "koa"
# One GX context per process: building one is slow and it is not safe to share between threads.
_GX_LOCK = threading.Lock()


class SuiteError(KoaError):
    """A suite that cannot be loaded, or cannot be evaluated on the table it was given."""


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one suite run.

    ``passed`` holds the rows that met every expectation and ``quarantined`` the others,
    both with the caller's columns and index; ``quarantined`` adds ``reasons``, the sorted,
    ``;``-joined reason codes of the expectations the row failed. ``statistics`` holds
    ``rows``, ``passed_rows``, ``quarantined_rows``, ``evaluated_expectations``,
    ``successful_expectations``, ``reasons`` (code -> quarantined rows) and
    ``expectations`` (type, column, reason, success, unexpected_count of each).
    """

    passed: pd.DataFrame
    quarantined: pd.DataFrame
    statistics: dict[str, Any] = field(default_factory=dict)
    success: bool = True
    docs_path: Path | None = None

    def passed_rows(self) -> list[dict[str, Any]]:
        """``passed`` as one dict per row, ``None`` (not NaN) where a value is missing."""
        return _records(self.passed)

    def quarantined_rows(self) -> list[dict[str, Any]]:
        """``quarantined`` (with ``reasons``) as one dict per row, ``None`` for missing values."""
        return _records(self.quarantined)


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    if frame.empty:
        return []
    records = frame.astype(object).where(frame.notna(), None).to_dict("records")
    return [{str(key): value for key, value in row.items()} for row in records]


def load_suite(name: str) -> Any:
    """The suite ``name`` as a ``gx.ExpectationSuite``, with thresholds from ``Settings``.

    An expectation's ``meta.settings`` maps its kwargs to ``Settings`` fields (e.g.
    ``{"min_value": "min_image_px"}``), so a site tunes limits in one place.

    Raises:
        SuiteError: Unknown name, or an expectation GX cannot build (GX itself would only
            log it and drop the expectation).
    """
    import great_expectations as gx
    from great_expectations.exceptions.exceptions import GreatExpectationsError
    from great_expectations.expectations.expectation_configuration import (
        ExpectationConfiguration,
    )

    config = _suite_config(name)
    expectations = []
    for entry in _with_settings(config["expectations"]):
        try:
            expectations.append(ExpectationConfiguration(**entry).to_domain_obj())
        except (GreatExpectationsError, TypeError, ValueError) as error:
            raise SuiteError(
                f"suite {name!r}: invalid expectation {entry['type']}: {error}"
            ) from error
    return gx.ExpectationSuite(
        name=config["name"], expectations=expectations, notes=config.get("notes")
    )


def run_suite(
    df: pd.DataFrame,
    suite_name: str,
    *,
    data_docs_dir: Path | None = None,
    run_name: str | None = None,
) -> CheckResult:
    """Validate ``df`` against a suite and split its rows into passed and quarantined.

    Rows with ``read_error`` set (manifest rows whose header could not be read) are
    quarantined with that code as their reason and never reach GX. Of duplicate values
    under an expectation with ``meta.keep_first_by``, the first row in that column's order
    passes and only the later ones are quarantined.

    Args:
        df: The table; its index is kept in both outputs.
        suite_name: One of ``SUITE_NAMES``.
        data_docs_dir: When given, GX Data Docs for this run are built there.
        run_name: The run's name in Data Docs (GX uses a timestamp when None).

    Returns:
        The split, GX's statistics and, with ``data_docs_dir``, the path of ``index.html``
        (None when no row reached GX: an empty table, or only unreadable files).

    Raises:
        SuiteError: Unknown suite, a column the suite needs is missing, or GX failed to
            evaluate an expectation.
    """
    _suite_config(suite_name)
    frame = df.reset_index(drop=True)
    reasons = _read_error_reasons(frame)
    checkable = frame.drop(index=list(reasons))
    results: list[Any] = []
    docs_path = None
    if not checkable.empty:
        suite = load_suite(suite_name)
        prepared = _plain_dtypes(_DERIVED_COLUMNS.get(suite_name, _unchanged)(checkable))
        _require_columns(prepared, suite)
        with _GX_LOCK:
            results, docs_path = _validate(prepared, suite, data_docs_dir, run_name)
        for result in results:
            for position in _failed_positions(result, prepared):
                reasons.setdefault(position, set()).add(_reason(result.expectation_config))
    return _split(df, reasons, results, docs_path)


def warm_up() -> None:
    """Build this process's GX context now: the first suite run otherwise pays ~5 s for it.

    The nightly flow calls this in a thread while its Dask workers start.
    """
    with _GX_LOCK:
        _context()


def _suite_config(name: str) -> dict[str, Any]:
    if name not in SUITE_NAMES:
        raise SuiteError(f"unknown suite {name!r}; known: {', '.join(SUITE_NAMES)}")
    config: dict[str, Any] = json.loads((SUITES_DIR / f"{name}.json").read_text(encoding="utf-8"))
    return config


def _with_settings(entries: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    settings = get_settings()
    for entry in entries:
        overrides = entry.get("meta", {}).get("settings", {})
        kwargs = {**entry["kwargs"]}
        kwargs.update({kwarg: getattr(settings, name) for kwarg, name in overrides.items()})
        yield {**entry, "kwargs": kwargs}


def _read_error_reasons(frame: pd.DataFrame) -> dict[int, set[str]]:
    if READ_ERROR_COLUMN not in frame.columns:
        return {}
    errors = frame[READ_ERROR_COLUMN]
    return {
        int(position): {str(errors.iloc[position])} for position in np.flatnonzero(errors.notna())
    }


def _unchanged(frame: pd.DataFrame) -> pd.DataFrame:
    return frame


def _plain_dtypes(frame: pd.DataFrame) -> pd.DataFrame:
    """Numbers as float64 and text as object, whichever dtypes the caller used.

    Results are the same either way (tests run both), but GX's pandas metrics ran ~1.3x
    slower here on Arrow strings and masked (``Int64``/``Float64``) arrays.
    """
    types = pd.api.types
    casts: dict[str, Any] = {}
    for column, dtype in frame.dtypes.items():
        if types.is_bool_dtype(dtype) or types.is_object_dtype(dtype):
            continue
        if types.is_numeric_dtype(dtype):
            casts[str(column)] = "float64"
        elif types.is_string_dtype(dtype):
            casts[str(column)] = object
    return frame.astype(casts)


def _manifest_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """``image_type_text``: ImageType values joined by ``\\``, as DICOM writes them."""
    image_type = (
        frame["image_type"] if "image_type" in frame.columns else pd.Series(index=frame.index)
    )
    text = image_type.map(_join_image_type)
    return frame.assign(image_type_text=text.astype(object))


def _join_image_type(value: Any) -> str:
    if isinstance(value, str):
        return value
    if pd.api.types.is_scalar(value) and pd.isna(value):
        return ""
    return "\\".join(str(part) for part in value)


def _prediction_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """``p_sum``, ``grade_matches_argmax`` and ``p_koa_error`` for the predictions suite."""
    missing = [
        column for column in (*PROBABILITY_COLUMNS, "kl_grade", "p_koa") if column not in frame
    ]
    if missing:
        raise SuiteError(f"suite 'predictions': missing columns {missing}")
    probabilities = frame[list(PROBABILITY_COLUMNS)].astype("float64")
    complete = probabilities.notna().all(axis=1)
    argmax = probabilities.fillna(-1.0).to_numpy().argmax(axis=1)
    grade = pd.to_numeric(frame["kl_grade"], errors="coerce")
    koa = p_koa(probabilities.to_numpy())
    return frame.assign(
        p_sum=probabilities.sum(axis=1, skipna=False),
        grade_matches_argmax=(complete & (grade == argmax)).astype(bool),
        p_koa_error=(pd.to_numeric(frame["p_koa"], errors="coerce") - koa).abs(),
    )


_DERIVED_COLUMNS: dict[str, Callable[[pd.DataFrame], pd.DataFrame]] = {
    "manifest": _manifest_columns,
    "predictions": _prediction_columns,
}


def _require_columns(frame: pd.DataFrame, suite: Any) -> None:
    needed = set()
    for expectation in suite.expectations:
        config = expectation.configuration
        needed.add(config.kwargs["column"])
        needed.update(_condition_columns(config.kwargs.get("row_condition")))
        if "keep_first_by" in config.meta:
            needed.add(config.meta["keep_first_by"])
    missing = sorted(needed - set(frame.columns))
    if missing:
        raise SuiteError(f"suite {suite.name!r}: the table lacks columns {missing}")


def _condition_columns(condition: Any) -> set[str]:
    if condition is None:
        return set()
    as_dict = condition if isinstance(condition, dict) else condition.dict()
    columns = {as_dict["column"]["name"]} if "column" in as_dict else set()
    for part in as_dict.get("conditions", []):
        columns |= _condition_columns(part)
    return columns


@cache
def _context() -> Any:
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    # GX draws tqdm bars on stderr for every validation otherwise.
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    context.data_sources.add_pandas(_DATASOURCE)
    return context


def _batch_definition(context: Any, suite_name: str) -> Any:
    datasource = context.data_sources.get(_DATASOURCE)
    if suite_name not in datasource.get_asset_names():
        datasource.add_dataframe_asset(suite_name).add_batch_definition_whole_dataframe("whole")
    return datasource.get_asset(suite_name).get_batch_definition("whole")


def _validate(
    frame: pd.DataFrame, suite: Any, data_docs_dir: Path | None, run_name: str | None
) -> tuple[list[Any], Path | None]:
    context = _context()
    batch_definition = _batch_definition(context, suite.name)
    if data_docs_dir is None:
        batch = batch_definition.get_batch(batch_parameters={"dataframe": frame})
        return list(batch.validate(suite, result_format=_COMPLETE).results), None
    return _validate_with_docs(context, batch_definition, frame, suite, data_docs_dir, run_name)


def _validate_with_docs(
    context: Any,
    batch_definition: Any,
    frame: pd.DataFrame,
    suite: Any,
    data_docs_dir: Path,
    run_name: str | None,
) -> tuple[list[Any], Path]:
    """Validate through a Checkpoint: GX stores results and renders Data Docs only there."""
    import great_expectations as gx
    from great_expectations.checkpoint.actions import UpdateDataDocsAction
    from great_expectations.core.run_identifier import RunIdentifier

    site = _docs_site(context, data_docs_dir.resolve())
    definition = context.validation_definitions.add_or_update(
        gx.ValidationDefinition(
            name=suite.name, data=batch_definition, suite=context.suites.add_or_update(suite)
        )
    )
    checkpoint = context.checkpoints.add_or_update(
        gx.Checkpoint(
            name=f"{suite.name}-{site}",
            validation_definitions=[definition],
            actions=[UpdateDataDocsAction(name="data_docs", site_names=[site])],
            result_format=_COMPLETE,
        )
    )
    run = checkpoint.run(
        batch_parameters={"dataframe": frame}, run_id=RunIdentifier(run_name=run_name)
    )
    (validation,) = run.run_results.values()
    return list(validation.results), data_docs_dir / "index.html"


def _docs_site(context: Any, directory: Path) -> str:
    """The name of a Data Docs site rooted at ``directory``, added on first use."""
    for name, config in context.list_data_docs_sites().items():
        if config["store_backend"].get("base_directory") == str(directory):
            return str(name)
    name = f"koa_site_{len(context.list_data_docs_sites())}"
    context.add_data_docs_site(
        name,
        {
            "class_name": "SiteBuilder",
            "show_how_to_buttons": False,
            "store_backend": {
                "class_name": "TupleFilesystemStoreBackend",
                "base_directory": str(directory),
            },
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        },
    )
    return name


def _failed_positions(result: Any, frame: pd.DataFrame) -> list[int]:
    config = result.expectation_config
    if result.exception_info.get("raised_exception"):
        raise SuiteError(
            f"GX could not evaluate {config.type} on {config.kwargs.get('column')!r}: "
            f"{result.exception_info.get('exception_message')}"
        )
    if result.success:
        return []
    labels = result.result.get("unexpected_index_list")
    if labels is None:
        raise SuiteError(f"{config.type} failed without row indices: only row checks are supported")
    positions = [int(label) for label in labels]
    keep_first_by = config.meta.get("keep_first_by")
    if keep_first_by is not None:
        positions = _later_duplicates(frame, positions, config.kwargs["column"], keep_first_by)
    return positions


def _later_duplicates(
    frame: pd.DataFrame, positions: list[int], column: str, order_by: str
) -> list[int]:
    """Of the flagged rows, all but the first of each value when ordered by ``order_by``."""
    flagged = frame.loc[positions].sort_values(order_by, kind="stable")
    return [int(position) for position in flagged.index[flagged[column].duplicated(keep="first")]]


def _reason(config: Any) -> str:
    reason = config.meta.get("reason")
    return str(reason) if reason else f"{config.type}:{config.kwargs.get('column')}"


def _split(
    df: pd.DataFrame, reasons: dict[int, set[str]], results: list[Any], docs_path: Path | None
) -> CheckResult:
    failed = sorted(reasons)
    passed_mask = np.ones(len(df), dtype=bool)
    passed_mask[failed] = False
    codes = [REASON_SEPARATOR.join(sorted(reasons[position])) for position in failed]
    quarantined = df.iloc[failed].assign(
        **{REASONS_COLUMN: pd.Series(codes, dtype="string").values}
    )
    statistics = {
        "rows": len(df),
        "passed_rows": int(passed_mask.sum()),
        "quarantined_rows": len(failed),
        "evaluated_expectations": len(results),
        "successful_expectations": sum(1 for result in results if result.success),
        "reasons": dict(Counter(code for position in failed for code in reasons[position])),
        "expectations": [_expectation_statistics(result) for result in results],
    }
    return CheckResult(
        passed=df.iloc[passed_mask],
        quarantined=quarantined,
        statistics=statistics,
        success=not failed,
        docs_path=docs_path,
    )


def _expectation_statistics(result: Any) -> dict[str, Any]:
    config = result.expectation_config
    return {
        "type": config.type,
        "column": config.kwargs.get("column"),
        "reason": config.meta.get("reason"),
        "success": bool(result.success),
        "unexpected_count": int(result.result.get("unexpected_count") or 0),
    }
