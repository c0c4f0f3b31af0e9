"""What every ``lorax`` subcommand shares: options, client construction, error reporting.

Secrets (``--api-token``, the environment's tokens, credential headers) are collected
once into a :class:`lorax._redact.Secrets` and scrubbed from everything the command prints on
stderr: error lines, argparse complaints and, with ``--debug``, every log record and
traceback. They only ever leave the process in request headers.
"""

from __future__ import annotations

import argparse
import difflib
import logging
import sys
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, NoReturn
from urllib.parse import urlsplit, urlunsplit

import orjson

from lorax._redact import Secrets, redact_url
from lorax.errors import LoraxError

__all__ = [
    "DEFAULT_ENDPOINT",
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_TERMINATED",
    "EXIT_USAGE",
    "GATEWAY_TOKEN_ENV",
    "CliParser",
    "Connection",
    "Context",
    "UsageError",
    "add_adapter_options",
    "add_connection_options",
    "add_native_generation_options",
    "add_sampling_options",
    "chat_kwargs",
    "connection_option_names",
    "error_line",
    "generate_kwargs",
    "hoist_connection_options",
    "is_secret_option",
    "load_json_arg",
    "make_async_client",
    "make_client",
    "read_text_arg",
    "resolve_connection",
    "secrets_from_argv",
    "setup_logging",
]

EXIT_OK = 0
EXIT_ERROR = 1  # the server or the network failed, or the answer was negative (unhealthy)
EXIT_USAGE = 2  # argparse's own code for a bad command line
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C
EXIT_TERMINATED = 143  # 128 + SIGTERM

DEFAULT_ENDPOINT = "http://127.0.0.1:8080"
ENDPOINT_ENV = "LORAX_ENDPOINT"
# Checked in this order; the Predibase name is what Predibase's own tools export.
TOKEN_ENVS = ("LORAX_API_TOKEN", "PREDIBASE_API_TOKEN")
# The token of a lorax gateway started with --auth-token: the same variable the gateway
# reads (lorax/gateway/cli.py), so one exported value serves both ends.
GATEWAY_TOKEN_ENV = "LORAX_GATEWAY_TOKEN"
# Options whose values are credentials: hidden wherever the command line is echoed.
TOKEN_FLAGS = ("--api-token", "--gateway-token")
# An unknown option whose name holds one of these (or is close to a TOKEN_FLAGS name)
# may carry a credential: its value is hidden too. Other values are shown as given.
_SECRET_WORDS = ("token", "secret", "password", "passwd", "key", "auth", "cookie", "credential")

logger = logging.getLogger("lorax.cli")


class UsageError(Exception):
    """A command line that parsed but does not make sense (exit code 2)."""


# ---------------------------------------------------------------------------------
# Secrets


def secrets_from_argv(argv: Sequence[str], environ: Mapping[str, str]) -> Secrets:
    """The run's secrets visible before parsing, so even argparse's own errors can be scrubbed."""
    secrets = Secrets(environ.get(name, "") for name in (*TOKEN_ENVS, GATEWAY_TOKEN_ENV))
    for i, arg in enumerate(argv):
        for flag in TOKEN_FLAGS:
            if arg == flag and i + 1 < len(argv):
                secrets.add(argv[i + 1])
            elif arg.startswith(flag + "="):
                secrets.add(arg[len(flag) + 1 :])
        if arg in ("--header", "-H") and i + 1 < len(argv):
            _add_header_secret(secrets, argv[i + 1])
        elif arg.startswith("--header="):
            _add_header_secret(secrets, arg[len("--header=") :])
    return secrets


def _add_header_secret(secrets: Secrets, header: str) -> None:
    name, sep, value = header.partition(":")
    if sep:
        secrets.add_header(name.strip(), value.strip())


class ScrubbingFormatter(logging.Formatter):
    """A formatter whose output (tracebacks included) has the run's secrets removed."""

    def __init__(self, fmt: str, secrets: Secrets) -> None:
        super().__init__(fmt)
        self._secrets = secrets

    def format(self, record: logging.LogRecord) -> str:
        return self._secrets.scrub(super().format(record))


