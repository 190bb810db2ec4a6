"""Analysis tests run single-threaded: tiny models gain nothing from threads on a shared CPU."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """One intra-op thread for these tiny tensors (the shared `one_thread` fixture)."""
