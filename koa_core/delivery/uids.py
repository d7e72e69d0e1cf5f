"""UIDs of koa's DICOM results, derived from the source film and the model version.

The same film scored by the same model gets the same SR and SC UIDs on every run, so a
PACS that keeps one instance per (0008,0018) SOPInstanceUID (Orthanc does) replaces a
re-sent result instead of holding two. A new model version gives new UIDs: its results
sit beside the old model's, in their own series.
"""

from __future__ import annotations

from pydicom.uid import UID, generate_uid

_NAMESPACE = "koa-delivery"
SR, SC = "SR", "SC"


def _derived(*parts: str) -> UID:
    # generate_uid hashes the sources (SHA-512) under pydicom's root: same parts, same UID.
    return generate_uid(entropy_srcs=[_NAMESPACE, *parts])


def instance_uid(kind: str, source_sop_instance_uid: str, model_version: str) -> UID:
    """(0008,0018) of the ``kind`` (``"SR"`` or ``"SC"``) result for one film."""
    return _derived(kind, "instance", source_sop_instance_uid, model_version)


def series_uid(kind: str, study_instance_uid: str, model_version: str) -> UID:
    """(0020,000E): one SR series and one SC series per study and model version."""
    return _derived(kind, "series", study_instance_uid, model_version)


def tracking_uid(source_sop_instance_uid: str, model_version: str, side: str) -> UID:
    """The TID 1500 tracking UID of one knee's measurement group."""
    return _derived("knee", source_sop_instance_uid, model_version, side)


def device_uid(algorithm_name: str) -> UID:
    """(0040,A171) of koa as the SR's observer device."""
    return _derived("device", algorithm_name)
