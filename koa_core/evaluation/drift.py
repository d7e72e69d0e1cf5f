"""Drift monitoring: nightly score and input distributions against the model's reference."""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from numpy.typing import ArrayLike, NDArray
from scipy.stats import ks_2samp

from koa_core.data.datasets import KLDataset
from koa_core.errors import DatasetError
from koa_core.imaging.transforms import PREPROCESS_VERSION
from koa_core.registry.store import ModelVersion
from koa_core.schema import p_koa
from koa_core.storage import results
from koa_core.storage.files import atomic_write_bytes

log = logging.getLogger(__name__)

# Predictions depend on the model that made them; input statistics do not.
PREDICTION_VARIABLES = ("p_koa", "kl_grade")
INPUT_VARIABLES = ("input_mean", "input_std")
MONITORED = PREDICTION_VARIABLES + INPUT_VARIABLES
CATEGORICAL = frozenset({"kl_grade"})
PSI_BINS = 10
# Stands in for an empty bin's share so that log(0) never occurs; small against 1/n.
PSI_EPSILON = 1e-4
REFERENCE_NAME = "drift_reference.parquet"
REFERENCE_SPLIT = "val"
INFERENCE_BATCH = 64


@dataclass(frozen=True)
class DriftThresholds:
    """When a variable counts as drifted.

    KS p-values already account for the sample sizes, so ``min_samples`` only keeps a
    handful of images from deciding. PSI has no such correction: under no drift its
    expected value is about ``(bins - 1) * (1/n + 1/m)`` (0.6 for 20 vs 50 images), so
    it decides only when both samples reach ``min_samples_psi`` (and is reported always).
    """

    psi: float = 0.2
    ks_pvalue: float = 0.01
    min_samples: int = 20
    min_samples_psi: int = 200


@dataclass(frozen=True)
class VariableDrift:
    """One monitored variable of one scope: sample sizes, PSI, KS and the verdict."""

    variable: str
    n_reference: int
    n_current: int
    psi: float | None
    ks_statistic: float | None
    ks_pvalue: float | None
    drifted: bool
    reason: str


@dataclass(frozen=True)
class DriftReport:
    """Drift of one scope (a night, or the whole window) for one model version."""

    model_version: str
    scope: str
    start: date
    end: date
    n_images: int
    variables: tuple[VariableDrift, ...]

    @property
    def drifted(self) -> bool:
        return any(v.drifted for v in self.variables)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (dates as ISO strings), e.g. for an event payload."""
        return {
            "model_version": self.model_version,
            "scope": self.scope,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "n_images": self.n_images,
            "drifted": self.drifted,
            "variables": [asdict(v) for v in self.variables],
        }


def psi_bin_edges(reference: ArrayLike, variable: str = "", bins: int = PSI_BINS) -> NDArray[Any]:
    """Bin edges fixed by the reference: grades 0-4 for ``kl_grade``, else its quantiles.

    Quantile bins give each bin about the same reference share; the outer bins are open
    (``-inf``/``inf``) so values outside the reference's range still land in a bin.
    Repeated quantiles (a variable with few distinct values) collapse into one edge.
    """
    if variable in CATEGORICAL:
        inner = np.arange(4) + 0.5
    else:
        values = np.asarray(reference, dtype=np.float64)
        inner = np.unique(np.quantile(values, np.linspace(0.0, 1.0, bins + 1)[1:-1]))
    return np.concatenate([[-np.inf], inner, [np.inf]])


def population_stability_index(
    reference: ArrayLike, current: ArrayLike, edges: ArrayLike, epsilon: float = PSI_EPSILON
) -> float:
    """PSI = sum over bins of (c - r) * ln(c / r), with bin shares r and c.

    Args:
        reference: the reference sample.
        current: the sample to compare.
        edges: bin edges (``psi_bin_edges``); bins are [e_i, e_i+1).
        epsilon: the share used for an empty bin.

    Raises:
        ValueError: either sample is empty.
    """
    ref, cur = np.asarray(reference, np.float64), np.asarray(current, np.float64)
    if ref.size == 0 or cur.size == 0:
        raise ValueError("PSI needs two non-empty samples")
    bounds = np.asarray(edges, dtype=np.float64)
    shares = [np.histogram(x, bins=bounds)[0] / x.size for x in (ref, cur)]
    r, c = (np.where(share > 0, share, epsilon) for share in shares)
    return float(np.sum((c - r) * np.log(c / r)))


def ks_test(reference: ArrayLike, current: ArrayLike) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov statistic and p-value (``scipy.stats.ks_2samp``).

    On discrete values (KL grades) the test is conservative: its p-values are too large,
    so it flags less often than its level says, never more.
    """
    result = ks_2samp(np.asarray(reference), np.asarray(current))
    return float(result.statistic), float(result.pvalue)


