"""Where a terminal run's log records go: a file gets INFO and up, the terminal warnings.

Standard library only: Dask worker processes import it while they set up logging.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(processName)s %(name)s: %(message)s"
# koa's loggers, whose INFO records belong in the log file (Prefect's are at INFO already).
KOA_LOGGERS = ("koa_core", "flows", "data_checks")


class QuietDask(logging.Filter):
    """Lets distributed's records through only from ERROR up.

    Its warnings are about the cluster's insides (a worker slow to exit when the cluster
    closes, memory pressure): the log file has them; a person at the terminal needs none.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        dask = record.name == "distributed" or record.name.startswith("distributed.")
        return not dask or record.levelno >= logging.ERROR


class MessageOnly(logging.Formatter):
    """The message alone: the traceback is in the log file."""

    def format(self, record: logging.LogRecord) -> str:
        return record.getMessage()


def logging_config(log_file: Path) -> dict[str, Any]:
    """A ``logging.config.dictConfig``: INFO and up to ``log_file``, warnings to stderr.

    Made of literals only, so it can travel to Dask worker processes as text.
    """
    loggers = {name: {"level": "INFO", "propagate": True} for name in (*KOA_LOGGERS, "distributed")}
    return {
        "version": 1,
        # Prefect's loggers exist already in the CLI; it leaves a root logger that has
        # handlers alone, whichever of the two configures a process first.
        "disable_existing_loggers": False,
        "formatters": {"koa": {"format": LOG_FORMAT}},
        "filters": {"quiet_dask": {"()": "flows.logs.QuietDask"}},
        "handlers": {
            "file": {
                "class": "logging.FileHandler",
                "filename": str(log_file),
                "encoding": "utf-8",
                "formatter": "koa",
                "level": "INFO",
            },
            "terminal": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "koa",
                "filters": ["quiet_dask"],
                "level": "WARNING",
            },
        },
        # distributed's own handlers go: LocalCluster lowers every StreamHandler (a
        # FileHandler is one) on the "distributed" logger to WARNING while it runs.
        "loggers": loggers,
        "root": {"level": "WARNING", "handlers": ["file", "terminal"]},
    }
