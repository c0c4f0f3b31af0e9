"""Fixtures for the command-line tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from lorax.testing import FakeLorax


@pytest.fixture(scope="session")
def fake_server() -> Iterator[FakeLorax]:
    """One fake LoRAX for the whole CLI suite (tests that change it restore it)."""
    with FakeLorax() as server:
        yield server
