"""Tests for the network and inference: shapes, P(KOA), loading, fast inference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from koa_core.errors import CorruptCheckpointError
from koa_core.model.card import Architecture, ModelCard
from koa_core.model.checkpoint import load_model, save_torch, sidecar_path
from koa_core.model.inference import predict_dataset
from koa_core.model.network import build_model, count_macs, kl_probabilities

TINY = ModelCard(input_size=64, architecture=Architecture(depth=(1, 1), width=8, drop_rate=0.0))


@pytest.mark.parametrize("depth,width", [((1, 1), 8), ((2, 1, 1), 4), ((1, 1, 1, 1), 8)])
def test_feature_and_head_shapes(depth: tuple[int, ...], width: int) -> None:
    card = ModelCard(input_size=64, architecture=Architecture(depth=depth, width=width))
    model = build_model(card).eval()
    features = model.forward_features(torch.rand(3, 1, 64, 64))
    assert features.shape == (3, width * 2 ** (len(depth) - 1))
    logits = model.forward_head(features)
    assert logits.shape == (3, 5)
    assert torch.allclose(model(torch.zeros(2, 1, 64, 64))[0], model(torch.zeros(1, 1, 64, 64))[0])


def test_count_macs_grows_with_input_area() -> None:
    model = build_model(TINY)
    small, large = count_macs(model, 64), count_macs(model, 128)
    assert small > 0
    assert 3.5 < large / small < 4.5


def test_card_round_trips_through_a_dict() -> None:
    assert ModelCard.from_dict(TINY.to_dict()) == TINY


def test_model_overfits_a_tiny_batch() -> None:
    torch.manual_seed(0)
    images = torch.rand(10, 1, 64, 64)
    labels = torch.arange(10) % 5
    model = build_model(TINY)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        optimizer.zero_grad()
        torch.autograd.backward(F.cross_entropy(model(images), labels))
        optimizer.step()
    model.train()  # batch statistics: the noise images have no shared structure to pool
    with torch.no_grad():
        assert (model(images).argmax(1) == labels).all()


def test_load_model_round_trip(tmp_path: Path) -> None:
    model = build_model(TINY).eval()
    save_torch(model.state_dict(), tmp_path / "weights.pt")
    loaded = load_model(tmp_path / "weights.pt", TINY, "cpu")
    images = torch.rand(4, 1, 64, 64)
    assert not loaded.training
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name
    with torch.no_grad():  # channels_last reorders the sums: equal up to rounding
        torch.testing.assert_close(model(images), loaded(images))


@pytest.mark.parametrize("damage", ["truncate", "garbage", "no_sidecar_truncate"])
def test_corrupt_weights_are_refused(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "weights.pt"
    save_torch(build_model(TINY).state_dict(), path)
    data = path.read_bytes()
    if damage == "no_sidecar_truncate":
        sidecar_path(path).unlink()
    path.write_bytes(b"not a torch file" if damage == "garbage" else data[: len(data) // 2])
    with pytest.raises(CorruptCheckpointError, match=r"weights\.pt"):
        load_model(path, TINY)


def test_weights_of_another_architecture_are_refused(tmp_path: Path) -> None:
    other = ModelCard(input_size=64, architecture=Architecture(depth=(1, 1), width=16))
    save_torch(build_model(other).state_dict(), tmp_path / "weights.pt")
    with pytest.raises(CorruptCheckpointError, match="do not match"):
        load_model(tmp_path / "weights.pt", TINY)


def test_fast_inference_agrees_with_fp32(capsys: pytest.CaptureFixture[str]) -> None:
    torch.manual_seed(1)
    model = build_model(TINY)
    images = (torch.rand(200, 64, 64) * 255).to(torch.uint8)
    reference = predict_dataset(model, TINY, images, batch_size=64, device="cpu", fast=False)
    fast = predict_dataset(model, TINY, images, batch_size=64, device="cpu", fast=True)
    assert reference.dtype == fast.dtype == np.float32
    assert reference.shape == (200, 5)
    agreement = (reference.argmax(1) == fast.argmax(1)).mean()
    diff = float(np.abs(reference - fast).max())
    with capsys.disabled():
        print(
            f"\nfast vs fp32 inference: grade agreement {agreement:.3f}, max prob diff {diff:.2e}"
        )
    assert agreement >= 0.995
    float_images = images.float() / 255.0
    same = predict_dataset(model, TINY, float_images, batch_size=64, device="cpu", fast=False)
    np.testing.assert_allclose(same, reference, atol=1e-6)


def test_bf16_autocast_agrees_with_fp32(capsys: pytest.CaptureFixture[str]) -> None:
    """bf16 (emulated, slow, where the CPU lacks it) must still give the same grades."""
    torch.manual_seed(2)
    model = build_model(TINY).eval()
    images = torch.rand(200, 1, 64, 64)
    with torch.no_grad():
        reference = kl_probabilities(model(images))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = kl_probabilities(model(images))
    agreement = float((reference.argmax(1) == low.argmax(1)).float().mean())
    diff = float((reference - low).abs().max())
    with capsys.disabled():
        print(f"\nbf16 vs fp32: grade agreement {agreement:.3f}, max prob diff {diff:.2e}")
    assert agreement >= 0.995
    assert diff < 0.05


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_inference_matches_cpu() -> None:
    model = build_model(TINY)
    images = (torch.rand(64, 64, 64) * 255).to(torch.uint8)
    cpu = predict_dataset(model, TINY, images, device="cpu", fast=False)
    cuda = predict_dataset(model, TINY, images, device="cuda", fast=True)
    assert (cpu.argmax(1) == cuda.argmax(1)).mean() >= 0.95
    assert np.abs(cpu - cuda).max() < 0.05
