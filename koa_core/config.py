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

    # Model input
    input_size: int = Field(default=224, ge=32, le=1024)

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

    # Scheduling: the zone the cron schedules in prefect.yaml run in (`koa serve` deploys them).
    timezone: str = Field(default="UTC", description="IANA time zone, e.g. Europe/Berlin.")

    # `koa serve`: the Prefect server's basic-auth `user:password`, required to bind beyond
    # loopback (passed on as PREFECT_SERVER_API_AUTH_STRING); set it in the environment only.
    server_auth: SecretStr | None = Field(
        default=None, description="user:password for koa serve's Prefect server and UI."
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
