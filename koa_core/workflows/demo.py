"""What ``make demo`` needs before the nightly flow can run: a batch, and a champion model."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from pathlib import Path

from koa_core.config import Settings
from koa_core.errors import BelowQualityFloorError
from koa_core.phantom import write_film_kl_folders, write_nightly_batch
from koa_core.registry import ModelRegistry, ModelVersion, PromotionPolicy
from koa_core.training.config import TrainConfig

DEMO_DICOMS = 40
DEMO_PNGS = 6
DEMO_BAD_FILES = 6
DEMO_TRAINING_FILMS = 375
"""About 600 knees: 60 % of the films are bilateral (``FILM_MIX``)."""
DEMO_FILM_SPACING_MM = 0.625
"""Coarse films write fast, and at 140 mm / 224 px the ROI needs no resampling to be saved."""
# Measured on the demo's 420 training images (Xeon with AMX, 2 cores): the default
# ResNet recipe at 224 px is at chance after 8 epochs (validation QWK 0.08) and reaches 0.60
# after 15; the same network at 128 px with cross-entropy 0.86; this plain network at
# 128 px (full resolution in its first stage), cross-entropy, a fixed 12-epoch OneCycle
# schedule, 0.94 (ordinal loss: 0.91). On 2 cores it trains in about a minute.
DEMO_TRAINING = TrainConfig(
    architecture="plain",
    depth=(2, 2, 2, 2),
    width=16,
    input_size=128,
    loss="ce",
    lr=3e-3,
    epochs=12,
    patience=12,
    seed=0,
)

Progress = Callable[[str], None]


def ensure_demo_batch(settings: Settings, batch_date: date, say: Progress) -> Path:
    """A synthetic night (DICOMs, PNGs and a few bad files) unless that night already exists."""
    folder = settings.incoming_dir / batch_date.isoformat()
    if folder.is_dir() and any(folder.iterdir()):
        say(f"using the existing batch {folder}")
        return folder
    say(f"writing a synthetic night of knee radiographs to {folder}")
    write_nightly_batch(
        settings.incoming_dir, DEMO_DICOMS, seed=2026, batch_date=batch_date, bad=DEMO_BAD_FILES
    )
    write_nightly_batch(
        settings.incoming_dir, DEMO_PNGS, seed=2027, batch_date=batch_date, file_format="png"
    )
    return folder


def demo_dataset(settings: Settings, say: Progress) -> Path:
    """The synthetic KL image-folder dataset the demo (and ``retrain`` by default) trains on.

    Knees cut from whole films around their joints, as the nightly scorer cuts them, so the
    grader trains on the images it will score.
    """
    root = settings.datasets_dir / "kl"
    if not (root / "train").is_dir():
        say(f"writing the knees of {DEMO_TRAINING_FILMS} synthetic films to {root}")
        write_film_kl_folders(
            root,
            DEMO_TRAINING_FILMS,
            seed=7,
            label_noise=0.05,
            spacing_mm=DEMO_FILM_SPACING_MM,
        )
    return root


def ensure_champion(settings: Settings, say: Progress) -> ModelVersion:
    """The champion model, training a small one and promoting it by the rule if there is none.

    Raises:
        BelowQualityFloorError: the model trained is under the promotion rule's quality
            floor (``KOA_PROMOTION_MIN_QWK``), so it was registered but is not champion.
    """
    from koa_core.workflows.challenger import promote_challenger, train_challenger

    registry = ModelRegistry(settings.models_dir)
    champion = registry.champion()
    if champion is not None:
        say(f"using champion model {champion.version}")
        return champion
    data = demo_dataset(settings, say)
    say(f"no champion model yet: training one ({DEMO_TRAINING.epochs} epochs, about a minute)")
    challenger = train_challenger(DEMO_TRAINING, data, registry=registry)
    policy = PromotionPolicy.from_settings(settings)
    outcome = promote_challenger(challenger.tested(), data, registry=registry, policy=policy)
    if outcome.record.below_floor:
        raise BelowQualityFloorError(
            f"demo model {challenger.version.version} is not champion: {outcome.record.reason};"
            f" train longer, e.g. koa train --data {data} --epochs 30 --promote"
        )
    qwk = challenger.validation.metrics.qwk
    say(
        f"trained {challenger.version.version}, validation QWK"
        f" {'n/a' if qwk is None else f'{qwk:.3f}'}: {outcome.record.reason}"
    )
    return registry.get("champion")
