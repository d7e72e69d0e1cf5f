"""Tests for the koa train / evaluate / models commands, on real image-folder datasets."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from koa_core.cli.app import app
from koa_core.registry import ModelRegistry
from koa_core.registry.champion import PromotionRecord
from tests.core.kl_fixtures import constant_model, knee_like

runner = CliRunner()
# A tiny network so each training run takes a second or two on a shared CPU.
TINY = [
    "--epochs", "2", "--input-size", "64", "--width", "8", "--depth", "1,1",
    "--batch-size", "8", "--threads", "1", "--device", "cpu", "--seed", "0",
]  # fmt: skip


@pytest.fixture(scope="module")
def phantom_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``koa phantoms --layout kl-folders``: 224 px PNGs plus labels.csv."""
    root = tmp_path_factory.mktemp("phantoms")
    args = ["phantoms", "--out", str(root), "--n", "60", "--format", "png"]
    result = runner.invoke(app, [*args, "--layout", "kl-folders", "--seed", "0"])
    assert result.exit_code == 0, result.output
    return root


@pytest.fixture(scope="module")
def other_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dataset made by other means: RGB-grey JPEG and PNG of another size, plus auto_test/."""
    root = tmp_path_factory.mktemp("other")
    counts = {"train": 4, "val": 2, "test": 2, "auto_test": 1}
    for split, count in counts.items():
        for grade in range(5):
            folder = root / split / str(grade)
            folder.mkdir(parents=True)
            for index in range(count):
                pixels = np.asarray(knee_like(grade, seed=index + 100 * len(split)))
                image = Image.fromarray(pixels).resize((300, 320)).convert("RGB")
                suffix = ".jpg" if index % 2 else ".png"
                image.save(folder / f"knee_{index}{suffix}")
    return root


def invoke(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def train_champion(data: Path) -> str:
    """``koa train --promote`` of a first model (the test asks for ``no_quality_floor``)."""
    output = invoke("train", "--data", str(data), *TINY, "--promote")
    assert "promoted" in output and "not promoted" not in output
    champion = ModelRegistry().champion()
    assert champion is not None
    (line,) = ModelRegistry().promotions()
    # The retrain flow logs the same record (tests/flows/test_retrain.py).
    assert set(line) == set(PromotionRecord.__dataclass_fields__)
    assert (line["challenger"], line["promoted"], line["forced"]) == (champion.version, True, False)
    return champion.version


@pytest.mark.usefixtures("no_quality_floor")
@pytest.mark.parametrize("dataset", ["phantom_data", "other_data"])
def test_train_then_evaluate_champion(dataset: str, request: pytest.FixtureRequest) -> None:
    data: Path = request.getfixturevalue(dataset)
    version = train_champion(data)
    output = invoke("evaluate", "--model", "champion", "--data", str(data))
    assert "Quadratic weighted kappa" in output
    report = Path(output.split("report:")[1].split()[0])
    assert report.is_file() and version in report.parts
    listing = invoke("models", "list")
    assert version in listing and "*" in listing
    card = json.loads(invoke("models", "show", "champion"))
    assert card["version"] == version
    assert card["metrics"]["test"]["n_samples"] > 0


@pytest.mark.usefixtures("no_quality_floor")
def test_worse_challenger_is_refused_then_forced(other_data: Path, tmp_path: Path) -> None:
    champion = train_champion(other_data)
    useless = ModelRegistry().register(constant_model(tmp_path / "useless")).version
    output = invoke("models", "promote", useless, "--data", str(other_data), "--device", "cpu")
    assert "not promoted" in output
    assert ModelRegistry().champion().version == champion  # type: ignore[union-attr]
    forced = runner.invoke(app, ["models", "promote", useless, "--force"])
    assert forced.exit_code == 0 and "warning" in forced.output
    assert ModelRegistry().champion().version == useless  # type: ignore[union-attr]
    refused, overridden = ModelRegistry().promotions()[-2:]
    assert (refused["promoted"], refused["forced"]) == (False, False)
    assert overridden["forced"] and overridden["promoted"]
    assert (overridden["challenger"], overridden["champion"]) == (useless, champion)


def test_a_model_under_the_quality_floor_is_refused_and_only_forced(
    other_data: Path, tmp_path: Path
) -> None:
    useless = ModelRegistry().register(constant_model(tmp_path / "useless")).version
    output = invoke("models", "promote", useless, "--data", str(other_data), "--device", "cpu")
    assert "not promoted" in output and "quality floor" in output
    assert ModelRegistry().champion() is None
    forced = runner.invoke(app, ["models", "promote", useless, "--force"])
    assert forced.exit_code == 0 and "warning" in forced.output
    assert ModelRegistry().champion().version == useless  # type: ignore[union-attr]
    refused, overridden = ModelRegistry().promotions()
    assert (refused["promoted"], refused["below_floor"], refused["champion"]) == (False, True, None)
    assert (overridden["promoted"], overridden["forced"]) == (True, True)


@pytest.mark.usefixtures("no_quality_floor")
def test_validation_split_can_be_evaluated(other_data: Path) -> None:
    train_champion(other_data)
    output = invoke("evaluate", "--model", "latest", "--data", str(other_data), "--split", "val")
    assert "temperature" not in output  # validation fits the temperature; it is not scored with it


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["evaluate", "--model", "champion", "--data", "."], "ModelNotFoundError"),
        (["models", "show", "nope"], "ModelNotFoundError"),
        # Rich would read the id as a closing tag and raise instead of printing it.
        (["models", "show", "[/nope]"], "[/nope]"),
        (["train", "--data", "/no/such/dataset", *TINY], "DatasetError"),
    ],
)
def test_errors_are_one_line_with_exit_code_2(args: list[str], error: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert error in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.usefixtures("no_quality_floor")
def test_corrupt_weights_give_a_clear_error(other_data: Path) -> None:
    version = ModelRegistry().get(train_champion(other_data))
    data = version.weights_path.read_bytes()
    version.weights_path.write_bytes(data[: len(data) // 3])
    result = runner.invoke(app, ["evaluate", "--model", "champion", "--data", str(other_data)])
    assert result.exit_code == 2
    assert "CorruptCheckpointError" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_a_time_budget_picks_the_epochs_of_a_finished_schedule(
    other_data: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    args = ["train", "--data", str(other_data), *TINY[2:], "--out", str(run)]
    output = invoke(*args, "--budget-minutes", "0.2")
    planned = re.search(r"fixed schedule of (\d+) epochs", output)
    assert planned is not None, output
    card = json.loads((run / "card.json").read_text())
    assert len(card["history"]) == card["hyperparameters"]["epochs"] == int(planned.group(1))
    both = runner.invoke(app, [*args, "--epochs", "2", "--budget-minutes", "1"])
    assert both.exit_code != 0 and "not both" in both.output
