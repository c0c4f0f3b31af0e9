"""Client and AsyncClient agree with each other, and with the official lorax-client 0.7.

Drift between the official sync and async clients caused shipped bugs (docs/wire.md,
"The official Python client"). These tests compare the two classes
structurally, and check every keyword argument of the official client against ours.
The official signatures are copied from predibase/lorax clients/python/lorax/client.py
at a7394ba3.
"""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lorax import NOT_GIVEN, AsyncClient, AsyncStream, Client, Stream, Timeout
from lorax.transports.mock import MockTransport
from lorax.types import GenerateResponse, StreamResponse, Token

URL = "http://lorax.test"

# Lifecycle is where the two legitimately differ: Client.close() is AsyncClient.aclose()
# (as in httpx), and the context-manager protocols differ.
ASYNC_ONLY = {"aclose"}
SYNC_ONLY = {"close"}
PROPERTIES = {"base_url", "timeout", "retry_policy", "transport", "with_raw_response"}
STREAM_METHODS = {"generate_stream", "chat_stream", "completions_stream"}
NOT_COROUTINES = STREAM_METHODS | {"with_options", "from_predibase"}


def public(cls: type) -> set[str]:
    return {name for name in dir(cls) if not name.startswith("_")}


def test_same_public_names() -> None:
    assert public(AsyncClient) - public(Client) == ASYNC_ONLY
    assert public(Client) - public(AsyncClient) == SYNC_ONLY
    assert public(Client) == {
        "base_url",
        "chat",
        "chat_stream",
        "classify",
        "classify_batch",
        "close",
        "completions",
        "completions_stream",
        "embed",
        "embeddings",
        "from_predibase",
        "generate",
        "generate_stream",
        "health",
        "info",
        "metrics",
        "retry_policy",
        "timeout",
        "tokenize",
        "transport",
        "wait_until_ready",
        "with_options",
        "with_raw_response",
    }


def test_context_manager_protocols() -> None:
    assert callable(Client.__enter__)
    assert callable(Client.__exit__)
    assert inspect.iscoroutinefunction(AsyncClient.__aenter__)
    assert inspect.iscoroutinefunction(AsyncClient.__aexit__)
    assert inspect.iscoroutinefunction(AsyncClient.aclose)
    assert not hasattr(AsyncClient, "close")  # no coroutine twin under the sync name
    assert not inspect.iscoroutinefunction(Client.close)


def _methods() -> list[str]:
    return sorted(public(Client) - PROPERTIES - {"close"})


def _params(fn: Any) -> list[tuple[str, Any, Any, Any]]:
    return [(p.name, p.kind, p.default, p.annotation) for p in inspect.signature(fn).parameters.values()]


def _async_to_sync(annotation: Any) -> Any:
    if isinstance(annotation, str):
        return annotation.replace("AsyncStream[", "Stream[").replace("AsyncTransport", "Transport")
    return annotation


@pytest.mark.parametrize("name", _methods())
def test_same_signature(name: str) -> None:
    sync = inspect.getattr_static(Client, name)
    aio = inspect.getattr_static(AsyncClient, name)
    assert type(sync) is type(aio)
    sync_fn = getattr(Client, name)
    aio_fn = getattr(AsyncClient, name)
    assert _params(sync_fn) == [(n, k, d, _async_to_sync(a)) for n, k, d, a in _params(aio_fn)]
    sync_return = inspect.signature(sync_fn).return_annotation
    aio_return = inspect.signature(aio_fn).return_annotation
    if name == "from_predibase":
        assert (sync_return, aio_return) == ("Client", "AsyncClient")
    elif name == "with_options":
        assert sync_return == aio_return == "C"
    else:
        assert sync_return == _async_to_sync(aio_return)
    if name in STREAM_METHODS:
        assert sync_return.startswith("Stream[")
        assert aio_return.startswith("AsyncStream[")


def test_same_constructor_arguments() -> None:
    sync = _params(Client.__init__)
    aio = _params(AsyncClient.__init__)
    # The same default pool on both: a sync client shared by threads needs as many
    # connections as an async one running as many tasks.
    pool = [("pool_size", inspect.Parameter.KEYWORD_ONLY, 100, "int")]
    assert [p for p in sync if p[0] == "pool_size"] == pool
    assert [p for p in aio if p[0] == "pool_size"] == pool
    # A MockTransport is both kinds: the sync and async seams have distinct method names.
    assert [p[3] for p in sync if p[0] == "transport"] == ["Transport | None"]
    assert [p[3] for p in aio if p[0] == "transport"] == ["AsyncTransport | None"]
    assert [p for p in sync if p[0] != "transport"] == [p for p in aio if p[0] != "transport"]
    assert [p[0] for p in sync] == [p[0] for p in aio]


