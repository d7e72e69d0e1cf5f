"""The one settings object: every default koa uses lives here (env prefix ``KOA_``)."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """koa's configuration; each field can be set as ``KOA_<NAME>`` in the environment.

    Every path koa writes lives under ``home`` (``KOA_HOME``, default ``./var``), so one
    directory holds a site's models, results, runs and scratch space.
    """

    model_config = SettingsConfigDict(env_prefix="KOA_", extra="ignore")

    home: Path = Field(default=Path("var"), description="Data root; every path below lives here.")

    # The input side the retrain flow trains at when its run does not say (TrainConfig's).
    input_size: int = Field(default=128, ge=32, le=1024)

    # Whole films: each knee the localizer finds is graded on a square of ``roi_mm`` around its
    # joint (140 mm: DeepKnee's field, the whole joint with its margins and little else).
    roi_mm: float = Field(default=140.0, gt=20.0, le=300.0, description="Knee ROI side (mm).")
    min_knee_score: float = Field(
        default=0.5, ge=0.0, le=1.0, description="Least localizer score that counts as a knee."
    )
    lateral_view_score: float = Field(
        default=0.5,
        gt=0.0,
        le=1.0,
        description="Localizer's lateral-view probability from which a film is not frontal.",
    )
    max_roi_off_film: float = Field(
        default=0.15, ge=0.0, le=1.0, description="Largest share of a knee's ROI off the film."
    )
    refer_below_localizer_score: float = Field(
        default=0.8,
        ge=0.0,
        le=1.0,
        description="Knees the localizer scored under this are graded but referred to a reader.",
    )
    laterality_confidence: float = Field(
        default=0.8,
        gt=0.5,
        le=1.0,
        description="Anatomy's side probability that overrules (or stands in for) the header.",
    )
    # A raster carries no pixel spacing unless it says so (koa's PNG text chunk): its longer
    # side is then taken to span this field, the middle of the common 24-43 cm detectors.
    raster_field_mm: float = Field(default=360.0, gt=50.0, le=1000.0)
    knee_text_pattern: str = Field(
        default=(
            r"(?i)\b(knees?|genou[sx]?|knie[n]?|rodillas?|ginocchi[oa]|joelhos?|kn[äæ]"
            r"|kolan[oa])\b"
        ),
        description="Regex on Study/Series description and Protocol name that says knee.",
    )
    lateral_text_pattern: str = Field(
        default=(
            r"(?i)\b(lat|lateral|ll|ml|lm|profil|profile|seitlich|skyline|merchant|sunrise"
            r"|axial)\b"
        ),
        description="Regex on the descriptions that says the view is not frontal.",
    )
    frontal_text_pattern: str = Field(
        default=(
            r"(?i)\b(pa|ap|frontal|face|standing|stehend|weight[- ]?bearing|bilat\w*"
            r"|rosenberg|schuss)\b"
        ),
        description="Regex on the descriptions that says the view is frontal.",
    )

    # Accepted input geometry; outside these a file is quarantined, never allocated.
    min_image_px: int = 256
    max_image_px: int = 8192
    max_file_bytes: int = 512 * 1024 * 1024

    # Nightly run
    chunk_size: int = Field(default=64, ge=1, description="Images per Dask task.")
    max_quarantine_share: float = Field(default=0.5, ge=0.0, le=1.0)
    # Test-time augmentation (5 views: shifts and zooms, never a flip) costs 5x the scoring
    # time; see benchmarks/RESULTS.md for what it buys on phantoms.
    scoring_tta: bool = Field(default=False, description="Average 5 shifted/zoomed views.")
    dask_address: str | None = Field(
        default=None, description="Existing scheduler; else LocalCluster."
    )
    dask_workers: int = Field(default=2, ge=1)
    dask_threads_per_worker: int = Field(default=1, ge=1)
    gpu_resource: bool = Field(default=False, description="Route scoring to workers with GPU=1.")
    keep_staged_files: bool = False
    dicomweb_url: str | None = None

    # Patient data: ids are keyed-hashed with the site secret unless raw ids are enabled. With
    # neither secret setting, koa creates one under ``secrets_dir`` on first use (there is no
    # default key: a public one would make every pseudonym reversible by a dictionary).
    site_secret: SecretStr | None = None
    site_secret_file: Path | None = Field(
        default=None, description="File holding the site secret (instead of KOA_SITE_SECRET)."
    )
    emit_raw_patient_ids: bool = False
    path_identifier_pattern: str | None = Field(
        default=None,
        description="Regex; source_path components it matches are pseudonymised (re.search).",
    )

    # Training / promotion
    promotion_min_qwk_gain: float = 0.005
    promotion_max_auc_loss: float = 0.005
    # The quality floor: below this test QWK the rule never makes a model champion (only a
    # forced promotion can). 0.6 is where agreement turns "substantial" (Landis & Koch) and
    # sits at the low end of the QWK two radiologists reach on KL grades; a grader that agrees
    # less with the labels than a second reader would must not serve, however it compares with
    # the champion (the first model has no champion to beat at all).
    promotion_min_qwk: float = Field(
        default=0.6, ge=-1.0, le=1.0, description="Least test QWK a model needs to be champion."
    )
    seed: int = 0

    # Knee localizer promotion: its validation films' joint-centre errors and handedness.
    localizer_max_median_error_mm: float = Field(default=3.0, gt=0.0)
    localizer_max_p99_error_mm: float = Field(default=10.0, gt=0.0)
    localizer_min_handedness_accuracy: float = Field(default=1.0, ge=0.0, le=1.0)

    # Scheduling: the zone the cron schedules in prefect.yaml run in (`koa serve` deploys them).
    timezone: str = Field(default="UTC", description="IANA time zone, e.g. Europe/Berlin.")

    # `koa serve`: the Prefect server's basic-auth `user:password`, required to bind beyond
    # loopback (passed on as PREFECT_SERVER_API_AUTH_STRING); set it in the environment only.
    server_auth: SecretStr | None = Field(
        default=None, description="user:password for koa serve's Prefect server and UI."
    )

    # DICOM results (SR + Secondary Capture per film) go back to the PACS: a DICOMweb URL
    # (STOW-RS; basic auth as ``https://user:password@host/...``) or an outbox folder.
    deliver_to: str | None = Field(
        default=None, description="DICOMweb URL or folder for SR/SC results; None: not sent."
    )
    deliver_retries: int = Field(default=3, ge=0, description="Retries of a transient failure.")
    deliver_backoff_s: float = Field(
        default=1.0, ge=0.0, description="First retry delay; doubles on each retry."
    )
    deliver_concurrency: int = Field(
        default=4, ge=1, description="Instances sent at once (STOW-RS requests, outbox writes)."
    )
    deliver_lossless_overlay: bool = Field(
        default=False,
        description="Send the overlay Secondary Capture uncompressed (~20x bigger) "
        "instead of JPEG baseline, quality 95.",
    )

    @field_validator("path_identifier_pattern")
    @classmethod
    def _compiles(cls, pattern: str | None) -> str | None:
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as error:
                raise ValueError(f"not a regular expression: {error}") from error
        return pattern

    @property
    def incoming_dir(self) -> Path:
        return self.home / "incoming"

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def localizers_dir(self) -> Path:
        return self.models_dir / "localizers"

    @property
    def results_dir(self) -> Path:
        return self.home / "results"

    @property
    def runs_dir(self) -> Path:
        return self.home / "runs"

    @property
    def datasets_dir(self) -> Path:
        return self.home / "datasets"

    @property
    def secrets_dir(self) -> Path:
        return self.home / "secrets"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings read once from the environment (tests call ``get_settings.cache_clear()``)."""
    return Settings()
