"""KL-graded training datasets: preprocessed splits, checked, cached by content.

Which files a dataset holds is ``koa_core.data.labels``' job. Every image goes through
``koa_core.io.model_input.load_model_input``, the path nightly scoring uses too, once;
the uint8 results are cached under ``cache_dir`` keyed by the dataset fingerprint, input
size and ``PREPROCESS_VERSION``.
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch

from koa_core.data.labels import SPLITS, LabelledFile, assign_split, dataset_fingerprint, discover
from koa_core.errors import DatasetError, ImageReadError
from koa_core.imaging.transforms import PREPROCESS_VERSION
from koa_core.io.model_input import FileModelInput, load_model_input
from koa_core.schema import GRADES
from koa_core.storage.files import atomic_write_bytes

log = logging.getLogger(__name__)

# 2: inputs rounded in float32 as the nightly path does (1 rounded in float64).
CACHE_FORMAT = "2"

InputLoader = Callable[[Path, int], FileModelInput]
LoadProgress = Callable[[int, int], None]


@dataclass(frozen=True)
class SkippedFile:
    """A file left out of a dataset, with the reader's stable reason code."""

    path: str
    reason: str
    detail: str


@dataclass(frozen=True)
class Split:
    """Preprocessed images of one split: ``images`` uint8 (N, S, S), ``labels`` int64 (N,)."""

    images: torch.Tensor
    labels: torch.Tensor
    paths: tuple[str, ...]

    def class_counts(self) -> list[int]:
        """Images per KL grade 0-4."""
        return [int(count) for count in torch.bincount(self.labels, minlength=len(GRADES))]


@dataclass(frozen=True)
class KLDataset:
    """A loaded dataset: its splits, fingerprint and the files that were skipped."""

    root: Path
    input_size: int
    fingerprint: str
    splits: dict[str, Split]
    skipped: tuple[SkippedFile, ...]


def _read_all(
    files: Sequence[LabelledFile],
    input_size: int,
    loader: InputLoader,
    progress: LoadProgress | None,
) -> tuple[list[LabelledFile], list[npt.NDArray[np.uint8]], list[SkippedFile]]:
    kept, images, skipped = [], [], []
    for done, item in enumerate(files, start=1):
        try:
            model_input = loader(item.path, input_size)
        except ImageReadError as error:
            skipped.append(SkippedFile(item.relpath, error.reason, error.detail))
        else:
            # One patient's knees never straddle splits: group by patient, else study.
            group = item.group or model_input.meta.patient_id
            group = group or model_input.meta.study_instance_uid
            kept.append(assign_split(replace(item, group=group)))
            images.append(model_input.pixels)
        if progress is not None:
            progress(done, len(files))
    return kept, images, skipped


def _check_skipped(root: Path, total: int, skipped: Sequence[SkippedFile], share: float) -> None:
    if not skipped:
        return
    reasons = "; ".join(f"{s.path}: {s.reason}: {s.detail}" for s in skipped[:5])
    if len(skipped) > share * total:
        raise DatasetError(
            f"{root}: {len(skipped)} of {total} images unreadable"
            f" (more than {share:.0%} allowed): {reasons}"
        )
    log.warning("%s: skipped %d of %d unreadable images: %s", root, len(skipped), total, reasons)


def _build_splits(
    root: Path, kept: Sequence[LabelledFile], images: Sequence[npt.NDArray[np.uint8]]
) -> dict[str, Split]:
    splits = {}
    for name in SPLITS:
        index = [i for i, item in enumerate(kept) if item.split == name]
        if not index:
            continue
        splits[name] = Split(
            images=torch.from_numpy(np.stack([images[i] for i in index])),
            labels=torch.tensor([kept[i].label for i in index], dtype=torch.int64),
            paths=tuple(kept[i].relpath for i in index),
        )
    if "train" not in splits or "val" not in splits:
        raise DatasetError(f"{root}: needs both train and val images, has {sorted(splits)}")
    empty = [f"KL{g}" for g, n in enumerate(splits["train"].class_counts()) if n == 0]
    if empty:
        raise DatasetError(f"{root}: the train split has no images of {', '.join(empty)}")
    return splits


def _cache_file(cache_dir: Path, fingerprint: str, input_size: int) -> Path:
    key = hashlib.sha256(f"{fingerprint}:{input_size}:{PREPROCESS_VERSION}:{CACHE_FORMAT}".encode())
    return cache_dir / f"kl-{key.hexdigest()[:24]}.npz"


def _write_cache(path: Path, splits: dict[str, Split], skipped: Sequence[SkippedFile]) -> None:
    arrays: dict[str, npt.NDArray[np.generic]] = {
        "skipped": np.array([[s.path, s.reason, s.detail] for s in skipped], dtype=str).reshape(
            -1, 3
        )
    }
    for name, split in splits.items():
        arrays[f"{name}_images"] = split.images.numpy()
        arrays[f"{name}_labels"] = split.labels.numpy()
        arrays[f"{name}_paths"] = np.array(split.paths, dtype=str)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    atomic_write_bytes(path, buffer.getvalue())


def _read_cache(path: Path) -> tuple[dict[str, Split], tuple[SkippedFile, ...]] | None:
    try:
        with np.load(path, allow_pickle=False) as data:
            splits = {
                name: Split(
                    images=torch.from_numpy(data[f"{name}_images"]),
                    labels=torch.from_numpy(data[f"{name}_labels"]),
                    paths=tuple(str(p) for p in data[f"{name}_paths"]),
                )
                for name in SPLITS
                if f"{name}_images" in data.files
            }
            skipped = tuple(SkippedFile(*map(str, row)) for row in data["skipped"])
    except (OSError, ValueError, KeyError, EOFError) as error:
        log.warning("%s: ignoring unreadable dataset cache: %s", path, error)
        return None
    return splits, skipped


def load_dataset(
    root: Path,
    input_size: int = 224,
    labels: Path | None = None,
    cache_dir: Path | None = None,
    loader: InputLoader = load_model_input,
    max_skipped_share: float = 0.1,
    progress: LoadProgress | None = None,
) -> KLDataset:
    """Discover, validate, split, preprocess (or load from cache) a KL-graded dataset.

    Args:
        root: the dataset folder (image-folder layout or a labels table).
        input_size: model input side; images are preprocessed to it.
        labels: an explicit labels table (default: ``root/labels.csv|parquet`` if present).
        cache_dir: where preprocessed tensors are cached; ``None`` disables the cache.
        loader: file to model input (``load_model_input``; tests wrap it to count reads).
        max_skipped_share: unreadable files beyond this share fail the whole dataset.
        progress: called with (images done, total) while preprocessing.

    Raises:
        DatasetError: the dataset cannot be used; the message names the problem.
    """
    files = discover(root, labels)
    fingerprint = dataset_fingerprint(files)
    cache = _cache_file(cache_dir, fingerprint, input_size) if cache_dir else None
    cached = _read_cache(cache) if cache is not None and cache.is_file() else None
    if cached is not None:
        splits, skipped = cached
        _check_skipped(root, len(files), skipped, max_skipped_share)
        return KLDataset(root, input_size, fingerprint, splits, skipped)
    kept, images, skipped_list = _read_all(files, input_size, loader, progress)
    _check_skipped(root, len(files), skipped_list, max_skipped_share)
    splits = _build_splits(root, kept, images)
    if cache is not None:
        _write_cache(cache, splits, skipped_list)
    return KLDataset(root, input_size, fingerprint, splits, tuple(skipped_list))