def setup_logging(debug: bool, secrets: Secrets, stream: IO[str] | None = None) -> Callable[[], None]:
    """Send the ``lorax`` logger to stderr: DEBUG with ``--debug``, warnings otherwise.

    The library itself never configures logging; the command line is an application,
    so it does, with a scrubbing formatter. Returns a function that puts the logger back
    as it was, for :func:`lorax.cli.main` called inside another program (or a test).
    """
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    # Plain messages for the occasional warning; timestamps and sources when debugging.
    fmt = "%(asctime)s %(name)s %(levelname)s %(message)s" if debug else "%(message)s"
    handler.setFormatter(ScrubbingFormatter(fmt, secrets))
    root = logging.getLogger("lorax")
    saved = (root.level, root.propagate)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.WARNING)
    # The CLI prints its own error line; records must not also reach a root handler.
    root.propagate = False

    def restore() -> None:
        root.removeHandler(handler)
        root.setLevel(saved[0])
        root.propagate = saved[1]

    return restore


def error_line(exc: BaseException, secrets: Secrets) -> str:
    """The one line printed for a failed command: ``lorax: error: <Class>: <message>``."""
    if isinstance(exc, LoraxError):
        message = str(exc)
    elif isinstance(exc, OSError) and exc.strerror:
        message = f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    else:
        message = str(exc)
    # One line, whatever the server put in its message (an HTML page, a multi-line trace).
    message = " ".join(message.split())
    text = f"lorax: error: {type(exc).__name__}: {message}" if message else f"lorax: error: {type(exc).__name__}"
    return secrets.scrub(text)


def log_traceback(exc: BaseException) -> None:
    """With ``--debug``, the traceback goes through the scrubbing log handler."""
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip())


class CliParser(argparse.ArgumentParser):
    """An ArgumentParser whose error messages are scrubbed of secrets.

    argparse echoes offending values ("unrecognized arguments: ..."); a mistyped
    ``--api-tokn SECRET`` must not put the token on the terminal or in a CI log. An
    unknown option is reported by the subcommand it was given to, with its usage and a
    "did you mean" for a close option name.
    """

    secrets: Secrets = Secrets()

    def parse_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> argparse.Namespace:
        """Like argparse's, but unknown options are reported by their subcommand's parser."""
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            # A subcommand parser collects what it does not know and hands it up here;
            # the complaint belongs to it (its usage, its option names).
            target = getattr(parsed, "_parser", None)
            if not isinstance(target, CliParser):
                target = self
            target.error(target.unrecognized(extras))
        return parsed

    def unrecognized(self, extras: Sequence[str]) -> str:
        """The message for `extras`: the values of secret-looking options hidden, and a
        "did you mean" for each unknown option with a close known name."""
        known = sorted(o for o in self._option_string_actions if o.startswith("--"))
        shown: list[str] = []
        guesses: list[tuple[str, str]] = []
        hide_next = False
        for extra in extras:
            if hide_next:
                shown.append("<value hidden>")
                hide_next = False
                continue
            if not (extra.startswith("-") and len(extra) > 1) or _is_number(extra):
                shown.append(extra)
                continue
            name, eq, _ = extra.partition("=")
            close = close_options(name, known)
            secret = is_secret_option(name) or any(c in TOKEN_FLAGS for c in close)
            if eq:
                shown.append(f"{name}=<value hidden>" if secret else extra)
            else:
                shown.append(name)
                hide_next = secret
            if close:
                guesses.append((name, " or ".join(close)))
        message = "unrecognized arguments: " + " ".join(shown)
        if len(guesses) == 1:
            message += f"; did you mean {guesses[0][1]}?"
        elif guesses:
            message += "; did you mean " + ", ".join(f"{good} (for {bad})" for bad, good in guesses) + "?"
        return message

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, self.secrets.scrub(f"{self.prog}: error: {message}\n"))


def close_options(name: str, known: Iterable[str]) -> list[str]:
    """The known option names closest to `name` (difflib ratio >= 0.6): the best one,
    and a second that is as close (``--max-token``: ``--api-token`` or
    ``--max-new-tokens``), so that an ambiguous typo is not guessed wrong."""
    scored = sorted(((difflib.SequenceMatcher(None, name, k).ratio(), k) for k in known), reverse=True)
    if not scored or scored[0][0] < 0.6:
        return []
    best = scored[0][0]
    return [k for ratio, k in scored[:2] if ratio >= 0.6 and best - ratio <= 0.02]