def compare_variable(
    variable: str,
    reference: ArrayLike,
    current: ArrayLike,
    thresholds: DriftThresholds | None = None,
) -> VariableDrift:
    """PSI and KS of one variable, and whether they cross ``thresholds``."""
    limits = thresholds or DriftThresholds()
    ref, cur = np.asarray(reference, np.float64), np.asarray(current, np.float64)
    n_ref, n_cur = ref.size, cur.size
    if min(n_ref, n_cur) < limits.min_samples:
        reason = (
            f"too few images to judge ({n_cur} vs reference {n_ref}; need {limits.min_samples})"
        )
        psi = (
            population_stability_index(ref, cur, psi_bin_edges(ref, variable))
            if n_ref and n_cur
            else None
        )
        return VariableDrift(variable, n_ref, n_cur, psi, None, None, False, reason)
    psi = population_stability_index(ref, cur, psi_bin_edges(ref, variable))
    statistic, pvalue = ks_test(ref, cur)
    reasons = []
    if pvalue < limits.ks_pvalue:
        reasons.append(f"KS p={pvalue:.2g} < {limits.ks_pvalue:g}")
    if psi > limits.psi and min(n_ref, n_cur) >= limits.min_samples_psi:
        reasons.append(f"PSI {psi:.3f} > {limits.psi:g}")
    return VariableDrift(
        variable, n_ref, n_cur, psi, statistic, pvalue, bool(reasons), "; ".join(reasons)
    )


def drift_report(
    reference: pa.Table,
    scores: pa.Table,
    model_version: str,
    scope: str,
    period: tuple[date, date],
    thresholds: DriftThresholds | None = None,
) -> DriftReport:
    """Compare ``scores`` rows with the reference, variable by variable.

    Prediction variables use only the rows ``model_version`` scored (another model's
    probabilities are another distribution); input statistics use every row.

    Args:
        reference: ``reference_table`` output (columns ``MONITORED``).
        scores: rows of the results ``scores`` table.
        model_version: the model whose reference this is.
        scope: a label, e.g. the night's date or ``"window"``.
        period: first and last batch date covered.
        thresholds: default ``DriftThresholds()``.
    """
    own = scores.filter(pc.equal(scores["model_version"], model_version))
    variables = tuple(
        compare_variable(
            name,
            reference[name].to_numpy(),
            (own if name in PREDICTION_VARIABLES else scores)[name].to_numpy(),
            thresholds,
        )
        for name in MONITORED
    )
    return DriftReport(model_version, scope, period[0], period[1], scores.num_rows, variables)


def read_scores_window(results_root: Path, start: date, end: date) -> pa.Table:
    """The ``scores`` rows with ``start <= batch_date <= end`` (empty if none)."""
    schema = results.scores_schema()
    directory = results_root / results.SCORES
    if not directory.is_dir():
        return schema.empty_table()
    dataset = ds.dataset(directory, format="parquet", schema=schema)
    day = ds.field("batch_date")
    table = dataset.to_table(filter=(day >= start) & (day <= end))
    return table.sort_by([("batch_date", "ascending"), ("source_path", "ascending")])


def window_reports(
    reference: pa.Table,
    results_root: Path,
    model_version: str,
    end: date,
    window_days: int,
    thresholds: DriftThresholds | None = None,
) -> list[DriftReport]:
    """One report per scored night of the window ending at ``end``, then the pooled window.

    Raises:
        ValueError: ``window_days`` is below 1.
    """
    if window_days < 1:
        raise ValueError(f"window_days must be at least 1, got {window_days}")
    start = end - timedelta(days=window_days - 1)
    scores = read_scores_window(results_root, start, end)
    nights = sorted(set(scores["batch_date"].to_pylist()))
    reports = [
        drift_report(
            reference,
            scores.filter(pc.equal(scores["batch_date"], night)),
            model_version,
            night.isoformat(),
            (night, night),
            thresholds,
        )
        for night in nights
    ]
    if len(nights) > 1:
        pooled = drift_report(reference, scores, model_version, "window", (start, end), thresholds)
        reports.append(pooled)
    return reports


