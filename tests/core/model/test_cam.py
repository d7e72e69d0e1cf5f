"""Tests for class-activation maps: Grad-CAM's map without a backward pass, on the osteophyte."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from koa_core.errors import CamError
from koa_core.imaging.transforms import preprocess
from koa_core.model.cam import class_activation_maps, predict_with_heatmaps
from koa_core.model.card import Architecture, ModelCard
from koa_core.model.fastpath import optimise_for_inference
from koa_core.model.inference import predict_dataset, to_model_input
from koa_core.model.network import PooledGrader, build_model
from koa_core.phantom.anatomy import KLFeatures, render_knee

INPUT = 96
CPU = torch.device("cpu")
# A lone osteophyte is a KL2 sign; the grader learns KL0 (none) against KL2 (one spur).
SPUR_GRADE = 2
MEDIAL_TIBIA, LATERAL_TIBIA = 0, 1  # indices into KLFeatures.osteophyte_mm
FIELD_PX, SPACING_MM = 200, 0.75  # the preprocessing's 150 mm field, rendered small


def phantom(seed: int, laterality: str, spur_at: int | None, length_mm: float = 9.0) -> np.ndarray:
    """A healthy knee whose only KL sign (if ``spur_at`` is given) is one tibial osteophyte."""
    rng = np.random.default_rng(seed)
    spurs = [0.0, 0.0, 0.0, 0.0]
    if spur_at is not None:
        spurs[spur_at] = length_mm
    features = KLFeatures(
        severity=0.0,
        jsw_medial_mm=float(rng.uniform(5.0, 6.2)),
        jsw_lateral_mm=float(rng.uniform(6.0, 7.2)),
        osteophyte_mm=(spurs[0], spurs[1], spurs[2], spurs[3]),
        sclerosis=0.0,
        varus_deg=0.0,
    )
    knee = render_knee(
        0,
        laterality,
        seed,
        rows=FIELD_PX,
        columns=FIELD_PX,
        spacing_mm=SPACING_MM,
        marker=False,
        features=features,
    )
    # The model input path: mirrored to a right knee, cropped, resized, windowed.
    return preprocess(knee.bone_bright(), laterality, INPUT, SPACING_MM).pixels


def batch(pixels: list[np.ndarray], card: ModelCard) -> torch.Tensor:
    return to_model_input(torch.from_numpy(np.stack(pixels)), card, CPU)


# Two stages, a 12 x 12 map at 96 px (8 px a cell): with three (6 x 6, 16 px a cell) the
# lateral spur, ~20 px in, peaked one cell inwards, in the middle third, on some CPUs.
CARD = ModelCard(input_size=INPUT, architecture=Architecture("resnet", (1, 1), 16, 0.0))
EPOCHS = 50


@pytest.fixture(scope="module")
def spur_model() -> Iterator[PooledGrader]:
    """A grader trained in ~10 s to tell a knee with one tibial spur from the same knee without.

    Pairs of one knee with and without a spur (medial or lateral, 9-15 mm) leave the spur
    as the only thing to learn. One thread: tiny tensors gain nothing from a second.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    images, labels = [], []
    for seed in range(96):
        length = float(np.random.default_rng(seed).uniform(9.0, 15.0))
        side, spur_at = "RL"[seed % 2], (MEDIAL_TIBIA, LATERAL_TIBIA)[seed // 2 % 2]
        images += [phantom(seed, side, None), phantom(seed, side, spur_at, length)]
        labels += [0, SPUR_GRADE]
    x, y = batch(images, CARD), torch.tensor(labels)
    torch.manual_seed(0)
    model = build_model(CARD)
    optimizer = torch.optim.AdamW(model.parameters(), lr=4e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, EPOCHS)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(EPOCHS):
        for index in torch.randperm(len(y), generator=generator).split(16):
            loss = F.cross_entropy(model(x[index]), y[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        schedule.step()
    yield model.eval()
    torch.set_num_threads(threads)


def grad_cam(model: PooledGrader, images: torch.Tensor, grades: torch.Tensor) -> torch.Tensor:
    """Grad-CAM on the last feature maps (``model.stages``' output), upsampled like CAM."""
    captured: list[torch.Tensor] = []

    def keep(_module: torch.nn.Module, _inputs: object, output: torch.Tensor) -> None:
        output.retain_grad()
        captured.append(output)

    model.eval()
    handle = model.stages.register_forward_hook(keep)
    try:
        logits = model(images.clone().requires_grad_(True))
    finally:
        handle.remove()
    logits.gather(1, grades[:, None]).sum().backward()
    maps = captured[0]
    assert maps.grad is not None
    alpha = maps.grad.mean(dim=(2, 3), keepdim=True)
    cam = torch.relu((alpha * maps).sum(dim=1, keepdim=True))
    return F.interpolate(cam, size=images.shape[2:], mode="bilinear", align_corners=False)[:, 0]


def _randomised(architecture: str) -> Iterator[PooledGrader]:
    torch.manual_seed(1)
    card = ModelCard(input_size=64, architecture=Architecture(architecture, (1, 1, 1), 8, 0.3))
    model = build_model(card)
    for module in model.modules():
        # Non-trivial BN statistics and scales, so the maps are not a fresh network's.
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)
            torch.nn.init.uniform_(module.weight, 0.5, 1.5)
    yield model


@pytest.mark.parametrize("architecture", ["resnet", "plain"])
def test_cam_is_grad_cam_on_the_same_layer_up_to_scale(architecture: str) -> None:
    model = next(_randomised(architecture))
    images = torch.randn(8, 1, 64, 64, generator=torch.Generator().manual_seed(2))
    grades = torch.tensor([0, 1, 2, 3, 4, 0, 2, 4])
    cam = class_activation_maps(model, images, grades)
    reference = grad_cam(model, images, grades).detach().numpy()
    assert cam.shape == (8, 64, 64) and cam.dtype == np.float32
    assert cam.min() >= 0.0 and cam.max() == 1.0
    explained = 0
    for ours, theirs in zip(cam, reference, strict=True):
        if theirs.max() == 0:  # no positive evidence for that grade anywhere
            assert ours.max() == 0
            continue
        explained += 1
        assert ours.max() == pytest.approx(1.0)
        assert np.corrcoef(ours.ravel(), theirs.ravel())[0, 1] > 0.99
    assert explained >= 4
    assert model.training is False


def test_the_trained_grader_is_explained_like_grad_cam(spur_model: PooledGrader) -> None:
    images = batch([phantom(500, "R", MEDIAL_TIBIA), phantom(501, "L", None)], CARD)
    grades = torch.tensor([SPUR_GRADE, 0])
    cam = class_activation_maps(spur_model, images, grades)
    reference = grad_cam(spur_model, images, grades).detach().numpy()
    for ours, theirs in zip(cam, reference, strict=True):
        assert np.corrcoef(ours.ravel(), theirs.ravel())[0, 1] > 0.99


@pytest.mark.parametrize("laterality", ["R", "L"])
@pytest.mark.parametrize(
    ("spur_at", "third"),
    [(MEDIAL_TIBIA, 2), (LATERAL_TIBIA, 0)],
    ids=["medial", "lateral"],
)
def test_the_heatmap_peaks_in_the_third_that_holds_the_osteophyte(
    spur_model: PooledGrader, laterality: str, spur_at: int, third: int
) -> None:
    seeds = range(900, 908)  # knees the model never saw, each with one 12 mm spur
    images = batch([phantom(seed, laterality, spur_at, 12.0) for seed in seeds], CARD)
    with torch.inference_mode():
        predicted = spur_model(images).argmax(dim=1)
    seen = predicted == SPUR_GRADE
    # The model does see osteophytes (a lateral spur beside the fibula now and then not):
    # trained from 12 other seeds, it saw 4-8 of the 8 and every peak was in the right third.
    assert int(seen.sum()) >= 4, predicted.tolist()
    cam = class_activation_maps(spur_model, images[seen], predicted[seen])
    # In the model's (right-knee) orientation medial is on the right: columns' last third.
    for heatmap in cam:
        _, column = np.unravel_index(int(heatmap.argmax()), heatmap.shape)
        assert column * 3 // INPUT == third, (laterality, column)


def test_without_a_spur_the_grader_says_kl0(spur_model: PooledGrader) -> None:
    images = batch([phantom(seed, "RL"[seed % 2], None) for seed in range(900, 908)], CARD)
    with torch.inference_mode():
        assert int((spur_model(images).argmax(dim=1) == 0).sum()) >= 7


@pytest.mark.parametrize(
    ("images", "grades"),
    [
        (torch.zeros(2, 64, 64), [0, 1]),
        (torch.zeros(2, 1, 64, 64), [0]),
        (torch.zeros(1, 1, 64, 64), [5]),
    ],
    ids=["no-channel", "grade-count", "grade-range"],
)
def test_bad_inputs_are_cam_errors(images: torch.Tensor, grades: list[int]) -> None:
    with pytest.raises(CamError):
        class_activation_maps(next(_randomised("plain")), images, grades)


def test_a_model_without_a_pooled_head_is_refused() -> None:
    with pytest.raises(CamError, match="PooledGrader"):
        class_activation_maps(torch.nn.Conv2d(1, 5, 3), torch.zeros(1, 1, 8, 8), [0])  # type: ignore[arg-type]


@pytest.mark.parametrize("path", ["eager", "fused"])
def test_one_pass_scoring_gives_the_grades_and_maps_of_two(path: str) -> None:
    model = next(_randomised("plain"))
    card = ModelCard(input_size=64, architecture=Architecture("plain", (1, 1, 1), 8, 0.3))
    # A generator of its own: a shared one's draws depend on which tests ran before, and
    # some draws leave the features too alike for the head to grade the ten apart.
    noise = torch.randint(0, 120, (10, 64, 64), generator=torch.Generator().manual_seed(7))
    images = (noise + torch.arange(10).view(10, 1, 1) * 15).to(torch.uint8)  # ten exposures
    with torch.no_grad():  # a head that grades image i as i % 5 (a random one grades alike)
        features = model.eval().forward_features(to_model_input(images, card, CPU))
        design = torch.cat([features, torch.ones(10, 1)], dim=1)
        targets = F.one_hot(torch.arange(10) % 5, 5).float() * 10.0
        solution = torch.linalg.lstsq(design, targets).solution
        model.fc.weight.copy_(solution[:-1].T)
        model.fc.bias.copy_(solution[-1])
    forward = optimise_for_inference(model, card, "cpu", path)  # type: ignore[arg-type]
    probabilities, heatmaps = predict_with_heatmaps(forward, card, images, batch_size=4)
    expected = predict_dataset(model, card, images, 4, "cpu", fast=False)
    np.testing.assert_allclose(probabilities, expected, atol=1e-4)
    grades = expected.argmax(axis=1)
    assert len(set(grades.tolist())) > 1, "one grade for every image would hide a mix-up"
    two_pass = class_activation_maps(model, to_model_input(images, card, CPU), grades.tolist())
    assert heatmaps.shape == (10, 64, 64) and heatmaps.dtype == np.float32
    np.testing.assert_allclose(heatmaps, two_pass, atol=1e-3)