def is_secret_option(name: str) -> bool:
    """Whether an option name (known or not) may carry a credential as its value:
    a token option, or one whose name says credential (``--my-token``, ``--password``;
    not ``--max-tokens``)."""
    lowered = name.lower()
    if lowered in TOKEN_FLAGS:
        return True
    return any(word in lowered.replace("tokens", "") for word in _SECRET_WORDS)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def connection_option_names() -> dict[str, bool]:
    """Every connection option string, and whether it takes a value (``--endpoint``: True)."""
    scratch = argparse.ArgumentParser(add_help=False)
    add_connection_options(scratch)
    return {name: action.nargs != 0 for action in scratch._actions for name in action.option_strings}


def hoist_connection_options(argv: Sequence[str], commands: Iterable[str], top_level: Iterable[str] = ()) -> list[str]:
    """`argv` with the connection options given before the subcommand moved just after it.

    ``lorax --endpoint URL generate PROMPT`` then parses as ``lorax generate --endpoint
    URL PROMPT``; an option given after the subcommand too is read later, so it wins
    (``--header`` values add up). The `top_level` options (``--debug``, ``--version``)
    stay where they are. An unknown option before the subcommand moves too, with the
    word after it unless that is the subcommand, so that the subcommand reports it
    with a "did you mean" rather than taking its value for a subcommand name.
    """
    names = connection_option_names()
    wanted = set(commands)
    keep = set(top_level)
    head: list[str] = []
    moved: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            break
        if arg in wanted:
            return [*head, arg, *moved, *argv[i + 1 :]]
        name, eq, _ = arg.partition("=")
        if name in names:
            takes_value = names[name] and not eq
            moved.extend(argv[i : i + 2] if takes_value else [arg])
            i += 2 if takes_value else 1
            continue
        if arg.startswith("-") and len(arg) > 1 and name not in keep:
            nxt = argv[i + 1] if i + 1 < len(argv) else None
            takes_value = not eq and nxt is not None and nxt not in wanted and not nxt.startswith("-")
            moved.extend(argv[i : i + 2] if takes_value else [arg])
            i += 2 if takes_value else 1
            continue
        head.append(arg)
        i += 1
    return list(argv)


@dataclass
class Context:
    """What a subcommand runs with: its streams, the environment and the run's secrets.

    Passed explicitly (rather than read from ``sys``) so that tests and embedding
    applications can call :func:`lorax.cli.main` with their own streams.
    """

    stdout: IO[str]
    stderr: IO[str]
    stdin: IO[str]
    environ: Mapping[str, str]
    secrets: Secrets

    def connection(self, args: argparse.Namespace) -> Connection:
        """The run's :class:`Connection`, from the options and the environment."""
        return resolve_connection(args, self.environ, self.secrets)


# ---------------------------------------------------------------------------------
# Options


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


_positive_int.__name__ = "positive int"
_non_negative_int.__name__ = "non-negative int"
_positive_float.__name__ = "positive number"


def add_connection_options(
    parser: argparse.ArgumentParser,
    *,
    max_retries_default: int | None = None,
    timeout_default: float = 60.0,
    retries_help: str = "retries for refused connections, 429, 503 and overloaded",
) -> None:
    """Where the server is and how to reach it; shared by every client subcommand.

    The defaults only feed the help text: an option not given stays None, and the
    subcommand applies its own default.
    """
    group = parser.add_argument_group("connection")
    group.add_argument(
        "--endpoint",
        metavar="URL",
        help=f"LoRAX server, or ws:// URL of a lorax gateway (env {ENDPOINT_ENV}; default {DEFAULT_ENDPOINT})",
    )
    group.add_argument(
        "--api-token",
        metavar="TOKEN",
        help="sent as 'Authorization: Bearer TOKEN'; never printed. Prefer env LORAX_API_TOKEN or "
        "PREDIBASE_API_TOKEN: a command line is visible to other users",
    )
    group.add_argument(
        "--gateway-token",
        metavar="TOKEN",
        help=f"token of a lorax gateway started with --auth-token (env {GATEWAY_TOKEN_ENV}): sent as "
        "'Authorization: Bearer TOKEN' in the WebSocket handshake only, never to LoRAX; never printed",
    )
    group.add_argument(
        "-H",
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="extra request header (repeatable)",
    )
    group.add_argument(
        "--transport",
        choices=("http", "ws"),
        help="http (REST + SSE) or ws (a lorax gateway); default: from the endpoint's scheme",
    )
    group.add_argument(
        "--timeout",
        type=_positive_float,
        metavar="SECONDS",
        help=f"connect and read (idle) timeout (default {timeout_default:g})",
    )
    retries_help += f" (default {max_retries_default if max_retries_default is not None else 2})"
    group.add_argument(
        "--max-retries", type=_non_negative_int, default=max_retries_default, metavar="N", help=retries_help
    )
    group.add_argument("--predibase-tenant", metavar="TENANT", help="with --predibase-deployment: a Predibase endpoint")
    group.add_argument("--predibase-deployment", metavar="NAME", help="the Predibase deployment to call")


