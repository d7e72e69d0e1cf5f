"""Evaluation of KL-grade probabilities with sklearn: agreement, discrimination, calibration."""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.stats import rankdata
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    brier_score_loss,
    cohen_kappa_score,
    confusion_matrix,
    f1_score,
    mean_absolute_error,
    precision_recall_fscore_support,
    recall_score,
    roc_auc_score,
)

from koa_core.schema import GRADES, KOA_MIN_GRADE, NUM_CLASSES, p_koa

ECE_BINS = 15
BOOTSTRAP_SAMPLES = 1000


@dataclass(frozen=True)
class ClassMetrics:
    """One KL grade's precision, recall, F1, support and one-vs-rest AUC (None if undefined)."""

    grade: int
    precision: float
    recall: float
    f1: float
    support: int
    auc_roc: float | None


CI_KEYS = ("qwk_ci", "auc_koa_ci", "ece_ci", "ece_calibrated_ci", "ece_grade_noise_ci")


@dataclass(frozen=True)
class EvaluationMetrics:
    """Every figure koa reports for one model on one labelled split.

    ``None`` marks a figure the split cannot define (e.g. the AUC of a grade it lacks);
    ``notes`` says why. ``*_ci`` are bootstrap 95 % percentile intervals. ``conformal_*``
    are the prediction sets' nominal level, empirical coverage and mean size in grades
    (``evaluation.conformal``); ``None`` on the calibration split itself or without sets.
    ``ece_calibrated_floor`` is what ``ece_calibrated`` would be, on this many samples,
    for a perfectly calibrated model (``calibrated_ece_floor``). ``ece_grade_noise`` is the
    ECE after a temperature and a grade-noise term fitted together on validation
    (``evaluation.calibration.fit_grade_noise``), ``grade_noise_share`` the share of each
    grade it moved onto the neighbouring grades.
    """

    n_samples: int
    threshold: float
    accuracy: float
    balanced_accuracy: float
    macro_f1: float
    qwk: float | None
    mae: float
    auc_macro: float | None
    auc_koa: float | None
    sensitivity_koa: float | None
    specificity_koa: float | None
    brier_koa: float
    ece: float
    per_class: tuple[ClassMetrics, ...]
    confusion_matrix: tuple[tuple[int, ...], ...]
    qwk_ci: tuple[float, float] | None
    auc_koa_ci: tuple[float, float] | None
    bootstrap_samples: int
    ece_calibrated: float | None = None
    notes: tuple[str, ...] = ()
    conformal_level: float | None = None
    conformal_coverage: float | None = None
    conformal_mean_set_size: float | None = None
    ece_ci: tuple[float, float] | None = None
    ece_calibrated_ci: tuple[float, float] | None = None
    ece_calibrated_floor: float | None = None
    ece_grade_noise: float | None = None
    ece_grade_noise_ci: tuple[float, float] | None = None
    grade_noise_share: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists, every number a plain int or float)."""
        data = asdict(self)
        data["per_class"] = [asdict(row) for row in self.per_class]
        data["confusion_matrix"] = [list(row) for row in self.confusion_matrix]
        for key in CI_KEYS:
            data[key] = None if data[key] is None else list(data[key])
        data["notes"] = list(self.notes)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvaluationMetrics:
        """The metrics ``to_dict`` wrote (e.g. read back from ``metrics.json``)."""
        values = dict(data)
        values["per_class"] = tuple(ClassMetrics(**row) for row in data["per_class"])
        values["confusion_matrix"] = tuple(tuple(row) for row in data["confusion_matrix"])
        for key in CI_KEYS:
            # Metrics written before ECE had intervals lack the ECE keys.
            values[key] = None if data.get(key) is None else tuple(data[key])
        values["notes"] = tuple(data.get("notes", ()))
        return cls(**values)


@dataclass(frozen=True)
class ReliabilityBins:
    """Equal-width confidence bins: sample count, mean confidence and accuracy per bin."""

    edges: NDArray[np.float64]
    counts: NDArray[np.int64]
    confidence: NDArray[np.float64]
    accuracy: NDArray[np.float64]


def reliability_bins(
    y_true: ArrayLike, probs: ArrayLike, n_bins: int = ECE_BINS
) -> ReliabilityBins:
    """Bin the max-probability confidence into ``n_bins`` equal-width (lo, hi] bins.

    Empty bins have NaN confidence and accuracy.
    """
    labels = np.asarray(y_true)
    p = np.asarray(probs, dtype=np.float64)
    confidence = p.max(axis=1)
    correct = (p.argmax(axis=1) == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bin_ids = np.digitize(confidence, edges[1:-1], right=True)
    counts = np.bincount(bin_ids, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(bin_ids, weights=confidence, minlength=n_bins) / counts
        mean_acc = np.bincount(bin_ids, weights=correct, minlength=n_bins) / counts
    return ReliabilityBins(edges, counts, mean_conf, mean_acc)


def expected_calibration_error(
    y_true: ArrayLike, probs: ArrayLike, n_bins: int = ECE_BINS
) -> float:
    """ECE: the sample-weighted mean |accuracy - confidence| over equal-width confidence bins.

    sklearn has no ECE, so this is the one metric koa computes by hand.
    """
    bins = reliability_bins(y_true, probs, n_bins)
    filled = bins.counts > 0
    gaps = np.abs(bins.accuracy[filled] - bins.confidence[filled])
    return float(np.sum(gaps * bins.counts[filled]) / bins.counts.sum())


def _class_rows(
    y_true: NDArray[np.int64], y_pred: NDArray[np.int64], probs: NDArray[np.float64]
) -> tuple[tuple[ClassMetrics, ...], list[str]]:
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=GRADES, zero_division=0
    )
    rows, notes = [], []
    for grade in GRADES:
        positives = y_true == grade
        auc: float | None = None
        if positives.all() or not positives.any():
            notes.append(f"AUC for KL{grade} undefined: the split has no or only KL{grade} cases")
        else:
            auc = float(roc_auc_score(positives, probs[:, grade]))
        row = ClassMetrics(
            grade=grade,
            precision=float(precision[grade]),
            recall=float(recall[grade]),
            f1=float(f1[grade]),
            support=int(support[grade]),
            auc_roc=auc,
        )
        rows.append(row)
    return tuple(rows), notes


def _auc_macro(
    y_true: NDArray[np.int64], probs: NDArray[np.float64], rows: tuple[ClassMetrics, ...]
) -> tuple[float | None, list[str]]:
    if all(row.auc_roc is not None for row in rows):
        return float(roc_auc_score(y_true, probs, multi_class="ovr", labels=GRADES)), []
    present = [row.auc_roc for row in rows if row.auc_roc is not None]
    if not present:
        return None, ["macro AUC undefined: no grade has both positives and negatives"]
    note = f"macro AUC averages the {len(present)} grades with both positives and negatives"
    return float(np.mean(present)), [note]


def _koa_binary(
    y_koa: NDArray[np.int64], koa: NDArray[np.float64], threshold: float
) -> tuple[float | None, float | None, float | None, list[str]]:
    """AUC, sensitivity and specificity of KL >= 2 at ``threshold`` (None where undefined)."""
    predicted = (koa >= threshold).astype(np.int64)
    has_pos, has_neg = bool(y_koa.any()), bool((y_koa == 0).any())
    sensitivity = float(recall_score(y_koa, predicted, pos_label=1)) if has_pos else None
    specificity = float(recall_score(y_koa, predicted, pos_label=0)) if has_neg else None
    if not (has_pos and has_neg):
        note = "AUC for KOA undefined: the split lacks KL<2 or KL>=2 cases"
        return None, sensitivity, specificity, [note]
    return float(roc_auc_score(y_koa, koa)), sensitivity, specificity, []


def evaluate_predictions(
    y_true: ArrayLike,
    probs: ArrayLike,
    threshold: float = 0.5,
    *,
    n_bootstrap: int = BOOTSTRAP_SAMPLES,
    seed: int = 0,
    calibrated_probs: ArrayLike | None = None,
) -> EvaluationMetrics:
    """Score five-grade probabilities against true KL grades.

    Args:
        y_true: true KL grades 0-4, shape (N,).
        probs: predicted probabilities, shape (N, 5), rows summing to 1.
        threshold: operating point on p_koa = p2 + p3 + p4 for sensitivity/specificity.
        n_bootstrap: bootstrap resamples for the QWK and AUC(KL>=2) intervals (0: none).
        seed: seed of the bootstrap's numpy Generator.
        calibrated_probs: the same predictions after temperature scaling, if any; their
            ECE is reported as ``ece_calibrated``.

    Raises:
        ValueError: shapes disagree, the split is empty or a grade is outside 0-4.
    """
    labels, p = _validated(y_true, probs)
    y_pred = p.argmax(axis=1)
    rows, notes = _class_rows(labels, y_pred, p)
    auc_macro, macro_notes = _auc_macro(labels, p, rows)
    y_koa, koa = (labels >= KOA_MIN_GRADE).astype(np.int64), p_koa(p)
    auc_koa, sensitivity, specificity, koa_notes = _koa_binary(y_koa, koa, threshold)
    qwk: float | None = None
    if np.unique(np.concatenate([labels, y_pred])).size > 1:
        qwk = float(cohen_kappa_score(labels, y_pred, weights="quadratic", labels=GRADES))
    else:
        notes.append("QWK undefined: truth and prediction are both a single grade")
    qwk_ci, auc_ci = (
        bootstrap_intervals(labels, p, n_bootstrap, seed) if n_bootstrap else (None, None)
    )
    calibrated = None if calibrated_probs is None else _validated(labels, calibrated_probs)[1]
    return EvaluationMetrics(
        n_samples=len(labels),
        threshold=float(threshold),
        accuracy=float(accuracy_score(labels, y_pred)),
        balanced_accuracy=_balanced_accuracy(labels, y_pred),
        macro_f1=float(f1_score(labels, y_pred, labels=GRADES, average="macro", zero_division=0)),
        qwk=qwk,
        mae=float(mean_absolute_error(labels, y_pred)),
        auc_macro=auc_macro,
        auc_koa=auc_koa,
        sensitivity_koa=sensitivity,
        specificity_koa=specificity,
        brier_koa=float(brier_score_loss(y_koa, koa, pos_label=1)),
        ece=expected_calibration_error(labels, p),
        per_class=rows,
        confusion_matrix=tuple(
            tuple(int(v) for v in row) for row in confusion_matrix(labels, y_pred, labels=GRADES)
        ),
        qwk_ci=qwk_ci,
        auc_koa_ci=auc_ci,
        bootstrap_samples=n_bootstrap,
        ece_calibrated=(
            None if calibrated is None else expected_calibration_error(labels, calibrated)
        ),
        notes=tuple(notes + macro_notes + koa_notes),
        ece_ci=bootstrap_ece_interval(labels, p, n_bootstrap, seed) if n_bootstrap else None,
        ece_calibrated_ci=(
            bootstrap_ece_interval(labels, calibrated, n_bootstrap, seed)
            if n_bootstrap and calibrated is not None
            else None
        ),
        ece_calibrated_floor=(
            calibrated_ece_floor(calibrated, n_bootstrap, seed)
            if n_bootstrap and calibrated is not None
            else None
        ),
    )


def with_grade_noise(
    metrics: EvaluationMetrics,
    y_true: ArrayLike,
    noise_calibrated_probs: ArrayLike,
    share: float,
    *,
    n_bootstrap: int = BOOTSTRAP_SAMPLES,
    seed: int = 0,
) -> EvaluationMetrics:
    """``metrics`` with the ECE of the same predictions after the grade-noise calibration."""
    labels, p = _validated(y_true, noise_calibrated_probs)
    return replace(
        metrics,
        ece_grade_noise=expected_calibration_error(labels, p),
        ece_grade_noise_ci=(
            bootstrap_ece_interval(labels, p, n_bootstrap, seed) if n_bootstrap else None
        ),
        grade_noise_share=float(share),
    )


def _balanced_accuracy(y_true: NDArray[np.int64], y_pred: NDArray[np.int64]) -> float:
    # balanced_accuracy_score takes no ``labels`` and warns on a one-grade split, where its
    # answer (the recall of that grade) is still the right one.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="A single label was found", category=UserWarning)
        return float(balanced_accuracy_score(y_true, y_pred))


def _validated(
    y_true: ArrayLike, probs: ArrayLike
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    labels = np.asarray(y_true).astype(np.int64)
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != NUM_CLASSES or labels.shape != (p.shape[0],):
        raise ValueError(
            f"need y_true (N,) and probs (N, {NUM_CLASSES}); got {labels.shape}, {p.shape}"
        )
    if labels.size == 0:
        raise ValueError("cannot evaluate an empty split")
    if labels.min() < 0 or labels.max() >= NUM_CLASSES:
        raise ValueError(f"KL grades must lie in 0-{NUM_CLASSES - 1}")
    return labels, p


def bootstrap_intervals(
    y_true: NDArray[np.int64],
    probs: NDArray[np.float64],
    n_bootstrap: int = BOOTSTRAP_SAMPLES,
    seed: int = 0,
) -> tuple[tuple[float, float] | None, tuple[float, float] | None]:
    """Bootstrap 95 % percentile intervals for QWK and AUC(KL>=2).

    All resamples are scored at once: calling sklearn 1,000 times costs ~6 s here, so the
    two statistics are computed in batch by ``batched_qwk`` and ``batched_auc`` (both
    tested equal to sklearn's). Resamples without both KOA classes are skipped for AUC.
    """
    rng = np.random.default_rng(seed)
    index = rng.integers(0, len(y_true), size=(n_bootstrap, len(y_true)))
    qwk = batched_qwk(y_true[index], probs.argmax(axis=1)[index])
    auc = batched_auc(y_true[index] >= KOA_MIN_GRADE, p_koa(probs)[index])
    return _percentile_interval(qwk), _percentile_interval(auc)


def bootstrap_ece_interval(
    y_true: NDArray[np.int64],
    probs: NDArray[np.float64],
    n_bootstrap: int = BOOTSTRAP_SAMPLES,
    seed: int = 0,
    n_bins: int = ECE_BINS,
) -> tuple[float, float] | None:
    """Bootstrap 95 % percentile interval of ``expected_calibration_error``.

    Uses the same resamples as ``bootstrap_intervals`` for the same seed, all at once.
    """
    rng = np.random.default_rng(seed)
    index = rng.integers(0, len(y_true), size=(n_bootstrap, len(y_true)))
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == y_true).astype(np.float64)
    return _percentile_interval(_batched_ece(confidence[index], correct[index], n_bins))


def calibrated_ece_floor(
    probs: NDArray[np.float64],
    n_draws: int = BOOTSTRAP_SAMPLES,
    seed: int = 0,
    n_bins: int = ECE_BINS,
) -> float:
    """The median ECE that a perfectly calibrated model with these confidences would show.

    Binned ECE is biased upwards on a finite split: each bin's accuracy is a sample mean.
    Consistency resampling (Broecker & Smith 2007) draws "correct" with probability equal
    to the confidence, which is what calibration means, and scores it like real labels;
    an observed ECE near this floor is sampling noise, not miscalibration.
    """
    rng = np.random.default_rng(seed)
    confidence = np.asarray(probs, dtype=np.float64).max(axis=1)
    drawn = (rng.random((n_draws, confidence.size)) < confidence).astype(np.float64)
    tiled = np.broadcast_to(confidence, drawn.shape)
    return float(np.median(_batched_ece(tiled, drawn, n_bins)))


def _batched_ece(
    confidence: NDArray[np.float64], correct: NDArray[np.float64], n_bins: int
) -> NDArray[np.float64]:
    # A bin's count x |accuracy - confidence| is |sum(correct) - sum(confidence)|, so one
    # bincount over (row, bin) gives every row's ECE.
    n_rows, n_samples = confidence.shape
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.digitize(confidence, edges[1:-1], right=True)
    flat = (np.arange(n_rows)[:, None] * n_bins + bins).ravel()
    size = n_rows * n_bins
    gap = np.bincount(flat, weights=correct.ravel(), minlength=size) - np.bincount(
        flat, weights=confidence.ravel(), minlength=size
    )
    return np.asarray(np.abs(gap.reshape(n_rows, n_bins)).sum(axis=1) / n_samples)


def _percentile_interval(values: NDArray[np.float64]) -> tuple[float, float] | None:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return None
    low, high = np.percentile(finite, [2.5, 97.5])
    return float(low), float(high)


def batched_qwk(y_true: NDArray[np.int64], y_pred: NDArray[np.int64]) -> NDArray[np.float64]:
    """Quadratic weighted kappa of each row of (B, N) grade arrays (NaN where undefined).

    The same formula as ``cohen_kappa_score(weights="quadratic")``, on B confusion matrices
    counted in one ``bincount``.
    """
    n_rows = y_true.shape[0]
    flat = (np.arange(n_rows)[:, None] * NUM_CLASSES + y_true) * NUM_CLASSES + y_pred
    observed = np.bincount(flat.ravel(), minlength=n_rows * NUM_CLASSES**2).reshape(
        n_rows, NUM_CLASSES, NUM_CLASSES
    )
    expected = observed.sum(axis=2)[:, :, None] * observed.sum(axis=1)[:, None, :] / y_true.shape[1]
    grades = np.arange(NUM_CLASSES)
    weights = (grades[:, None] - grades[None, :]) ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = (weights * observed).sum(axis=(1, 2)) / (weights * expected).sum(axis=(1, 2))
    return np.asarray(1.0 - ratio, dtype=np.float64)


def batched_auc(y_true: NDArray[np.bool_], scores: NDArray[np.float64]) -> NDArray[np.float64]:
    """ROC AUC of each row of (B, N) binary labels and scores (NaN without both classes).

    The Mann-Whitney form of ``roc_auc_score``: mid-ranks make ties count one half.
    """
    ranks = rankdata(scores, axis=1)
    n_pos = y_true.sum(axis=1)
    n_neg = y_true.shape[1] - n_pos
    rank_sum = np.where(y_true, ranks, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)
    return np.where((n_pos > 0) & (n_neg > 0), auc, np.nan)
