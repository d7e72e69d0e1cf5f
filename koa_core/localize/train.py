"""Train a localizer on films with labelled joint centres: hard augmentation, one-cycle AdamW.

Every film is read once with the one reader (``koa_core.io.reader.read_radiograph``) and
kept small: training films at the work spacing (fine enough for the largest zoom), the
held-out validation films exactly as ``find_knees`` prepares a film. Each epoch draws new
augmented canvases from a generator keyed by (seed, epoch, sample), so a run is
deterministic in its seed. The card records the validation figures of the final weights.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from koa_core.errors import DatasetError, ImageReadError
from koa_core.imaging.transforms import clip_to_percentiles
from koa_core.io.reader import read_radiograph
from koa_core.localize.augment import SCALE_RANGE, WorkFilm, augment_sample
from koa_core.localize.card import InputNormalisation, LocalizerCard
from koa_core.localize.evaluate import FilmResult, LocalizerMetrics, summarise
from koa_core.localize.film_input import Resampled, prepare_film, resample
from koa_core.localize.find import Localizer, locate
from koa_core.localize.heatmap import KneeTarget, encode_targets
from koa_core.localize.labels import LabelledFilm, films_fingerprint
from koa_core.localize.loss import localizer_loss
from koa_core.localize.network import LocalizerNet, build_localizer
from koa_core.localize.train_config import LocalizerTrainConfig
from koa_core.localize.weights import save_weights
from koa_core.schema import CARD_NAME, WEIGHTS_NAME
from koa_core.storage.files import atomic_write_json

log = logging.getLogger(__name__)
VALIDATION = "validation"


@dataclass(frozen=True)
class EpochLog:
    """One epoch: mean training loss and the validation figures after it."""

    epoch: int
    epochs: int
    loss: float
    validation: LocalizerMetrics
    seconds: float


Progress = Callable[[EpochLog], None]


@dataclass(frozen=True)
class ValidationFilm:
    """A held-out film as ``find_knees`` sees it, and its labels."""

    film: Resampled
    source: LabelledFilm
    spacing_mm: float


@dataclass(frozen=True)
class TrainedLocalizer:
    """The trained network with its card (validation metrics filled in) and the epochs."""

    localizer: Localizer
    history: tuple[EpochLog, ...]

    @property
    def card(self) -> LocalizerCard:
        return self.localizer.card

    @property
    def validation(self) -> dict[str, float | int | None]:
        return dict(self.card.metrics[VALIDATION])

    def save(self, out_dir: Path) -> Path:
        """Write ``weights.pt`` (+ sha256 sidecar) and ``card.json`` into ``out_dir``."""
        digest = save_weights(self.localizer.model.state_dict(), out_dir / WEIGHTS_NAME)
        card = replace(self.card, weights_sha256=digest)
        atomic_write_json(out_dir / CARD_NAME, {"card": card.to_dict()})
        return out_dir


def split_films(
    films: Sequence[LabelledFilm], val_share: float, seed: int
) -> tuple[list[LabelledFilm], list[LabelledFilm]]:
    """(train, validation) by a hash of (seed, relative path); at least one film in each.

    Raises:
        DatasetError: fewer than two films.
    """
    if len(films) < 2:
        raise DatasetError(f"a localizer needs at least 2 labelled films, got {len(films)}")

    def key(film: LabelledFilm) -> float:
        digest = hashlib.sha256(f"{seed}:{film.relpath}".encode()).hexdigest()
        return int(digest[:8], 16) / 2**32

    ranked = sorted(films, key=key)
    n_val = min(max(1, round(len(films) * val_share)), len(films) - 1)
    return ranked[n_val:], ranked[:n_val]


def _read(film: LabelledFilm) -> tuple[np.ndarray, float]:
    try:
        radiograph = read_radiograph(film.path)
    except ImageReadError as error:
        raise DatasetError(f"{film.relpath}: {error}") from error
    if film.spacing_mm is None:
        raise DatasetError(
            f"{film.relpath}: no pixel spacing ((0028,0030) PixelSpacing or a"
            " pixel_spacing_mm column): the localizer works in millimetres"
        )
    return radiograph.pixels, film.spacing_mm * radiograph.decode_scale


def load_work_film(film: LabelledFilm, work_mm: float, norm: InputNormalisation) -> WorkFilm:
    """A training film at ``work_mm``, windowed, with its knees in work pixels."""
    pixels, spacing = _read(film)
    small, (covered_rows, covered_columns) = resample(pixels, spacing, work_mm)
    scale_x, scale_y = covered_columns / small.shape[1], covered_rows / small.shape[0]
    knees = tuple(
        ((k.x + 0.5) / scale_x - 0.5, (k.y + 0.5) / scale_y - 0.5, k.side == "R")
        for k in film.knees
    )
    windowed = clip_to_percentiles(small, norm.low_percentile, norm.high_percentile)
    side_joint = None
    if film.lateral_joint is not None:
        x, y = film.lateral_joint
        side_joint = ((x + 0.5) / scale_x - 0.5, (y + 0.5) / scale_y - 0.5)
    return WorkFilm(windowed, spacing * scale_x, knees, film.lateral, side_joint)


def load_validation_film(film: LabelledFilm, card: LocalizerCard) -> ValidationFilm:
    """A held-out film prepared exactly as ``find_knees`` prepares one."""
    pixels, spacing = _read(film)
    prepared = prepare_film(pixels, spacing, card.mm_per_px, card.normalisation)
    return ValidationFilm(prepared, film, spacing)


def validate(localizer: Localizer, films: Sequence[ValidationFilm]) -> LocalizerMetrics:
    """The localizer's figures on prepared validation films."""
    localizer.model.eval()
    results = []
    for item in films:
        findings = locate(item.film, localizer)
        results.append(
            FilmResult(
                item.source.knees,
                findings.knees,
                item.spacing_mm,
                item.source.lateral,
                findings.p_lateral,
            )
        )
    return summarise(results)


