"""The retrain flow end to end: train, test the challenger once, compare, apply the rule."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

from koa_core.config import get_settings
from koa_core.registry import ModelRegistry
from koa_core.registry.champion import PromotionRecord
from koa_core.storage.evaluations import evaluations_schema, read_evaluations
from tests.core.kl_fixtures import write_image_folder

pytestmark = pytest.mark.usefixtures("prefect_api")
# Small enough to train in seconds on two shared cores, big enough to learn the joint band.
TINY = {"input_size": 64, "width": 8, "depth": [1, 1], "batch_size": 8, "epochs": 20}
PER_SPLIT = {"train": 8, "val": 4, "test": 6}


@pytest.fixture
def datasets(tmp_path: Path) -> tuple[Path, Path]:
    """A learnable dataset, and a copy whose training grades are reversed (4 - grade).

    Both share the val and test folders byte for byte, so both models meet one test set.
    """
    torch.set_num_threads(1)
    good = write_image_folder(tmp_path / "kl", PER_SPLIT)
    reversed_ = tmp_path / "kl-reversed"
    shutil.copytree(good, reversed_)
    train = reversed_ / "train"
    for grade in range(5):
        (train / str(grade)).rename(train / f"was-{grade}")
    for grade in range(5):
        (train / f"was-{grade}").rename(train / str(4 - grade))
    return good, reversed_


def _artifact_markdown(flow_run_id: str) -> list[str]:
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return [str(a.data) for a in artifacts if a.type == "markdown"]


def _run(data: Path, **overrides: Any) -> dict[str, Any]:
    from flows.retrain import retrain

    return retrain(data=str(data), **{**TINY, **overrides})


def _test_reports(version: str) -> list[Path]:
    """The test-split evaluation reports written for ``version`` so far."""
    return sorted((get_settings().home / "evaluations" / version).glob("test-*"))


@pytest.mark.usefixtures("no_quality_floor")
def test_a_worse_challenger_is_not_promoted(datasets: tuple[Path, Path]) -> None:
    good, reversed_ = datasets
    registry = ModelRegistry()
    first = _run(good)
    assert first["promoted"] and first["champion"] is None
    assert registry.champion().version == first["challenger"]  # type: ignore[union-attr]
    assert len(_test_reports(first["challenger"])) == 1
    # The same record as `koa train --promote` logs (tests/core/test_cli_models.py).
    assert registry.promotions() == [first["decision"]]
    assert set(first["decision"]) == set(PromotionRecord.__dataclass_fields__)

    second = _run(reversed_)
    assert len(_test_reports(second["challenger"])) == 1
    # The champion's recorded test metrics are for the other dataset: re-evaluated, once.
    assert len(_test_reports(first["challenger"])) == 2
    champion_qwk = second["metrics"]["champion"]["qwk"]
    assert second["metrics"]["challenger"]["qwk"] < champion_qwk
    assert not second["promoted"] and "QWK gain below" in second["reason"]
    assert registry.champion().version == first["challenger"]  # type: ignore[union-attr]
    assert registry.promotions()[-1] == second["decision"]
    assert second["decision"]["promoted"] is False

    table = read_evaluations(get_settings().results_dir)
    assert table.schema.equals(evaluations_schema(), check_metadata=False)
    rows = table.to_pylist()
    assert [(r["evaluation_id"], r["role"]) for r in rows] == [
        (first["evaluation_id"], "challenger"),
        (second["evaluation_id"], "challenger"),
        (second["evaluation_id"], "champion"),
    ]
    assert rows[0]["promoted"] and "no champion" in rows[0]["decision_reason"]
    latest = rows[1:]
    assert {r["model_version"] for r in latest} == {first["challenger"], second["challenger"]}
    assert all(r["promoted"] is False and r["decision_reason"] == second["reason"] for r in latest)
    # The same test set: same images, same count, for both models.
    assert len({(r["split"], r["n"]) for r in rows}) == 1
    assert {r["qwk"] for r in latest} == {champion_qwk, second["metrics"]["challenger"]["qwk"]}
    assert all(Path(r["report_dir"], "confusion_matrix.png").is_file() for r in rows)

    (markdown,) = _artifact_markdown(second["evaluation_id"])
    assert f"challenger {second['challenger']} not promoted" in markdown
    assert "| Quadratic weighted kappa |" in markdown
    assert markdown.count("](data:image/png;base64,") == 6


@pytest.mark.usefixtures("no_quality_floor")
def test_promote_false_reports_the_rule_but_keeps_the_champion(
    datasets: tuple[Path, Path],
) -> None:
    good, _ = datasets
    summary = _run(good, promote=False)
    assert not summary["promoted"]
    assert summary["reason"].startswith("promotion disabled")
    assert "no champion yet" in summary["reason"]  # the rule would promote it; nothing moves
    assert ModelRegistry().champion() is None
    assert ModelRegistry().promotions() == []
    assert len(_test_reports(summary["challenger"])) == 1
    (row,) = read_evaluations(get_settings().results_dir).to_pylist()
    assert row["promoted"] is False and row["role"] == "challenger"


def test_parameters_are_validated_from_the_signature(datasets: tuple[Path, Path]) -> None:
    from prefect.exceptions import ParameterTypeError

    from flows.retrain import retrain

    with pytest.raises(ParameterTypeError):
        retrain(data=str(datasets[0]), loss="hinge")  # type: ignore[arg-type]
    assert not read_evaluations(get_settings().results_dir).num_rows
