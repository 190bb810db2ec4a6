"""Seeded tiny fixtures shared by the test suite."""

from __future__ import annotations

import pytest
import torch

from helpers import TINY_BACKBONE
from vitssl.backbones import BackboneConfig


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def tiny_backbone_cfg() -> BackboneConfig:
    return BackboneConfig(**TINY_BACKBONE)