def add_adapter_options(parser: argparse.ArgumentParser) -> None:
    """``--adapter-id`` and ``--adapter-source``."""
    group = parser.add_argument_group("adapter")
    group.add_argument("--adapter-id", metavar="ID", help="LoRA adapter to apply (default: the base model)")
    group.add_argument("--adapter-source", metavar="SOURCE", help="where LoRAX loads it from: hub, local, s3, pbase")


def add_sampling_options(parser: argparse.ArgumentParser, *, chat: bool = False) -> None:
    """Generation parameters that both the native and the chat routes take.

    With `chat`, ``--max-tokens`` (the name ``Client.chat`` and OpenAI use) is another
    spelling of ``--max-new-tokens``.
    """
    group = parser.add_argument_group("generation")
    if chat:
        group.add_argument(
            "--max-new-tokens",
            "--max-tokens",
            dest="max_new_tokens",
            type=_positive_int,
            metavar="N",
            help="generate at most N tokens (both names mean the same)",
        )
    else:
        group.add_argument("--max-new-tokens", type=_positive_int, metavar="N", help="generate at most N tokens")
    group.add_argument("--temperature", type=float, metavar="T", help="sampling temperature")
    group.add_argument("--top-p", type=float, metavar="P", help="nucleus sampling: keep tokens up to this mass")
    group.add_argument("--top-k", type=_positive_int, metavar="K", help="sample among the K likeliest tokens")
    group.add_argument("--seed", type=_non_negative_int, metavar="N", help="random seed, for repeatable sampling")
    group.add_argument("--stop", action="append", metavar="TEXT", help="stop sequence (repeatable)")
    group.add_argument("--repetition-penalty", type=float, metavar="X", help="penalise repeats (1.0: none)")
    group.add_argument(
        "--response-format-schema",
        metavar="FILE_OR_JSON",
        help="constrain the output to this JSON schema (a file, or the schema itself)",
    )


def add_native_generation_options(parser: argparse.ArgumentParser, *, details: bool = True) -> None:
    """Options only the native ``/generate`` routes have."""
    group = parser.add_argument_group("native generation")
    group.add_argument("--do-sample", action="store_true", help="sample instead of greedy decoding")
    group.add_argument("--return-full-text", action="store_true", help="prepend the prompt to the output")
    if details:
        group.add_argument("--details", action="store_true", help="show finish reason and token counts on stderr")


# ---------------------------------------------------------------------------------
# From options to a client


