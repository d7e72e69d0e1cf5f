"""Tests for the demo's champion: trained and promoted by the rule, refused under the floor."""

from __future__ import annotations

from dataclasses import replace

import pytest

from koa_core.config import get_settings
from koa_core.errors import BelowQualityFloorError
from koa_core.registry import ModelRegistry, ModelVersion
from koa_core.workflows import demo
from tests.core.kl_fixtures import TINY_CONFIG, write_image_folder


@pytest.fixture
def tiny_demo(monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo's workflow on a tiny dataset and network (the real recipe takes minutes)."""
    write_image_folder(get_settings().datasets_dir / "kl", {"train": 6, "val": 3, "test": 3})
    monkeypatch.setattr(demo, "DEMO_TRAINING", TINY_CONFIG)


@pytest.mark.usefixtures("tiny_demo", "no_quality_floor")
def test_the_demo_promotes_its_model_by_the_rule_and_logs_it() -> None:
    said: list[str] = []
    champion = demo.ensure_champion(get_settings(), said.append)
    registry = ModelRegistry()
    assert registry.champion() == champion
    (line,) = registry.promotions()
    assert (line["challenger"], line["promoted"], line["forced"]) == (champion.version, True, False)
    assert "no champion yet" in said[-1]
    assert demo.ensure_champion(get_settings(), said.append) == champion
    assert len(registry.promotions()) == 1


@pytest.mark.usefixtures("tiny_demo")
def test_a_demo_model_under_the_floor_is_not_champion(monkeypatch: pytest.MonkeyPatch) -> None:
    # A learning rate of zero leaves the network as initialised: it grades at chance.
    monkeypatch.setattr(demo, "DEMO_TRAINING", replace(TINY_CONFIG, epochs=1, lr=0.0))
    with pytest.raises(BelowQualityFloorError, match="quality floor") as raised:
        demo.ensure_champion(get_settings(), lambda _: None)
    message = str(raised.value)
    assert "\n" not in message and "koa train" in message
    registry = ModelRegistry()
    assert registry.champion() is None
    (version,) = registry.list_versions()
    (line,) = registry.promotions()
    assert line["challenger"] == version.version
    assert (line["promoted"], line["below_floor"]) == (False, True)


@pytest.mark.slow
def test_the_demo_recipe_trains_a_champion_above_the_floor(
    demo_champion: tuple[ModelVersion, list[str]],
) -> None:
    """The real demo recipe on the real demo data: validation QWK >= 0.85 (issue 16)."""
    champion, said = demo_champion
    validation = champion.metrics["validation"]
    assert validation["qwk"] >= 0.85, said
    assert champion.metrics["test"]["qwk"] >= get_settings().promotion_min_qwk
    assert f"validation QWK {validation['qwk']:.3f}" in said[-1]
