"""Great Expectations suites and the runner that splits rows into pass and quarantine.

``data_checks.runner.run_suite(df, name)`` validates a table against one of the JSON suites
in ``suites/`` (GX 1.x suite form: ``{"name", "notes", "expectations": [{"type", "kwargs",
"meta"}]}``) and returns the rows that passed and the quarantined rows with their reason
codes. Conventions the suites rely on:

- Every expectation's ``meta.reason`` is the stable code written into quarantine rows;
  ``meta.settings`` maps a kwarg to the ``koa_core.config.Settings`` field that overrides it;
  ``meta.keep_first_by`` on a uniqueness check keeps the first row in that column's order.
- ``manifest``: rows whose ``read_error`` is set are quarantined with that code before GX.
  DICOM attributes (modality DX/CR, UIDs) must be present on DICOM rows only; PNG/JPEG/TIFF
  rows carry none and are checked on format, dimensions, bit depth and the koa-output
  marker. Body part and view are checked on the manifest's verdict columns
  (``koa_core.io.header_evidence``): only a header naming another body part or a side view
  is refused here; an empty or generic one is left to the localizer.
- koa's own outputs: every DICOM koa writes carries Manufacturer ``koa`` and the value
  ``KOA`` in ImageType (e.g. ``DERIVED\\SECONDARY\\KOA``), so a result dropped back into
  the incoming folder is quarantined as ``koa_output`` instead of being scored again.
- ``model_input`` reads the statistics of ``koa_core.imaging.statistics.input_statistics``;
  ``predictions`` reads ``p_kl0..p_kl4``, ``kl_grade``, ``p_koa`` and ``model_version``.

This package may import koa_core, never prefect; GX itself is imported lazily.
"""
