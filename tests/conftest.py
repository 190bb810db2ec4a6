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
def one_thread():
    """Tiny tensors: extra intra-op threads only add contention on a busy 2-core CI box."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_backbone_cfg() -> BackboneConfig:
    return BackboneConfig(**TINY_BACKBONE)


