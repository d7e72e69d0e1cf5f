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
from koa_core.model.network import (
    build_model,
    count_macs,
    kl_probabilities,
    reader_log_mixing,
    reader_noise_logits,
)
from koa_core.schema import adjacent_mixing

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


NOISY = ModelCard(
    input_size=64, architecture=Architecture(depth=(1, 1), width=8, drop_rate=0.0, reader_noise=0.1)
)


def test_reader_noise_layer_outputs_the_mixed_probabilities() -> None:
    torch.manual_seed(0)
    model = build_model(NOISY).eval()
    images = torch.rand(6, 1, 64, 64)
    with torch.no_grad():
        head = torch.softmax(model.fc(model.forward_features(images)), dim=1)
        recorded = model(images).exp()
    mixing = torch.as_tensor(adjacent_mixing(0.1), dtype=torch.float32)
    assert torch.allclose(recorded.sum(dim=1), torch.ones(6), atol=1e-6)
    assert torch.allclose(recorded, head @ mixing, atol=1e-6)


def test_reader_noise_caps_the_confidence_of_a_certain_head() -> None:
    log_mixing = reader_log_mixing(0.1)
    certain = torch.tensor([[60.0, 0, 0, 0, -60.0], [0, 0, 50.0, 0, 0]])
    recorded = reader_noise_logits(certain, log_mixing).exp()
    assert recorded[0].tolist() == pytest.approx([0.9, 0.1, 0, 0, 0], abs=1e-6)
    assert recorded[1].tolist() == pytest.approx([0, 0.05, 0.9, 0.05, 0], abs=1e-6)
    assert torch.isfinite(reader_noise_logits(certain, log_mixing)).all()


def test_reader_noise_keeps_gradients_finite_for_ruled_out_grades() -> None:
    logits = torch.tensor([[80.0, 0, 0, 0, -80.0]], requires_grad=True)
    loss = F.cross_entropy(reader_noise_logits(logits, reader_log_mixing(0.1)), torch.tensor([4]))
    torch.autograd.backward(loss)
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    assert torch.isfinite(loss)


def test_weights_saved_without_the_layer_load_into_a_card_that_has_none(tmp_path: Path) -> None:
    card_dict = TINY.to_dict()
    del card_dict["architecture"]["reader_noise"]  # a card written before the layer existed
    old_card = ModelCard.from_dict(card_dict)
    assert old_card.architecture.reader_noise == 0.0
    model = build_model(old_card).eval()
    assert model.reader_log_mixing is None
    save_torch(model.state_dict(), tmp_path / "weights.pt")
    assert "reader_log_mixing" not in model.state_dict()
    noisy = load_model(tmp_path / "weights.pt", NOISY)
    images = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        assert torch.allclose(
            noisy(images).exp(), torch.softmax(model(images), 1) @ noisy.reader_log_mixing.exp()
        )


@pytest.mark.parametrize("share", [-0.1, 0.5])
def test_a_reader_noise_share_out_of_range_is_refused(share: float) -> None:
    card = ModelCard(input_size=64, architecture=Architecture(depth=(1, 1), reader_noise=share))
    with pytest.raises(ValueError, match="reader_noise"):
        build_model(card)
