"""Unary calls of both HTTP transports against a real aiohttp server on loopback."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from lorax import _routes as routes
from lorax import errors
from lorax.transports.base import CallOptions

from ._servers import AppServer
from .conftest import Driver

GENERATE = routes.GENERATE

# (method, request kwargs, path answered, response body, check of the decoded message)
UNARY_CASES = [
    (routes.GENERATE, {"inputs": "Hi"}, "/generate", b'{"generated_text":" there"}', "generated_text=' there'"),
    (
        routes.COMPAT_GENERATE,
        {"inputs": "Hi"},
        "/",
        b'[{"generated_text":" there"}]',
        "generated_text=' there'",
    ),
    (routes.EMBED, {"inputs": "Hi"}, "/embed", b'{"embeddings":[0.5,-0.25]}', "embeddings=[0.5, -0.25]"),
    (
        routes.CLASSIFY,
        {"inputs": "Paris"},
        "/classify",
        b'[{"entity_group":"LOC","score":0.99,"word":"Paris","start":0,"end":5}]',
        "LOC",
    ),
    (
        routes.CLASSIFY_BATCH,
        {"inputs": ["a", "b"]},
        "/classify_batch",
        b'[[{"entity_group":"LOC","score":0.5,"word":"a","start":0,"end":1}],[]]',
        "LOC",
    ),
    (
        routes.TOKENIZE,
        {"inputs": "What"},
        "/tokenize",
        b'[{"id":1,"text":"<s>","start":0,"stop":0},{"id":1824,"text":"\\u2581What","start":0,"stop":4}]',
        "1824",
    ),
    (
        routes.COMPLETIONS,
        {"model": "", "prompt": "Hi"},
        "/v1/completions",
        b'{"id":"null","object":"text_completion","created":0,"model":"null","choices":[{"index":0,"text":" x",'
        b'"logprobs":null,"finish_reason":"length"}],"usage":{"prompt_tokens":1,"total_tokens":2,"completion_tokens":1}}',
        "text=' x'",
    ),
    (
        routes.EMBEDDINGS,
        {"input": "Hi", "model": ""},
        "/v1/embeddings",
        b'{"embeddings":[{"index":0,"embedding":[0.5],"object":"embedding"}]}',
        "0.5",
    ),
]


@pytest.mark.parametrize(
    ("method", "fields", "path", "body", "expect"), UNARY_CASES, ids=lambda v: getattr(v, "name", "")
)
def test_post_routes_send_json_and_decode(
    app: AppServer,
    driver: Callable[..., Driver],
    method: routes.Method,
    fields: dict[str, object],
    path: str,
    body: bytes,
    expect: str,
) -> None:
    app.reply("POST", f"/prefix/llms/x{path}".rstrip("/"), body, headers={"X-Model-Id": "m", "Set-Cookie": "s=1"})
    d = driver(f"{app.url}/prefix/llms/x/")  # a trailing slash on base_url is ignored
    message, meta = d.unary(method, method.input_type(**fields))
    assert expect in str(message)
    assert meta.status_code == 200
    assert meta.model_id == "m"
    assert meta.headers["set-cookie"] == "<redacted>"
    seen = app.seen[-1]
    # Routes are joined under the prefix; LoRAX's "/" is the prefix itself.
    assert seen.path == f"/prefix/llms/x{path}".rstrip("/")
    assert seen.headers["content-type"] == "application/json"
    assert seen.headers["accept"] == "application/json"
    assert seen.headers["user-agent"].startswith("lorax-client/")
    assert seen.body.startswith(b"{")
    assert b'"' in seen.body


def test_get_routes(app: AppServer, driver: Callable[..., Driver]) -> None:
    app.reply("GET", "/health", b"", content_type=None)
    app.reply(
        "GET",
        "/info",
        b'{"model_id":"m","model_sha":null,"model_dtype":"torch.float16","model_device_type":"cuda",'
        b'"model_pipeline_tag":null,"max_concurrent_requests":128,"max_best_of":2,"max_stop_sequences":4,'
        b'"max_input_length":1024,"max_total_tokens":2048}',
    )
    prom = "# TYPE lorax_request_count counter\nlorax_request_count 3\n\n"

    async def metrics(request, _):  # type: ignore[no-untyped-def]
        from aiohttp import web

        if "application/json" in request.headers.get("Accept", ""):
            return web.Response(
                body=b'{"lorax_request_count":{"type":"counter","data":[{"key":"","value":3.0}]}}',
                content_type="application/json",
            )
        return web.Response(text=prom, content_type="text/plain")

    app.on("GET", "/metrics", metrics)
    d = driver(app.url)
    health, meta = d.unary(routes.HEALTH, routes.HEALTH.input_type())
    assert meta.status_code == 200
    assert health == routes.HEALTH.output_type()
    info, _ = d.unary(routes.INFO, routes.INFO.input_type())
    assert info.model_id == "m"  # type: ignore[attr-defined]
    text, _ = d.unary(routes.METRICS, routes.METRICS.input_type(format=""))
    assert text.body == prom  # type: ignore[attr-defined]
    families, _ = d.unary(routes.METRICS, routes.METRICS.input_type(format="json"))
    assert families.body["lorax_request_count"].type == "counter"  # type: ignore[attr-defined]
    gets = [s for s in app.seen if s.method == "GET"]
    assert [s.body for s in gets] == [b""] * 4
    assert all("content-type" not in s.headers for s in gets)
    assert [s.headers["accept"] for s in gets if s.path == "/metrics"] == ["text/plain", "application/json"]
    # Every call went over the one kept-alive connection.
    assert d.stats()["in_use"] == 0


def test_headers_defaults_and_call_headers(app: AppServer, driver: Callable[..., Driver]) -> None:
    app.reply("POST", "/generate", b'{"generated_text":""}')
    d = driver(app.url, headers={"Authorization": "Bearer transport", "X-Team": "a"}, user_agent="my-app/1")
    options = CallOptions(headers={"authorization": "Bearer call", "X-Call": "1"})
    d.unary(GENERATE, GENERATE.input_type(inputs="x"), options)
    seen = app.seen[-1].headers
    assert seen["authorization"] == "Bearer call"  # the call wins, case-insensitively
    assert seen["x-team"] == "a"
    assert seen["x-call"] == "1"
    assert seen["user-agent"] == "my-app/1"
    d.unary(GENERATE, GENERATE.input_type(inputs="x"))
    assert app.seen[-1].headers["authorization"] == "Bearer transport"


def test_bad_call_header_is_refused_before_sending(app: AppServer, driver: Callable[..., Driver]) -> None:
    d = driver(app.url)
    with pytest.raises(ValueError, match="x-bad") as info:
        d.unary(GENERATE, GENERATE.input_type(inputs="x"), CallOptions(headers={"x-bad": "a\r\nInjected: 1"}))
    assert "Injected" not in str(info.value)
    assert app.seen == []


ERROR_CASES = [
    (
        422,
        "application/json",
        b'{"error":"Input validation error: `temperature` must be non-negative","error_type":"validation"}',
        errors.ValidationError,
        "temperature",
    ),
    (424, "application/json", b'{"error":"Request failed","error_type":"generation"}', errors.GenerationError, ""),
    (429, "application/json", b'{"error":"Model is overloaded","error_type":"overloaded"}', errors.OverloadedError, ""),
    (
        400,
        "text/plain; charset=utf-8",
        b"Failed to parse the request body as JSON: EOF while parsing a value at line 1 column 0",
        errors.BadRequestError,
        "Failed to parse",
    ),
    (
        413,
        "text/plain; charset=utf-8",
        b"Failed to buffer the request body: length limit exceeded",
        errors.PayloadTooLargeError,
        "length limit",
    ),
    (
        415,
        "text/plain; charset=utf-8",
        b"Expected request with `Content-Type: application/json`",
        errors.UnsupportedMediaTypeError,
        "Content-Type",
    ),
    (
        422,
        "text/plain; charset=utf-8",
        b"Failed to deserialize the JSON body into the target type: missing field `inputs` at line 1 column 2",
        errors.RequestDeserializationError,
        "missing field",
    ),
    (
        502,
        "text/html",
        b"<html><head><title>502 Bad Gateway</title></head><body><h1>502</h1>" + b"x" * 100_000 + b"</body></html>",
        errors.ServiceUnavailableError,
        "502 Bad Gateway",
    ),
    (503, None, b"", errors.ServiceUnavailableError, ""),
    (404, None, b"", errors.NotFoundError, ""),
]


@pytest.mark.parametrize(("status", "content_type", "body", "cls", "text"), ERROR_CASES, ids=lambda v: str(v)[:12])
def test_error_statuses_map_to_typed_errors(
    app: AppServer,
    driver: Callable[..., Driver],
    status: int,
    content_type: str | None,
    body: bytes,
    cls: type[errors.APIStatusError],
    text: str,
) -> None:
    app.reply("POST", "/generate", body, status=status, content_type=content_type, headers={"X-Request-Id": "r1"})
    d = driver(app.url, pool=1)
    for method in (GENERATE, routes.GENERATE_STREAM):
        if method is routes.GENERATE_STREAM:
            app.reply("POST", "/generate_stream", body, status=status, content_type=content_type)
        call = d.stream if method.server_streaming else d.unary
        with pytest.raises(cls) as info:
            call(method, method.input_type(inputs="x"))
        assert type(info.value) is cls
        assert info.value.status_code == status
        assert text in info.value.message
        if method is GENERATE:
            assert info.value.request_id == "r1"
        # The connection went back to the pool (one slot: a leak would block the next call).
        assert d.stats()["in_use"] == 0
    app.reply("GET", "/health", b"", content_type=None)
    assert d.unary(routes.HEALTH, routes.HEALTH.input_type())[1].status_code == 200


def test_redirects_are_not_followed(app: AppServer, driver: Callable[..., Driver]) -> None:
    app.reply(
        "POST",
        "/generate",
        b"",
        status=307,
        content_type=None,
        headers={"Location": "https://user:secret@elsewhere.example/generate?token=abc"},
    )
    app.reply("POST", "/elsewhere", b'{"generated_text":""}')
    d = driver(app.url, headers={"Authorization": "Bearer canary-redirect"})
    with pytest.raises(errors.APIStatusError) as info:
        d.unary(GENERATE, GENERATE.input_type(inputs="x"))
    assert info.value.status_code == 307
    message = str(info.value)
    assert "redirect" in message
    assert "elsewhere.example/generate" in message
    assert "secret" not in message
    assert "token=abc" not in message
    assert [s.path for s in app.seen] == ["/generate"]


def test_undecodable_body_is_a_decode_error(app: AppServer, driver: Callable[..., Driver]) -> None:
    app.reply("POST", "/generate", b"<html>not json</html>", content_type="text/html")
    d = driver(app.url)
    with pytest.raises(errors.ResponseDecodeError):
        d.unary(GENERATE, GENERATE.input_type(inputs="x"))
    app.reply("POST", "/generate", b'{"error":"boom","error_type":"generation"}', status=200)
    with pytest.raises(errors.GenerationError):
        d.unary(GENERATE, GENERATE.input_type(inputs="x"))
