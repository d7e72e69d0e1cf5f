"""What ``make demo`` needs before the nightly flow can run: a night of films, and champions.

The night is whole films, as clinics take them: standing bilateral PA films and one-knee
films with the joint anywhere, a couple of side views, and broken or hostile files. The
grader trains on knee ROIs (a KL image-folder set, the public datasets' layout) and the
localizer on labelled synthetic films; each is promoted by its rule.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from pathlib import Path

from koa_core.config import Settings
from koa_core.errors import BelowQualityFloorError
from koa_core.localize.train_config import LocalizerTrainConfig
from koa_core.phantom import (
    film_file,
    write_bad_files,
    write_film_kl_folders,
    write_films,
    write_nightly_films,
)
from koa_core.registry import LocalizerRegistry, ModelRegistry, ModelVersion, PromotionPolicy
from koa_core.training.config import TrainConfig

DEMO_FILMS = 40
DEMO_LATERAL_FILMS = 2
DEMO_BAD_FILES = 6
DEMO_TRAINING_FILMS = 375
"""About 600 knees: 60 % of the films are bilateral (``FILM_MIX``)."""
DEMO_FILM_SPACING_MM = 0.625
"""Coarse films write fast, and at 140 mm / 224 px the ROI needs no resampling to be saved."""
DEMO_LOCALIZER_FILMS = 250
# About a fifth of them lateral views, with their joints: no knee to grade on them, and the
# view head learns to name them (36-40 of 40 held-out side views, no frontal film; see
# benchmarks/RESULTS.md). Trained on 200 frontal films only, the localizer found a knee
# (score >= 0.5) on 9 of 40 lateral films, which a night without ViewPosition or
# descriptions would have graded as frontal.
DEMO_LOCALIZER_LATERAL_SHARE = 0.25
# Films for the localizer at 0.6 mm: it works at 3 mm/px, so finer pixels add decode time only.
DEMO_LOCALIZER_SPACING_MM = 0.6
# The demo trains the plain network at 128 px with cross-entropy on a fixed 12-epoch
# OneCycle schedule, about a minute on 2 idle cores, and keeps dropout 0.2 where the default
# recipe (16 epochs, no dropout) has none: trained without it on the demo's knees, the
# grader graded the KL4 knee of a test night's bilateral film as KL0 (the film-night flow
# test); with it every knee is within a grade. The old ResNet recipe at 224 px was at
# chance after 8 epochs (validation QWK 0.08) on the same images.
DEMO_TRAINING = TrainConfig(seed=0, epochs=12, drop_rate=0.2)

DEMO_LOCALIZER = LocalizerTrainConfig(seed=0)

Progress = Callable[[str], None]


def ensure_demo_batch(settings: Settings, batch_date: date, say: Progress) -> Path:
    """A synthetic night (whole films, side views, bad files) unless that night exists."""
    folder = settings.incoming_dir / batch_date.isoformat()
    if folder.is_dir() and any(folder.iterdir()):
        say(f"using the existing batch {folder}")
        return folder
    say(f"writing a synthetic night of knee films to {folder}")
    write_nightly_films(settings.incoming_dir, DEMO_FILMS, seed=2026, batch_date=batch_date)
    for index in range(DEMO_LATERAL_FILMS):
        key = (2027, index, batch_date.isoformat(), "lateral")
        film_file(folder, 2027, index, "lateral", key, batch_date)
    write_bad_files(folder / "bad", DEMO_BAD_FILES, seed=2026)
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


def write_localizer_films(out: Path) -> None:
    """The demo localizer's training films and their labels table, under ``out``."""
    write_films(
        out,
        DEMO_LOCALIZER_FILMS,
        "mixed",
        seed=11,
        spacing_mm=DEMO_LOCALIZER_SPACING_MM,
        lateral_share=DEMO_LOCALIZER_LATERAL_SHARE,
    )


def ensure_localizer(settings: Settings, say: Progress) -> ModelVersion:
    """The champion localizer, training one on synthetic films if there is none.

    Raises:
        BelowQualityFloorError: the localizer trained misses the localizer rule.
    """
    from koa_core.workflows.localizer import train_and_register_localizer

    registry = LocalizerRegistry(settings.localizers_dir)
    champion = registry.champion()
    if champion is not None:
        say(f"using champion localizer {champion.version}")
        return champion
    films = settings.datasets_dir / "films"
    if not (films / "labels.csv").is_file():
        say(f"writing {DEMO_LOCALIZER_FILMS} synthetic films with labelled joints to {films}")
        write_localizer_films(films)
    say("no champion localizer yet: training one (about a minute)")
    outcome = train_and_register_localizer(films, DEMO_LOCALIZER, promote=True, registry=registry)
    record = outcome.promotion
    if record is None or not record.promoted:
        reason = record.reason if record else "not promoted"
        raise BelowQualityFloorError(
            f"demo localizer {outcome.version.version} is not champion: {reason};"
            f" train longer, e.g. koa train-localizer --data {films} --epochs 60 --promote"
        )
    validation = outcome.trained.validation
    say(
        f"trained localizer {outcome.version.version}: median joint error"
        f" {validation['median_error_mm']:.1f} mm on its validation films"
    )
    return outcome.version


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
