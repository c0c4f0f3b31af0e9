"""Errors that point at the cause, through Client and AsyncClient over real loopback sockets.

A 401 or 403 says which token was refused and where it came from (never the token);
an answer that is not LoRAX's JSON (another server, a wrong path prefix) names the
request's method and URL and says that the body was not LoRAX's. Each test runs with
the sync client (urllib3) and the async one (aiohttp).
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from typing import Any

import pytest

from lorax import errors
from tests.client.conftest import Driver
from tests.transports.http_transports._servers import AppServer, LoopThread

TOKEN = "tok-CANARY-5e1f0a77"
PREFIX = "/acme/deployments/v2/llms/llama"
INVALID = '{"error":"Invalid API token"}'
HTML_404 = "<html><head><title>404 Not Found</title></head><body><h1>Not Found</h1><hr>nginx</body></html>"


@pytest.fixture(scope="module")
def lt() -> Iterator[LoopThread]:
    loop_thread = LoopThread()
    yield loop_thread
    loop_thread.close()


@pytest.fixture
def app(lt: LoopThread) -> Iterator[AppServer]:
    server = AppServer(lt).start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _no_env_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PREDIBASE_API_TOKEN", raising=False)
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


def call(drv: Driver, client: Any, stream: bool) -> errors.LoraxError:
    """Run one generate (or generate_stream) call and return the error it raised."""

    def run() -> None:
        if stream:
            with client.generate_stream("hi", max_new_tokens=2) as events:
                list(events)
        else:
            client.generate("hi", max_new_tokens=2)

    with client, pytest.raises(errors.LoraxError) as info:
        run()
    return info.value


def predibase(drv: Driver, app: AppServer, **kwargs: Any) -> Any:
    return drv.wrap(drv.cls.from_predibase("acme", "llama", serving_url=app.url, max_retries=0, **kwargs))


def no_secret(error: errors.LoraxError) -> None:
    text = " ".join([str(error), repr(error), error.message, error.body or "", repr(error.headers)])
    assert TOKEN not in text
    assert "CANARY" not in text


# ---------------------------------------------------------------------------------
# 401 and 403


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
def test_401_names_the_api_token_argument(drv: Driver, app: AppServer, stream: bool) -> None:
    route = "/generate_stream" if stream else "/generate"
    app.reply("POST", PREFIX + route, INVALID, status=401)
    error = call(drv, predibase(drv, app, api_token=TOKEN), stream)
    assert type(error) is errors.AuthenticationError
    assert error.status_code == 401
    assert error.message == "Invalid API token"
    assert str(error) == (
        f"Invalid API token (status 401, POST {app.url}{PREFIX}{route}): "
        "the server refused the token from the api_token argument: check that it is valid and not expired"
    )
    assert app.seen[-1].headers["authorization"] == f"Bearer {TOKEN}"
    assert len(app.seen) == 1  # a refused token is not retried
    no_secret(error)


def test_401_names_the_environment_variable(drv: Driver, app: AppServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREDIBASE_API_TOKEN", TOKEN)
    app.reply("POST", PREFIX + "/generate", INVALID, status=401)
    error = call(drv, predibase(drv, app), stream=False)
    assert isinstance(error, errors.AuthenticationError)
    assert str(error).endswith(
        "the server refused the token from the PREDIBASE_API_TOKEN environment variable: "
        "check that it is valid and not expired"
    )
    no_secret(error)


def test_401_names_the_authorization_header(drv: Driver, app: AppServer) -> None:
    app.reply("POST", "/generate", INVALID, status=401)
    client = drv.wrap(drv.cls(app.url, headers={"Authorization": f"Bearer {TOKEN}"}, max_retries=0))
    error = call(drv, client, stream=False)
    assert str(error) == (
        f"Invalid API token (status 401, POST {app.url}/generate): the server refused the token from "
        "the Authorization header given in headers=: check that it is valid and not expired"
    )
    no_secret(error)
    # with_options(headers=) is where the token came from for the copy.
    app.seen.clear()
    plain = drv.wrap(drv.cls(app.url, max_retries=0))
    with plain:
        copy = plain.with_options(headers={"authorization": f"Bearer {TOKEN}"})
        with pytest.raises(errors.AuthenticationError) as info:
            copy.generate("hi")
    assert str(info.value).endswith(
        "the token from the Authorization header given in with_options(headers=): "
        "check that it is valid and not expired"
    )


def test_401_without_any_token_says_none_was_sent(drv: Driver, app: AppServer) -> None:
    app.reply("POST", "/generate", "Unauthorized", status=401, content_type="text/plain")
    error = call(drv, drv.wrap(drv.cls(app.url, max_retries=0)), stream=False)
    assert type(error) is errors.AuthenticationError
    assert str(error) == (
        f"Unauthorized (status 401, POST {app.url}/generate): the server wants credentials and none were sent: "
        "pass an Authorization header (headers=), or use Client.from_predibase with api_token= or "
        "PREDIBASE_API_TOKEN"
    )
    assert "authorization" not in app.seen[-1].headers


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
def test_403_is_permission_denied_and_names_the_source(drv: Driver, app: AppServer, stream: bool) -> None:
    route = "/generate_stream" if stream else "/generate"
    app.reply("POST", PREFIX + route, "<html><title>403 Forbidden</title></html>", status=403, content_type="text/html")
    error = call(drv, predibase(drv, app, api_token=TOKEN), stream)
    assert type(error) is errors.PermissionDeniedError
    assert str(error) == (
        f"403 Forbidden (status 403, POST {app.url}{PREFIX}{route}): the server refused the request with the "
        "token from the api_token argument: check that the token is valid and allowed to use this deployment"
    )
    no_secret(error)


def test_old_except_clauses_still_catch_401_and_403(drv: Driver, app: AppServer) -> None:
    # The official client raises UnknownError for 401 and ShardNotReadyError for 403.
    assert issubclass(errors.AuthenticationError, errors.UnknownError)
    assert issubclass(errors.PermissionDeniedError, errors.ShardNotReadyError)
    for status, old in ((401, errors.UnknownError), (403, errors.ShardNotReadyError)):
        app.reply("POST", "/generate", INVALID, status=status)
        with drv.wrap(drv.cls(app.url, max_retries=0)) as client, pytest.raises(old) as info:
            client.generate("hi")
        assert info.value.status_code == status
    assert {"AuthenticationError", "PermissionDeniedError", "MissingCredentialsError"} <= set(errors.__all__)


def test_a_lorax_error_type_still_wins_over_401(drv: Driver, app: AppServer) -> None:
    app.reply("POST", "/generate", '{"error":"bad input","error_type":"validation"}', status=401)
    error = call(drv, drv.wrap(drv.cls(app.url, max_retries=0)), stream=False)
    assert type(error) is errors.ValidationError
    assert str(error) == f"bad input (status 401, POST {app.url}/generate)"


def test_from_predibase_without_a_token_fails_at_construction(drv: Driver, app: AppServer) -> None:
    with pytest.raises(errors.MissingCredentialsError, match="PREDIBASE_API_TOKEN") as info:
        drv.cls.from_predibase("acme", "llama", serving_url=app.url)
    assert "api_token=" in str(info.value)
    assert app.seen == []


# ---------------------------------------------------------------------------------
# Not LoRAX


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
def test_html_404_from_another_server(drv: Driver, app: AppServer, stream: bool) -> None:
    route = "/generate_stream" if stream else "/generate"
    app.reply("POST", "/wrong" + route, HTML_404, status=404, content_type="text/html")
    error = call(drv, drv.wrap(drv.cls(app.url + "/wrong", max_retries=0)), stream)
    assert type(error) is errors.NotFoundError
    assert error.message == "404 Not Found"
    assert error.request_method == "POST"
    assert error.request_url == f"{app.url}/wrong{route}"
    assert str(error) == (
        f"404 Not Found (status 404, POST {app.url}/wrong{route}): "
        "the server answered HTML, not LoRAX JSON: is the URL right?"
    )


@pytest.mark.parametrize(
    ("status", "body", "content_type", "cls", "what"),
    [
        (404, "", None, errors.NotFoundError, "an empty body"),
        (405, "Method Not Allowed", "text/plain", errors.UnknownError, "plain text"),
        (501, "Not Implemented", "text/plain; charset=utf-8", errors.UnknownError, "plain text"),
        (404, '{"detail":"Not Found"}', "application/json", errors.NotFoundError, "JSON that is not a LoRAX error"),
    ],
    ids=["empty-404", "text-405", "text-501", "fastapi-404"],
)
def test_wrong_url_statuses_ask_about_the_url(
    drv: Driver, app: AppServer, status: int, body: str, content_type: str | None, cls: type, what: str
) -> None:
    app.reply("POST", "/generate", body, status=status, content_type=content_type)
    error = call(drv, drv.wrap(drv.cls(app.url, max_retries=0)), stream=False)
    assert type(error) is cls
    request = f"status {status}, POST {app.url}/generate"
    head = f"{body} ({request})" if body else request
    assert str(error) == f"{head}: the server answered {what}, not LoRAX JSON: is the URL right?"


def test_lorax_json_errors_name_the_request_without_a_hint(drv: Driver, app: AppServer) -> None:
    app.reply("POST", "/generate", '{"error":"Input validation error: bad","error_type":"validation"}', status=422)
    error = call(drv, drv.wrap(drv.cls(app.url, max_retries=0)), stream=False)
    assert type(error) is errors.ValidationError
    assert error.hint is None
    assert str(error) == f"Input validation error: bad (status 422, POST {app.url}/generate)"


def test_axum_text_rejections_are_lorax_own(drv: Driver, app: AppServer) -> None:
    text = "Failed to deserialize the JSON body into the target type: missing field `inputs`"
    app.reply("POST", "/generate", text, status=422, content_type="text/plain; charset=utf-8")
    error = call(drv, drv.wrap(drv.cls(app.url, max_retries=0)), stream=False)
    assert type(error) is errors.RequestDeserializationError
    assert error.hint is None
    assert str(error) == f"{text} (status 422, POST {app.url}/generate)"


def test_html_502_from_a_proxy_is_not_blamed_on_the_url(drv: Driver, app: AppServer) -> None:
    page = "<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"
    app.reply("POST", "/generate", page, status=502, content_type="text/html")
    error = call(drv, drv.wrap(drv.cls(app.url, max_retries=0)), stream=False)
    assert type(error) is errors.ServiceUnavailableError
    assert str(error) == (
        f"502 Bad Gateway (status 502, POST {app.url}/generate): the server answered HTML, not LoRAX JSON "
        "(a proxy in front of LoRAX, or another server)"
    )


def test_get_routes_name_get(drv: Driver, app: AppServer) -> None:
    app.reply("GET", "/info", HTML_404, status=404, content_type="text/html")
    with drv.wrap(drv.cls(app.url, max_retries=0)) as client, pytest.raises(errors.NotFoundError) as info:
        client.info()
    assert str(info.value) == (
        f"404 Not Found (status 404, GET {app.url}/info): the server answered HTML, not LoRAX JSON: is the URL right?"
    )


def test_the_url_shown_has_no_credentials(drv: Driver, app: AppServer) -> None:
    app.reply("POST", "/p/generate", HTML_404, status=404, content_type="text/html")
    url = app.url.replace("http://", "http://alice:pw-CANARY-99@") + "/p"
    error = call(drv, drv.wrap(drv.cls(url, max_retries=0)), stream=False)
    assert error.request_url == f"{app.url}/p/generate"
    text = str(error) + repr(error)
    assert "CANARY" not in text
    assert "alice" not in text


def test_request_and_hint_survive_pickling(drv: Driver, app: AppServer) -> None:
    app.reply("POST", "/generate", HTML_404, status=404, content_type="text/html")
    error = call(drv, drv.wrap(drv.cls(app.url, max_retries=0)), stream=False)
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is errors.NotFoundError
    assert str(copy) == str(error)
    assert (copy.request_method, copy.request_url, copy.hint) == (error.request_method, error.request_url, error.hint)


def test_error_text_rules() -> None:
    # No request: the text is what it was before (message and status).
    assert str(errors.NotFoundError("gone", status_code=404)) == "gone (status 404)"
    assert str(errors.NotFoundError("", status_code=404)) == "status 404"
    error = errors.NotFoundError("gone", status_code=404, request_method="POST", request_url="http://h/x?key=SECRET")
    assert str(error) == "gone (status 404, POST http://h/x)"
    assert str(errors.LoraxError("plain")) == "plain"