@dataclass(frozen=True)
class Connection:
    """The resolved connection settings of one run."""

    base_url: str | None = None
    predibase: tuple[str, str] | None = None
    token: str | None = field(default=None, repr=False)
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    timeout: float | None = None
    max_retries: int | None = None
    gateway_token: str | None = field(default=None, repr=False)
    # Where the Authorization header came from, named in a 401/403 message.
    token_source: str | None = None

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for Client/AsyncClient beyond the URL (unset ones left out)."""
        kwargs: dict[str, Any] = {}
        if self.timeout is not None:
            kwargs["timeout"] = self.timeout
        if self.max_retries is not None:
            kwargs["max_retries"] = self.max_retries
        if self.gateway_token:
            # The handshake with the gateway only: the client's own headers travel with
            # each call and are forwarded to LoRAX.
            kwargs["gateway_headers"] = {"Authorization": f"Bearer {self.gateway_token}"}
        return kwargs


def parse_headers(values: Sequence[str]) -> dict[str, str]:
    """``['Name: value', ...]`` as a dict; raises UsageError on a malformed one."""
    headers: dict[str, str] = {}
    for raw in values:
        name, sep, value = raw.partition(":")
        name = name.strip()
        if not sep or not name or any(c.isspace() for c in name):
            # Never echo the value: it may be a credential.
            raise UsageError(f"--header must look like 'Name: value' (got one starting {name[:20]!r})")
        headers[name] = value.strip()
    return headers


def resolve_connection(args: argparse.Namespace, environ: Mapping[str, str], secrets: Secrets) -> Connection:
    """Turn the connection options (and the environment) into a :class:`Connection`.

    Raises:
        UsageError: contradictory or malformed options.
    """
    headers = parse_headers(args.header)
    for name, value in headers.items():
        secrets.add_header(name, value)
    token: str | None = args.api_token
    source = "--api-token" if token is not None else None
    if token is None:
        env_name = next((name for name in TOKEN_ENVS if environ.get(name)), None)
        if env_name is not None:
            token, source = environ[env_name], f"the {env_name} environment variable"
    secrets.add(token)
    if any(name.lower() == "authorization" for name in headers):
        source = "the Authorization header given with -H/--header"
    gateway_token: str | None = args.gateway_token
    explicit_gateway_token = gateway_token is not None
    if gateway_token is None:
        gateway_token = environ.get(GATEWAY_TOKEN_ENV) or None
    secrets.add(gateway_token)
    tenant, deployment = args.predibase_tenant, args.predibase_deployment
    if (tenant is None) != (deployment is None):
        raise UsageError("--predibase-tenant and --predibase-deployment go together")
    if tenant is not None and deployment is not None:
        if args.endpoint is not None:
            raise UsageError("give either --endpoint or --predibase-tenant/--predibase-deployment, not both")
        if args.transport == "ws":
            raise UsageError("Predibase endpoints speak HTTP only; drop --transport ws")
        if explicit_gateway_token:
            raise UsageError("--gateway-token is for a lorax gateway; Predibase endpoints take --api-token")
        if not token and source is None:
            raise UsageError(
                "a Predibase deployment needs an API token: --api-token, or env "
                + " or ".join(TOKEN_ENVS)
                + " (a command line is visible to other users: prefer the environment)"
            )
        return Connection(
            predibase=(tenant, deployment),
            token=token,
            headers=headers,
            timeout=args.timeout,
            max_retries=args.max_retries,
            token_source=source,
        )
    base_url = args.endpoint or environ.get(ENDPOINT_ENV) or DEFAULT_ENDPOINT
    base_url = _apply_transport(base_url, args.transport)
    if urlsplit(base_url).scheme.lower() not in ("ws", "wss"):
        if explicit_gateway_token:
            raise UsageError("--gateway-token is for a lorax gateway: a ws:// endpoint, or --transport ws")
        gateway_token = None  # the environment's is for gateways only
    if token and not any(name.lower() == "authorization" for name in headers):
        headers["Authorization"] = f"Bearer {token}"
    return Connection(
        base_url=base_url,
        token=token,
        headers=headers,
        timeout=args.timeout,
        max_retries=args.max_retries,
        gateway_token=gateway_token,
        token_source=source,
    )


def _apply_transport(url: str, transport: str | None) -> str:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https", "ws", "wss") or not parts.netloc:
        raise UsageError(f"--endpoint must be an http(s):// or ws(s):// URL, got {redact_url(url)!r}")
    if transport == "ws" and scheme in ("http", "https"):
        # The same host and port, spoken to as a lorax gateway.
        return urlunsplit(({"http": "ws", "https": "wss"}[scheme], *parts[1:]))
    if transport == "http" and scheme in ("ws", "wss"):
        raise UsageError("--transport http needs an http(s):// endpoint; ws:// URLs are lorax gateways")
    return url


def make_client(conn: Connection) -> Any:
    """A :class:`lorax.Client` for `conn` (typed Any: the import stays lazy)."""
    from lorax.client import Client

    client: Any
    if conn.predibase is not None:
        client = Client.from_predibase(
            *conn.predibase, api_token=conn.token, headers=dict(conn.headers), **conn.client_kwargs()
        )
    else:
        assert conn.base_url is not None
        client = Client(conn.base_url, headers=dict(conn.headers), **conn.client_kwargs())
    return _name_token_source(client, conn)


def make_async_client(conn: Connection, **extra: Any) -> Any:
    """A :class:`lorax.AsyncClient` for `conn`; `extra` overrides constructor arguments."""
    from lorax.client import AsyncClient

    kwargs = {**conn.client_kwargs(), **extra}
    client: Any
    if conn.predibase is not None:
        client = AsyncClient.from_predibase(*conn.predibase, api_token=conn.token, headers=dict(conn.headers), **kwargs)
    else:
        assert conn.base_url is not None
        client = AsyncClient(conn.base_url, headers=dict(conn.headers), **kwargs)
    return _name_token_source(client, conn)


def _name_token_source(client: Any, conn: Connection) -> Any:
    # A 401/403 then names the option or variable the user set ("--api-token", "the
    # LORAX_API_TOKEN environment variable"), not the client argument the CLI used.
    if conn.token_source is not None:
        client._auth_source = conn.token_source
    return client


# ---------------------------------------------------------------------------------
# Inputs


def read_text_arg(value: str, stdin: IO[str] | None = None) -> str:
    """A prompt argument: the text itself, or all of stdin when it is ``-``.

    One trailing newline is dropped from stdin: ``echo text | lorax generate -`` means
    the prompt ``text``; the newline is the shell's, not the user's.
    """
    if value != "-":
        return value
    stream = stdin if stdin is not None else sys.stdin
    text = stream.read()
    if text.endswith("\r\n"):
        return text[:-2]
    return text[:-1] if text.endswith("\n") else text


def load_json_arg(value: str, what: str) -> Any:
    """A JSON value given inline or as a file path (an existing file wins).

    Raises:
        UsageError: neither a readable file nor valid JSON.
    """
    path = Path(value)
    text: str | bytes
    if not value.lstrip().startswith(("{", "[")) and path.is_file():
        try:
            text = path.read_bytes()
        except OSError as exc:
            raise UsageError(f"{what}: cannot read {value}: {exc.strerror}") from None
        source = value
    else:
        text, source = value, "the argument"
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        if source == "the argument" and not value.lstrip().startswith(("{", "[")):
            raise UsageError(f"{what}: {value!r} is neither a file nor JSON") from None
        raise UsageError(f"{what}: invalid JSON in {source}: {exc}") from None


def _response_format(args: argparse.Namespace) -> dict[str, Any] | None:
    raw = getattr(args, "response_format_schema", None)
    if raw is None:
        return None
    return {"type": "json_object", "schema": load_json_arg(raw, "--response-format-schema")}


def generate_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments for ``generate``/``generate_stream`` from the options that were given."""
    kwargs: dict[str, Any] = {}
    for option, name in (
        ("adapter_id", "adapter_id"),
        ("adapter_source", "adapter_source"),
        ("max_new_tokens", "max_new_tokens"),
        ("temperature", "temperature"),
        ("top_p", "top_p"),
        ("top_k", "top_k"),
        ("seed", "seed"),
        ("stop", "stop_sequences"),
        ("repetition_penalty", "repetition_penalty"),
    ):
        value = getattr(args, option, None)
        if value is not None:
            kwargs[name] = value
    for flag in ("do_sample", "return_full_text"):
        if getattr(args, flag, False):
            kwargs[flag] = True
    response_format = _response_format(args)
    if response_format is not None:
        kwargs["response_format"] = response_format
    return kwargs


def chat_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments for ``chat``/``chat_stream`` from the options that were given."""
    kwargs: dict[str, Any] = {}
    for option, name in (
        ("adapter_id", "adapter_id"),
        ("adapter_source", "adapter_source"),
        ("max_new_tokens", "max_tokens"),
        ("temperature", "temperature"),
        ("top_p", "top_p"),
        ("top_k", "top_k"),
        ("seed", "seed"),
        ("stop", "stop"),
        ("repetition_penalty", "repetition_penalty"),
    ):
        value = getattr(args, option, None)
        if value is not None:
            kwargs[name] = value
    response_format = _response_format(args)
    if response_format is not None:
        kwargs["response_format"] = response_format
    return kwargs
