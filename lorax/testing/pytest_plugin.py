"""pytest plugin (entry point ``lorax``): a ``lorax_server`` fixture running :class:`FakeLorax`.

::

    def test_generate(lorax_server):
        urllib3.request("POST", lorax_server.url + "/generate", json={"inputs": "Hi"})

    @pytest.mark.lorax_server(max_total_tokens=64, token_latency=0.01)
    def test_slow(lorax_server): ...

The marker's keyword arguments are :class:`FakeLorax`'s. Each test gets a fresh server.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from lorax.testing import FakeLorax

__all__ = ["lorax_server"]


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``lorax_server`` marker."""
    config.addinivalue_line(
        "markers", "lorax_server(**options): options for the lorax_server fixture (FakeLorax keyword arguments)"
    )


@pytest.hookimpl
def pytest_plugin_registered(plugin: object, plugin_name: str, manager: Any) -> None:
    """Allow ``-p lorax.testing.pytest_plugin`` when the ``lorax`` entry point is installed too.

    Both name this same module, and pluggy refuses to register one module under two names;
    registered by its module name first (``-p``), it blocks the entry point's name.
    """
    if plugin is sys.modules[__name__] and plugin_name != "lorax" and manager.get_plugin("lorax") is None:
        manager.set_blocked("lorax")


@pytest.fixture
def lorax_server(request: pytest.FixtureRequest) -> Iterator[FakeLorax]:
    """A running fake LoRAX server on 127.0.0.1, stopped after the test."""
    # Imported here, not at the top: pytest loads this plugin in every run wherever
    # lorax-client is installed, and the server (aiohttp, the toy model) is only worth
    # loading for a test that asks for it.
    from lorax.testing import FakeLorax

    marker = request.node.get_closest_marker("lorax_server")
    options = dict(marker.kwargs) if marker is not None else {}
    with FakeLorax(**options) as server:
        yield server