def _batch(
    films: Sequence[WorkFilm],
    indices: Sequence[int],
    config: LocalizerTrainConfig,
    epoch: int,
    norm: InputNormalisation,
) -> tuple[torch.Tensor, list[list[KneeTarget]], list[bool], list[tuple[float, float] | None]]:
    images, knees, lateral, side_joints = [], [], [], []
    for sample in indices:
        seed_seq = np.random.SeedSequence(config.seed, spawn_key=(epoch, sample))
        rng = np.random.Generator(np.random.PCG64(seed_seq))
        film = films[sample % len(films)]
        hard = config.augment and rng.random() < config.hard_share
        pixels, targets, side_joint = augment_sample(
            film, config.canvas_px, config.mm_per_px, rng, hard=hard
        )
        images.append(torch.from_numpy(pixels))
        knees.append(targets)
        lateral.append(film.lateral)
        side_joints.append(side_joint)
    tensor = (torch.stack(images)[:, None] - norm.mean) / norm.std
    return tensor, knees, lateral, side_joints


def native_bf16() -> bool:
    """Whether this CPU runs bf16 natively (AVX-512-bf16 or AMX), so autocast pays."""
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


@dataclass
class _Run:
    """The mutable state of one training run."""

    model: LocalizerNet
    optimiser: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler
    config: LocalizerTrainConfig
    norm: InputNormalisation
    amp: bool


def _step(
    run: _Run,
    inputs: torch.Tensor,
    knees: list[list[KneeTarget]],
    lateral: list[bool],
    side_joints: list[tuple[float, float] | None],
) -> float:
    config, stride = run.config, run.config.output_stride
    shape = (config.canvas_px // stride, config.canvas_px // stride)
    sigma_cells = config.sigma_mm / config.mm_per_px / stride
    targets = encode_targets(knees, shape, stride, sigma_cells, lateral, side_joints)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=run.amp):
        maps = run.model(inputs.contiguous(memory_format=torch.channels_last))
    loss, _ = localizer_loss(maps, targets, config.handed_weight, config.view_weight)
    run.optimiser.zero_grad(set_to_none=True)
    torch.autograd.backward(loss)
    run.optimiser.step()
    run.schedule.step()
    return loss.item()


def samples_per_epoch(n_films: int, config: LocalizerTrainConfig) -> int:
    """``repeats`` samples per film, and at least one batch (a handful of films still trains)."""
    return max(n_films * config.repeats, config.batch_size)


def _epoch(run: _Run, films: Sequence[WorkFilm], epoch: int) -> float:
    """One pass of ``samples_per_epoch`` augmented samples; the mean loss."""
    config = run.config
    run.model.train()
    samples = samples_per_epoch(len(films), config)
    order = np.random.default_rng([config.seed, epoch]).permutation(samples)
    losses = []
    for step in range(samples // config.batch_size):
        indices = order[step * config.batch_size : (step + 1) * config.batch_size].tolist()
        losses.append(_step(run, *_batch(films, indices, config, epoch, run.norm)))
    return float(np.mean(losses))


def _start(card: LocalizerCard, config: LocalizerTrainConfig, n_films: int) -> _Run:
    torch.manual_seed(config.seed)
    model = build_localizer(card.architecture)
    model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    optimiser = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    total = config.epochs * (samples_per_epoch(n_films, config) // config.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, config.lr, total_steps=total)
    amp = native_bf16() if config.amp is None else config.amp
    return _Run(model, optimiser, schedule, config, card.normalisation, amp)


def train_localizer(
    films: Sequence[LabelledFilm], config: LocalizerTrainConfig, progress: Progress | None = None
) -> TrainedLocalizer:
    """Train a localizer on labelled films; its card holds the validation figures.

    Args:
        films: films with labelled joint centres (``labels.read_film_labels``).
        config: hyper-parameters (stored in the card).
        progress: called after every epoch.

    Raises:
        DatasetError: too few films, an unreadable film, or one without pixel spacing.
    """
    card = LocalizerCard(
        architecture=config.architecture(),
        mm_per_px=config.mm_per_px,
        data_fingerprint=films_fingerprint(films),
        hyperparameters=config.to_dict(),
    )
    train_films, val_films = split_films(films, config.val_share, config.seed)
    work_mm = config.mm_per_px / SCALE_RANGE[1]
    work = [load_work_film(film, work_mm, card.normalisation) for film in train_films]
    held_out = [load_validation_film(film, card) for film in val_films]
    threads = torch.get_num_threads()
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    try:
        run = _start(card, config, len(work))
        history = _train(run, work, held_out, card, progress)
    finally:
        torch.set_num_threads(threads)
    final = replace(card, metrics={VALIDATION: history[-1].validation.to_dict()})
    model = run.model.eval()
    model.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    return TrainedLocalizer(Localizer(model, final), tuple(history))


def _train(
    run: _Run,
    work: Sequence[WorkFilm],
    held_out: Sequence[ValidationFilm],
    card: LocalizerCard,
    progress: Progress | None,
) -> list[EpochLog]:
    history = []
    epochs = run.config.epochs
    for epoch in range(1, epochs + 1):
        started = time.perf_counter()
        loss = _epoch(run, work, epoch)
        metrics = validate(Localizer(run.model, card), held_out)
        entry = EpochLog(epoch, epochs, loss, metrics, time.perf_counter() - started)
        history.append(entry)
        log.info("localizer epoch %d/%d: loss %.4f, %s", epoch, epochs, loss, metrics)
        if progress is not None:
            progress(entry)
    return history
