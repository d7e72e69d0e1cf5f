"""Fixtures of the koa_core tests: a tiny labelled dataset and one training run on it."""

from __future__ import annotations

from pathlib import Path

import pytest

from koa_core.data.datasets import KLDataset, load_dataset
from koa_core.training.loop import train
from tests.core.kl_fixtures import TINY_CONFIG, write_image_folder


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> KLDataset:
    """Six knees per grade in train, three in val and test, at the tiny network's size."""
    root = write_image_folder(tmp_path_factory.mktemp("kl"), {"train": 6, "val": 3, "test": 3})
    return load_dataset(root, TINY_CONFIG.input_size)


@pytest.fixture(scope="module")
def trained(dataset: KLDataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One training run for the module; each test registers it in its own registry."""
    return train(TINY_CONFIG, dataset, tmp_path_factory.mktemp("run")).out_dir