def reference_table(
    probabilities: NDArray[np.floating[Any]], images: NDArray[np.uint8]
) -> pa.Table:
    """Reference rows from a model's probabilities (N, 5) on uint8 model inputs (N, S, S).

    The input statistics are those the nightly flow records (``koa_core.imaging.statistics``) on the
    same 8-bit inputs, so reference and nights are measured alike.
    """
    scaled = images.reshape(len(images), -1).astype(np.float64) / 255.0
    probs = np.asarray(probabilities, dtype=np.float64)
    return pa.table(
        {
            "p_koa": pa.array(p_koa(probs), pa.float32()),
            "kl_grade": pa.array(probs.argmax(axis=1), pa.int8()),
            "input_mean": pa.array(scaled.mean(axis=1), pa.float32()),
            "input_std": pa.array(scaled.std(axis=1), pa.float32()),
        }
    )


def reference_path(version: ModelVersion) -> Path:
    """Where the version's reference is cached: beside its weights."""
    return version.path / REFERENCE_NAME


def _reference_data(version: ModelVersion, fallback: Path | None) -> Path:
    root = version.document.get("data", {}).get("root")
    for candidate in (Path(root) if root else None, fallback):
        if candidate is not None and candidate.is_dir():
            return candidate
    raise DatasetError(
        f"model {version.version}: no drift reference; its training data "
        f"({root or 'not recorded'}) is not here and no dataset was given"
    )


def _cached_reference(path: Path) -> pa.Table | None:
    if not path.is_file():
        return None
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as error:
        log.warning("%s: ignoring unreadable drift reference: %s", path, error)
        return None
    metadata = table.schema.metadata or {}
    if metadata.get(b"preprocess_version") != PREPROCESS_VERSION.encode():
        return None
    return table


def load_reference(
    version: ModelVersion,
    data: Path | None = None,
    *,
    device: str = "auto",
    split: str = REFERENCE_SPLIT,
) -> pa.Table:
    """The model's reference distributions, computed once and cached beside the version.

    The reference is the model's own predictions and input statistics on the validation
    split of the data it was trained on (``card.json``'s ``data.root``; ``data`` when that
    folder is gone or was never recorded). It is recomputed when the cached one was made
    with another ``PREPROCESS_VERSION``.

    Raises:
        DatasetError: no usable dataset, or it has no ``split``.
    """
    path = reference_path(version)
    cached = _cached_reference(path)
    if cached is not None:
        return cached
    from koa_core.evaluation.evaluate import load_for_card

    dataset = load_for_card(_reference_data(version, data), version.model_card())
    table = _compute_reference(version, dataset, split, device)
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    atomic_write_bytes(path, buffer.getvalue())
    log.info("model %s: drift reference of %d images cached", version.version, table.num_rows)
    return table


def _compute_reference(
    version: ModelVersion, dataset: KLDataset, split: str, device: str
) -> pa.Table:
    from koa_core.model.checkpoint import load_model
    from koa_core.model.inference import predict_dataset

    if split not in dataset.splits:
        raise DatasetError(f"{dataset.root}: no {split!r} split for the drift reference")
    images = dataset.splits[split].images
    card = version.model_card()
    model = load_model(version.weights_path, card, "cpu")
    probabilities = predict_dataset(model, card, images, INFERENCE_BATCH, device)
    table = reference_table(probabilities, images.numpy())
    metadata = {
        "model_version": version.version,
        "dataset_fingerprint": dataset.fingerprint,
        "split": split,
        "preprocess_version": PREPROCESS_VERSION,
    }
    return table.replace_schema_metadata(metadata)


def drift_markdown(reports: Sequence[DriftReport], thresholds: DriftThresholds) -> str:
    """A Markdown table per scope: each variable's n, PSI, KS and verdict."""
    if not reports:
        return "No scored nights in the window: nothing to compare.\n"
    lines = [
        f"Drift rule: KS p < {thresholds.ks_pvalue:g} (n >= {thresholds.min_samples}) or "
        f"PSI > {thresholds.psi:g} (n >= {thresholds.min_samples_psi}), per variable.",
    ]
    for report in reports:
        verdict = "**DRIFT**" if report.drifted else "no drift"
        lines += [
            "",
            f"### {report.scope}: {verdict} ({report.n_images} images)",
            "",
            "| variable | n | reference n | PSI | KS D | KS p | verdict |",
            "|---|---:|---:|---:|---:|---:|---|",
        ]
        lines += [
            f"| {v.variable} | {v.n_current} | {v.n_reference} | {_num(v.psi)} "
            f"| {_num(v.ks_statistic)} | {_num(v.ks_pvalue, '.2g')} "
            f"| {('DRIFT: ' + v.reason) if v.drifted else (v.reason or 'ok')} |"
            for v in report.variables
        ]
    return "\n".join(lines) + "\n"


def _num(value: float | None, spec: str = ".3f") -> str:
    return "n/a" if value is None else format(value, spec)
