"""Evaluation reports: metrics.json, PNG plots and a short Markdown summary a person can read."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from numpy.typing import ArrayLike, NDArray
from sklearn.metrics import roc_curve

from koa_core.evaluation.metrics import (
    EvaluationMetrics,
    expected_calibration_error,
    reliability_bins,
)
from koa_core.schema import CLASS_NAMES, p_koa
from koa_core.storage.files import atomic_write_bytes

DPI = 110


@dataclass(frozen=True)
class Headline:
    """One row of the headline table: the ``metrics.json`` key, its label and its CI key.

    An ``optional`` row (a calibrated ECE: only with a validation split) is left out when
    the evaluation has no value for it, rather than shown as n/a.
    """

    key: str
    label: str
    ci_key: str | None = None
    higher_is_better: bool = True
    optional: bool = False

    def shown(self, metrics: Mapping[str, Any]) -> bool:
        """Whether the row belongs in a table of ``metrics``."""
        return self.key in metrics and not (self.optional and metrics[self.key] is None)


HEADLINES = (
    Headline("qwk", "Quadratic weighted kappa", "qwk_ci"),
    Headline("auc_koa", "AUC-ROC, KOA (KL>=2)", "auc_koa_ci"),
    Headline("accuracy", "Accuracy"),
    Headline("balanced_accuracy", "Balanced accuracy"),
    Headline("macro_f1", "Macro F1"),
    Headline("mae", "MAE (grades)", higher_is_better=False),
    Headline("auc_macro", "AUC-ROC, macro one-vs-rest"),
    Headline("sensitivity_koa", "Sensitivity, KOA"),
    Headline("specificity_koa", "Specificity, KOA"),
    Headline("brier_koa", "Brier score, KOA", higher_is_better=False),
    Headline("ece", "ECE (15 bins)", "ece_ci", higher_is_better=False),
    Headline(
        "ece_calibrated",
        "ECE after temperature scaling",
        "ece_calibrated_ci",
        higher_is_better=False,
        optional=True,
    ),
    Headline(
        "ece_grade_noise",
        "ECE after temperature and grade-noise term",
        "ece_grade_noise_ci",
        higher_is_better=False,
        optional=True,
    ),
)


@dataclass(frozen=True)
class ReportPaths:
    """The files ``write_evaluation_report`` wrote."""

    metrics_json: Path
    report_md: Path
    confusion_png: Path
    roc_png: Path
    reliability_png: Path

    @classmethod
    def in_dir(cls, out_dir: Path) -> ReportPaths:
        """Where ``write_evaluation_report`` puts each file in ``out_dir``."""
        return cls(
            metrics_json=out_dir / "metrics.json",
            report_md=out_dir / "report.md",
            confusion_png=out_dir / "confusion_matrix.png",
            roc_png=out_dir / "roc.png",
            reliability_png=out_dir / "reliability.png",
        )


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _fmt_ci(interval: Any) -> str:
    return "" if interval is None else f"[{interval[0]:.3f}, {interval[1]:.3f}]"


def _with_ci(value: Any, interval: Any) -> str:
    return " ".join(part for part in (_fmt(value), _fmt_ci(interval)) if part)


def _save(figure: Figure, path: Path) -> None:
    # A bare Figure renders through Agg without pyplot's global state, so worker threads
    # can draw reports side by side.
    figure.savefig(path, dpi=DPI, bbox_inches="tight")


def plot_confusion_matrix(matrix: NDArray[np.int64], path: Path) -> None:
    """Counts in each cell, coloured by the share of the true grade (row-normalised)."""
    counts = np.asarray(matrix, dtype=np.int64)
    totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    figure = Figure(figsize=(5.6, 4.8))
    axes = figure.add_subplot()
    image = axes.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    for (row, col), count in np.ndenumerate(counts):
        colour = "white" if shares[row, col] > 0.6 else "black"
        text = f"{count}\n{shares[row, col]:.0%}"
        axes.text(col, row, text, ha="center", va="center", color=colour, fontsize=9)
    axes.set_xticks(range(len(CLASS_NAMES)), CLASS_NAMES)
    axes.set_yticks(range(len(CLASS_NAMES)), CLASS_NAMES)
    axes.set_xlabel("Predicted grade")
    axes.set_ylabel("True grade")
    axes.set_title("Confusion matrix (colour: share of true grade)")
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    _save(figure, path)


def _roc_axes(axes: Axes, title: str) -> None:
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="chance")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.01)
    axes.set_aspect("equal")
    axes.set_xlabel("False positive rate (1 - specificity)")
    axes.set_ylabel("True positive rate (sensitivity)")
    axes.set_title(title)
    axes.legend(loc="lower right", fontsize=8)


def plot_roc(
    y_true: NDArray[np.int64], probs: NDArray[np.float64], metrics: EvaluationMetrics, path: Path
) -> None:
    """ROC for KOA (KL>=2) with its operating point, beside the one-vs-rest curve of each grade."""
    figure = Figure(figsize=(11, 5))
    koa_axes, ovr_axes = figure.subplots(1, 2)
    y_koa = y_true >= 2
    if metrics.auc_koa is not None:
        fpr, tpr, _ = roc_curve(y_koa, p_koa(probs))
        koa_axes.plot(fpr, tpr, linewidth=2, label=f"KL>=2, AUC {metrics.auc_koa:.3f}")
    if metrics.sensitivity_koa is not None and metrics.specificity_koa is not None:
        point = (1 - metrics.specificity_koa, metrics.sensitivity_koa)
        koa_axes.plot(*point, "o", color="crimson", label=f"threshold {metrics.threshold:g}")
    _roc_axes(koa_axes, "Knee OA (KL>=2) vs KL0-1")
    for row in metrics.per_class:
        if row.auc_roc is not None:
            fpr, tpr, _ = roc_curve(y_true == row.grade, probs[:, row.grade])
            label = f"{CLASS_NAMES[row.grade]}, AUC {row.auc_roc:.3f}"
            ovr_axes.plot(fpr, tpr, linewidth=1.5, label=label)
    _roc_axes(ovr_axes, "One-vs-rest per grade")
    _save(figure, path)


def _reliability_axes(
    axes: Axes, y_true: NDArray[np.int64], probs: NDArray[np.float64], name: str
) -> None:
    bins = reliability_bins(y_true, probs)
    centres = (bins.edges[:-1] + bins.edges[1:]) / 2
    width = bins.edges[1] - bins.edges[0]
    filled = bins.counts > 0
    axes.bar(centres[filled], bins.accuracy[filled], width=width * 0.9, label="accuracy", alpha=0.8)
    # A hatched outline, not a filled bar, so a gap below the accuracy bar stays visible.
    axes.bar(
        centres[filled],
        bins.confidence[filled] - bins.accuracy[filled],
        bottom=bins.accuracy[filled],
        width=width * 0.9,
        facecolor="none",
        edgecolor="crimson",
        hatch="//",
        label="gap to mean confidence",
    )
    axes.plot(
        [0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfect calibration"
    )
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.set_xlabel("Confidence (max probability)")
    axes.set_ylabel("Accuracy")
    axes.set_title(f"{name}: ECE {expected_calibration_error(y_true, probs):.3f}")
    axes.legend(loc="upper left", fontsize=8)


def plot_reliability(
    y_true: NDArray[np.int64],
    probs: NDArray[np.float64],
    calibrated_probs: NDArray[np.float64] | None,
    path: Path,
) -> None:
    """Reliability diagram of the raw softmax, and after temperature scaling when given."""
    panels = [("Before temperature scaling", probs)]
    if calibrated_probs is not None:
        panels.append(("After temperature scaling", calibrated_probs))
    figure = Figure(figsize=(5.5 * len(panels), 5))
    for axes, (name, values) in zip(
        figure.subplots(1, len(panels), squeeze=False)[0], panels, strict=True
    ):
        _reliability_axes(axes, y_true, values, name)
    _save(figure, path)


def _prediction_set_lines(data: Mapping[str, Any]) -> list[str]:
    """The prediction-set paragraph: nominal level, coverage and mean size, when measured."""
    coverage, level = data.get("conformal_coverage"), data.get("conformal_level")
    if coverage is None or level is None:
        return []
    return [
        "",
        "## Prediction sets",
        "",
        f"Nominal coverage {level:.0%}: the true grade was in the set for {coverage:.1%} of"
        f" the {data['n_samples']} images; mean set size"
        f" {data['conformal_mean_set_size']:.2f} grades (LAC split-conformal sets calibrated on"
        " the validation split).",
    ]


def reliability_lines(
    y_true: NDArray[np.int64], probs: NDArray[np.float64], name: str
) -> list[str]:
    """The reliability diagram as a Markdown table: count, confidence and accuracy per bin."""
    bins = reliability_bins(y_true, probs)
    lines = [
        f"Reliability, {name} (ECE {expected_calibration_error(y_true, probs):.3f}):",
        "",
        "| Confidence bin | Images | Mean confidence | Accuracy | Gap |",
        "|---|---:|---:|---:|---:|",
    ]
    for low, high, count, confidence, accuracy in zip(
        bins.edges[:-1], bins.edges[1:], bins.counts, bins.confidence, bins.accuracy, strict=True
    ):
        if count:
            lines.append(
                f"| ({low:.2f}, {high:.2f}] | {count} | {confidence:.3f} | {accuracy:.3f}"
                f" | {accuracy - confidence:+.3f} |"
            )
    return lines


def _ece_floor_lines(data: Mapping[str, Any]) -> list[str]:
    floor = data.get("ece_calibrated_floor")
    if floor is None:
        return []
    return [
        "",
        f"A perfectly calibrated model would show an ECE of about {floor:.3f} on these "
        f"{data['n_samples']} images (median of consistency resamples): the part of the ECE "
        "after temperature scaling up to that is sampling noise, not miscalibration.",
    ]


def _grade_noise_lines(data: Mapping[str, Any]) -> list[str]:
    share = data.get("grade_noise_share")
    if share is None:
        return []
    return [
        "",
        f"Fitted together with the temperature on validation, the grade-noise term moves "
        f"{share:.0%} of each grade's probability onto its neighbouring grades: labels that "
        "confuse neighbouring grades cap how often even a clear knee's grade is right.",
    ]


def _markdown(
    title: str, data: Mapping[str, Any], paths: ReportPaths, reliability: Sequence[str] = ()
) -> str:
    lines = [
        f"# {title}",
        "",
        f"{data['n_samples']} images; KOA operating threshold p(KL>=2) >= {data['threshold']:g}; "
        f"95 % intervals from {data['bootstrap_samples']} bootstrap resamples.",
        "",
        "| Metric | Value | 95 % CI |",
        "|---|---:|---|",
    ]
    for row in HEADLINES:
        if not row.shown(data):
            continue
        ci = _fmt_ci(data.get(row.ci_key)) if row.ci_key else ""
        lines.append(f"| {row.label} | {_fmt(data.get(row.key))} | {ci} |")
    lines += _ece_floor_lines(data)
    lines += _grade_noise_lines(data)
    lines += [
        "",
        "| Grade | Precision | Recall | F1 | Support | AUC (OvR) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for cls in data["per_class"]:
        lines.append(
            f"| {CLASS_NAMES[cls['grade']]} | {_fmt(cls['precision'])} | {_fmt(cls['recall'])} "
            f"| {_fmt(cls['f1'])} | {cls['support']} | {_fmt(cls['auc_roc'])} |"
        )
    lines += _prediction_set_lines(data)
    if data["notes"]:
        lines += ["", *(f"- Note: {note}" for note in data["notes"])]
    for caption, png in (
        ("Confusion matrix", paths.confusion_png),
        ("ROC curves", paths.roc_png),
        ("Reliability diagram", paths.reliability_png),
    ):
        lines += ["", f"## {caption}", "", f"![{caption}]({png.name})"]
    if reliability:
        lines += ["", *reliability]
    return "\n".join(lines) + "\n"


def write_evaluation_report(
    metrics: EvaluationMetrics,
    out_dir: Path,
    *,
    title: str,
    y_true: ArrayLike,
    probs: ArrayLike,
    calibrated_probs: ArrayLike | None = None,
) -> ReportPaths:
    """Write ``metrics.json``, three PNG plots and ``report.md`` into ``out_dir``.

    Args:
        metrics: ``evaluate_predictions`` on ``y_true`` and ``probs``.
        out_dir: created if missing; existing report files are replaced.
        title: the Markdown heading (e.g. the model version and split).
        y_true: true KL grades, shape (N,).
        probs: the uncalibrated probabilities, shape (N, 5).
        calibrated_probs: the same after temperature scaling, for the reliability plot.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = ReportPaths.in_dir(out_dir)
    labels = np.asarray(y_true).astype(np.int64)
    p = np.asarray(probs, dtype=np.float64)
    calibrated = (
        None if calibrated_probs is None else np.asarray(calibrated_probs, dtype=np.float64)
    )
    data = metrics.to_dict()
    if calibrated is not None and data["ece_calibrated"] is None:
        data["ece_calibrated"] = expected_calibration_error(labels, calibrated)
    plot_confusion_matrix(np.asarray(metrics.confusion_matrix), paths.confusion_png)
    plot_roc(labels, p, metrics, paths.roc_png)
    plot_reliability(labels, p, calibrated, paths.reliability_png)
    atomic_write_bytes(paths.metrics_json, json.dumps(data, indent=2).encode())
    name, shown = (
        ("after temperature scaling", calibrated) if calibrated is not None else ("raw", p)
    )
    reliability = reliability_lines(labels, shown, name)
    atomic_write_bytes(paths.report_md, _markdown(title, data, paths, reliability).encode())
    return paths


def comparison_table(champion: Mapping[str, Any], challenger: Mapping[str, Any]) -> str:
    """Markdown table of champion and challenger headline metrics side by side.

    Both are ``EvaluationMetrics.to_dict()`` outputs on the same test set; the last column
    marks which model is better on each row.
    """
    lines = [
        "| Metric | Champion | Challenger | Change | Better |",
        "|---|---:|---:|---:|---|",
    ]
    for row in HEADLINES:
        old, new = champion.get(row.key), challenger.get(row.key)
        if old is None and new is None:
            continue
        change, better = "n/a", ""
        if old is not None and new is not None:
            change = f"{new - old:+.3f}"
            if new != old:
                better = "challenger" if (new > old) == row.higher_is_better else "champion"
        old_text = _with_ci(old, champion.get(row.ci_key) if row.ci_key else None)
        new_text = _with_ci(new, challenger.get(row.ci_key) if row.ci_key else None)
        lines.append(f"| {row.label} | {old_text} | {new_text} | {change} | {better} |")
    return "\n".join(lines) + "\n"
