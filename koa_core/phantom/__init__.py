"""Synthetic knee radiographs with known Kellgren-Lawrence grades, and files to test on."""

from koa_core.phantom.anatomy import (
    GRADE_PROBABILITIES,
    Acquisition,
    Anatomy,
    KLFeatures,
    KneeImage,
    kl_features,
    reader_label,
    render_knee,
    rng_for,
    sample_grade,
)
from koa_core.phantom.badfiles import BAD_KINDS, EXPECTED_REASONS, BadFileRecord, write_bad_files
from koa_core.phantom.dicom import TRANSFER_SYNTAXES, knee_dataset, save_dicom
from koa_core.phantom.writers import (
    Geometry,
    PhantomRecord,
    assign_splits,
    kl_folder_image,
    model_input_png,
    nightly_image,
    sample_geometry,
    write_kl_folders,
    write_labels,
    write_nightly_batch,
)

__all__ = [
    "BAD_KINDS",
    "EXPECTED_REASONS",
    "GRADE_PROBABILITIES",
    "TRANSFER_SYNTAXES",
    "Acquisition",
    "Anatomy",
    "BadFileRecord",
    "Geometry",
    "KLFeatures",
    "KneeImage",
    "PhantomRecord",
    "assign_splits",
    "kl_features",
    "kl_folder_image",
    "knee_dataset",
    "model_input_png",
    "nightly_image",
    "reader_label",
    "render_knee",
    "rng_for",
    "sample_geometry",
    "sample_grade",
    "save_dicom",
    "write_bad_files",
    "write_kl_folders",
    "write_labels",
    "write_nightly_batch",
]