@pytest.mark.parametrize("name", sorted(PROPERTIES))
def test_properties_on_both(name: str) -> None:
    assert isinstance(inspect.getattr_static(Client, name), property)
    assert isinstance(inspect.getattr_static(AsyncClient, name), property)


@pytest.mark.parametrize("name", _methods())
def test_sync_methods_are_plain_functions(name: str) -> None:
    fn = getattr(Client, name)
    assert not inspect.iscoroutinefunction(fn)
    assert not inspect.isgeneratorfunction(fn)
    assert not inspect.isasyncgenfunction(fn)


@pytest.mark.parametrize("name", _methods())
def test_async_methods_are_coroutines_except_streams(name: str) -> None:
    fn = getattr(AsyncClient, name)
    assert not inspect.isasyncgenfunction(fn)
    assert not inspect.isgeneratorfunction(fn)
    assert inspect.iscoroutinefunction(fn) is (name not in NOT_COROUTINES)


def test_async_stream_methods_return_a_stream_without_await() -> None:
    transport = MockTransport(lambda m, r: iter([StreamResponse(token=Token(id=1, text="a"), generated_text="a")]))
    client = AsyncClient(URL, transport=transport)
    for name, arg in [
        ("generate_stream", "x"),
        ("chat_stream", [{"role": "user", "content": "x"}]),
        ("completions_stream", "x"),
    ]:
        stream = getattr(client, name)(arg)
        assert type(stream) is AsyncStream
        assert not inspect.isawaitable(stream)
    sync_stream = Client(URL, transport=transport).generate_stream("x")
    assert type(sync_stream) is Stream

    async def consume() -> list[str]:
        return [e.token.text async for e in client.generate_stream("x")]

    assert asyncio.run(consume()) == ["a"]


# ---------------------------------------------------------------------------------
# The official lorax-client 0.7 (predibase/lorax a7394ba3), written out literally.

_GENERATE = [
    ("prompt", inspect.Parameter.empty),
    ("adapter_id", None),
    ("adapter_source", None),
    ("merged_adapters", None),
    ("api_token", None),
    ("do_sample", False),
    ("max_new_tokens", None),
    ("ignore_eos_token", False),
    ("best_of", None),
    ("repetition_penalty", None),
    ("return_full_text", False),
    ("seed", None),
    ("stop_sequences", None),
    ("temperature", None),
    ("top_k", None),
    ("top_p", None),
    ("truncate", None),
    ("typical_p", None),
    ("watermark", False),
    ("response_format", None),
    ("decoder_input_details", False),
    ("return_k_alternatives", None),
    ("details", True),
]

_SYNC_GENERATE_STREAM = [
    ("prompt", inspect.Parameter.empty),
    ("adapter_id", None),
    ("adapter_source", None),
    ("merged_adapters", None),
    ("api_token", None),
    ("do_sample", False),
    ("max_new_tokens", None),
    ("ignore_eos_token", False),
    ("repetition_penalty", None),
    ("return_full_text", False),
    ("seed", None),
    ("stop_sequences", None),
    ("temperature", None),
    ("top_k", None),
    ("top_p", None),
    ("truncate", None),
    ("typical_p", None),
    ("watermark", False),
    ("response_format", None),
    ("details", True),
]

# The official async generate_stream also has return_k_alternatives (docs/wire.md, "The
# official Python client"); ours has it on both, which is an allowed addition to the sync one.
_ASYNC_GENERATE_STREAM = [*_SYNC_GENERATE_STREAM, ("return_k_alternatives", None)]

OFFICIAL: dict[tuple[str, str], list[tuple[str, Any]]] = {
    ("sync", "__init__"): [
        ("base_url", inspect.Parameter.empty),
        ("headers", None),
        ("cookies", None),
        ("timeout", 60),
        ("session", None),
        ("max_session_retries", 2),
    ],
    ("async", "__init__"): [
        ("base_url", inspect.Parameter.empty),
        ("headers", None),
        ("cookies", None),
        ("timeout", 60),
    ],
    ("sync", "generate"): _GENERATE,
    ("async", "generate"): _GENERATE,
    ("sync", "generate_stream"): _SYNC_GENERATE_STREAM,
    ("async", "generate_stream"): _ASYNC_GENERATE_STREAM,
    ("sync", "embed"): [("inputs", inspect.Parameter.empty)],
    ("async", "embed"): [("inputs", inspect.Parameter.empty)],
    ("sync", "classify"): [("inputs", inspect.Parameter.empty)],
    ("async", "classify"): [("inputs", inspect.Parameter.empty)],
    # The official AsyncClient has no classify_batch (docs/wire.md, "The official Python client"); ours has it on both.
    ("sync", "classify_batch"): [("inputs", inspect.Parameter.empty)],
    ("async", "classify_batch"): [("inputs", inspect.Parameter.empty)],
    ("sync", "metrics"): [("format", "prometheus")],
    ("async", "metrics"): [("format", "prometheus")],
}


