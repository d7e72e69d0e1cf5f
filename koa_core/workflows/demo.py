"""What ``make demo`` needs before the nightly flow can run: a batch, and a champion model."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from pathlib import Path

from koa_core.config import Settings
from koa_core.errors import BelowQualityFloorError
from koa_core.phantom import write_kl_folders, write_nightly_batch
from koa_core.registry import ModelRegistry, ModelVersion, PromotionPolicy
from koa_core.training.config import TrainConfig

DEMO_DICOMS = 40
DEMO_PNGS = 6
DEMO_BAD_FILES = 6
DEMO_TRAINING_IMAGES = 600
# The demo trains koa's default recipe (``TrainConfig()``): the plain network at 128 px,
# cross-entropy, a fixed 12-epoch OneCycle schedule, the last weights. Measured on the demo's
# 420 training images (Xeon with AMX, 2 cores): the old ResNet recipe at 224 px was at chance
# after 8 epochs (validation QWK 0.08) and reached 0.60 after 15; this recipe 0.94 (ordinal
# loss: 0.91). On 2 idle cores it trains in about a minute (see benchmarks/RESULTS.md).
DEMO_TRAINING = TrainConfig(seed=0)

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
    """The synthetic KL image-folder dataset the demo (and ``retrain`` by default) trains on."""
    root = settings.datasets_dir / "kl"
    if not (root / "train").is_dir():
        say(f"writing {DEMO_TRAINING_IMAGES} synthetic training images to {root}")
        write_kl_folders(root, DEMO_TRAINING_IMAGES, seed=7, label_noise=0.05)
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
