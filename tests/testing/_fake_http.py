"""A raw-socket HTTP/1.1 client for byte-exact assertions (chunk boundaries included)."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import orjson


@dataclass
class Raw:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    chunks: list[bytes] = field(default_factory=list)
    complete: bool = True  # the chunked terminator (or all of content-length) arrived
    head_bytes: bytes = b""

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    @property
    def header_names(self) -> list[str]:
        return [k for k, _ in self.headers]

    def json(self) -> Any:
        return orjson.loads(self.body)


def request(
    url: str,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    *,
    content_type: str | None = "application/json",
    timeout: float = 10.0,
) -> Raw:
    """Send one request with `Connection: close` and read the answer to EOF."""
    parts = urlsplit(url)
    assert parts.hostname is not None
    assert parts.port is not None
    lines = [f"{method} {path} HTTP/1.1", f"Host: {parts.hostname}:{parts.port}", "Connection: close"]
    if content_type is not None and body is not None:
        lines.append(f"Content-Type: {content_type}")
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    for key, value in (headers or {}).items():
        lines.append(f"{key}: {value}")
    payload = ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as sock:
        sock.sendall(payload)
        data = bytearray()
        while True:
            try:
                got = sock.recv(65536)
            except ConnectionResetError:
                break
            if not got:
                break
            data += got
    return parse(bytes(data))


def parse(data: bytes) -> Raw:
    if not data:
        return Raw(status=0, headers=[], body=b"", complete=False)
    head, _, rest = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    status = int(status_line.split(" ")[1])
    headers = []
    for line in header_lines:
        key, _, value = line.partition(":")
        headers.append((key, value.strip()))
    raw = Raw(status=status, headers=headers, body=b"", head_bytes=head)
    if raw.header("transfer-encoding") == "chunked":
        chunks = []
        complete = False
        while rest:
            size_line, sep, rest = rest.partition(b"\r\n")
            if not sep:
                break
            size = int(size_line, 16)
            if size == 0:
                complete = rest.startswith(b"\r\n")
                break
            if len(rest) < size + 2:
                chunks.append(rest[:size])
                break
            chunks.append(rest[:size])
            rest = rest[size + 2 :]
        raw.chunks = chunks
        raw.body = b"".join(chunks)
        raw.complete = complete
    else:
        length = raw.header("content-length")
        raw.body = rest
        raw.complete = length is None or len(rest) == int(length)
    return raw


def post(url: str, path: str, obj: object, **kw: Any) -> Raw:
    return request(url, "POST", path, orjson.dumps(obj), **kw)


def sse_events(body: bytes) -> list[bytes]:
    """The data payloads of a LoRAX SSE body (keep-alive comments skipped)."""
    out = []
    for frame in body.split(b"\n\n"):
        if frame.startswith(b"data: "):
            out.append(frame[len(b"data: ") :])
    return out