@pytest.mark.parametrize(("kind", "name"), sorted(OFFICIAL))
def test_official_arguments_keep_position_and_default(kind: str, name: str) -> None:
    cls = Client if kind == "sync" else AsyncClient
    params = list(inspect.signature(getattr(cls, name)).parameters.values())[1:]  # drop self
    positional = [p for p in params if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    official = OFFICIAL[(kind, name)]
    # Same names in the same order, so positional calls written for the official client
    # bind the same way; ours may add more after them.
    assert [p.name for p in positional[: len(official)]] == [n for n, _ in official]
    for param, (official_name, official_default) in zip(positional, official, strict=False):
        if official_name == "timeout":
            # NOT_GIVEN stands for the default, which is what 60 means (checked below).
            assert param.default is NOT_GIVEN
        else:
            assert param.default == official_default, official_name
            assert type(param.default) is type(official_default), official_name


def test_official_generate_stream_arguments_are_all_accepted() -> None:
    transport = MockTransport(lambda m, r: iter([StreamResponse(token=Token(id=1, text="a"), generated_text="a")]))
    kwargs = {
        "adapter_id": "a",
        "adapter_source": "hub",
        "merged_adapters": None,
        "api_token": "t",
        "do_sample": True,
        "max_new_tokens": 3,
        "ignore_eos_token": True,
        "repetition_penalty": 1.1,
        "return_full_text": True,
        "seed": 1,
        "stop_sequences": ["x"],
        "temperature": 0.5,
        "top_k": 5,
        "top_p": 0.9,
        "truncate": 10,
        "typical_p": 0.9,
        "watermark": True,
        "response_format": {"type": "json_object"},
        "details": True,
        "return_k_alternatives": 2,
    }
    assert [e.generated_text for e in Client(URL, transport=transport).generate_stream("p", **kwargs)] == ["a"]

    async def run() -> list[str]:
        client = AsyncClient(URL, transport=transport)
        return [e.generated_text async for e in client.generate_stream("p", **kwargs)]

    assert asyncio.run(run()) == ["a"]
    sync_request, async_request = transport.requests("GenerateStream")
    assert sync_request == async_request
    assert sync_request.parameters.return_k_alternatives == 2


def test_same_call_sends_the_same_request_on_both_clients() -> None:
    transport = MockTransport(lambda m, r: GenerateResponse(generated_text="ok"))
    kwargs: dict[str, Any] = {
        "adapter_id": "a",
        "merged_adapters": None,
        "max_new_tokens": 5,
        "seed": 2**64 - 1,
        "temperature": 0,
        "response_format": {"type": "json_object", "schema": None},
        "frequency_penalty": 1.0,
    }
    Client(URL, transport=transport).generate("p", **kwargs)
    asyncio.run(AsyncClient(URL, transport=transport).generate("p", **kwargs))
    first, second = transport.requests("Generate")
    assert first == second


@pytest.mark.parametrize("cls", [Client, AsyncClient])
def test_timeout_60_is_sixty_seconds_on_both(cls: type) -> None:
    transport = MockTransport(lambda m, r: GenerateResponse())
    assert cls(URL, timeout=60, transport=transport).timeout == Timeout(connect=60.0, read=60.0, total=None)
    assert cls(URL, transport=transport).timeout == Timeout(connect=60.0, read=60.0, total=None)
    assert cls(URL, None, None, 60, transport=transport).timeout == Timeout(connect=60.0, read=60.0)


def test_default_retry_policy_is_the_same_on_both() -> None:
    transport = MockTransport(lambda m, r: GenerateResponse())
    assert Client(URL, transport=transport).retry_policy == AsyncClient(URL, transport=transport).retry_policy
    assert Client(URL, transport=transport).retry_policy.max_retries == 2


def _unasync_line() -> Callable[[str], str]:
    spec = importlib.util.spec_from_file_location("_unasync_tool", Path(__file__).parents[2] / "tools" / "unasync.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    convert: Callable[[str], str] = module.unasync_line
    return convert


def test_docstrings_are_written_once() -> None:
    # Client's docstrings are AsyncClient's with the generator's substitutions
    # (AsyncStream -> Stream, ...), not copies made at import.
    unasync_line = _unasync_line()
    for name in sorted(public(AsyncClient)):
        aio_doc = getattr(AsyncClient, name).__doc__
        assert aio_doc, name
        sync_doc = getattr(Client, unasync_line(name)).__doc__
        assert sync_doc == unasync_line(aio_doc), name
    assert Client.__doc__ == unasync_line(AsyncClient.__doc__ or "")
    assert "asyncio" not in (Client.generate_stream.__doc__ or "")
    assert "AsyncStream" in (AsyncClient.generate_stream.__doc__ or "")
    assert "AsyncStream" not in (Client.generate_stream.__doc__ or "")
