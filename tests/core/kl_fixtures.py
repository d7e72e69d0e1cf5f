"""Small labelled knee-like datasets on disk, and a useless model, for the model tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import torch
from PIL import Image
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from koa_core.model.checkpoint import save_torch
from koa_core.model.network import build_model
from koa_core.training.config import TrainConfig

# A network small enough to train in seconds on 64 px knees; one thread, because tiny
# tensors gain nothing from a second one and it would only contend with other tests.
TINY_CONFIG = TrainConfig(
    epochs=4,
    batch_size=8,
    lr=3e-3,
    patience=100,
    input_size=64,
    depth=(1, 1),
    width=8,
    device="cpu",
    threads=1,
)

# The real reader rejects images under Settings.min_image_px (256): stay above it.
HEIGHT, WIDTH = 272, 256


def knee_like(grade: int, seed: int) -> np.ndarray:
    """A uint8 image whose dark 'joint space' band narrows as the KL grade rises."""
    rng = np.random.default_rng(seed * 7 + grade)
    image = rng.normal(150, 12, size=(HEIGHT, WIDTH))
    gap = 40 - 8 * grade
    top = HEIGHT // 2 - gap // 2
    image[top : top + gap, 40:-40] = 50
    image[: HEIGHT // 8] = 20
    return np.clip(image, 0, 255).astype(np.uint8)


def write_image_folder(
    root: Path,
    per_class: dict[str, int] | None = None,
    suffix: str = ".png",
    rgb: bool = False,
) -> Path:
    """``root/<split>/<grade>/<n>.<suffix>`` with ``per_class[split]`` images per grade."""
    for split, count in (per_class or {"train": 3, "val": 2}).items():
        for grade in range(5):
            folder = root / split / str(grade)
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(count):
                pixels = knee_like(grade, seed=hash((split, index)) % 10_000)
                image = Image.fromarray(pixels).convert("RGB" if rgb else "L")
                image.save(folder / f"{split}_{grade}_{index}{suffix}")
    return root


def write_dicom(path: Path, pixels: np.ndarray, patient_id: str) -> str:
    """A minimal 16-bit MONOCHROME2 secondary-capture DICOM; returns its SOPInstanceUID."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientID, ds.Modality, ds.BodyPartExamined = patient_id, "DX", "KNEE"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = (pixels.astype(np.uint16) * 16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return str(ds.SOPInstanceUID)


def constant_model(directory: Path, grade: int = 0) -> Path:
    """Weights that always answer ``grade``: a deliberately useless challenger."""
    card = TINY_CONFIG.card()
    model = build_model(card)
    with torch.no_grad():
        model.fc.weight.zero_()
        model.fc.bias.copy_(torch.nn.functional.one_hot(torch.tensor(grade), 5) * 10.0)
    save_torch(model.state_dict(), directory / "weights.pt")
    (directory / "card.json").write_text(json.dumps({"card": card.to_dict()}))
    return directory
