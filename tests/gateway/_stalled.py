"""A WebSocket client that truly stops reading, for the gateway's backpressure tests."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from types import TracebackType

from websockets.client import ClientProtocol
from websockets.frames import Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

from lorax.transports import _ws_frames as wsf
from lorax.v1.websocket_pb2 import Frame


class StalledClient:
    """A WebSocket client that reads nothing until told to: a raw loopback socket
    speaking the protocol through websockets' sans-I/O ClientProtocol.

    Its receive buffer is small (SO_RCVBUF, set before connecting so that the TCP
    window is small too), and nothing reads the socket until :meth:`frames`, so
    whatever the gateway sends past the kernel's buffers stays in the gateway.
    """

    def __init__(self, url: str, rcvbuf: int = 4096, subprotocol: str | None = wsf.SUBPROTOCOL) -> None:
        uri = parse_uri(url)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(10)
        self.sock.connect((uri.host, uri.port))
        self.protocol = ClientProtocol(
            uri, subprotocols=[Subprotocol(subprotocol)] if subprotocol else None, max_size=None
        )
        self.protocol.send_request(self.protocol.connect())
        self._flush()
        response = None
        while response is None:  # nothing but the handshake's answer can come before a call
            self._read()
            response = next((e for e in self.protocol.events_received() if isinstance(e, Response)), None)
        assert response.status_code == 101, response
        assert self.protocol.state is State.OPEN

    def send(self, data: bytes) -> None:
        self.protocol.send_binary(data)
        self._flush()

    def messages(self) -> Iterator[bytes]:
        """Start reading: the binary messages received, in order (pongs answered on the way)."""
        while True:
            self._read()
            for event in self.protocol.events_received():
                if event.opcode is Opcode.BINARY:
                    yield event.data
            self._flush()

    def frames(self) -> Iterator[Frame]:
        """Start reading: the gateway's frames, in order."""
        for data in self.messages():
            yield Frame.FromString(data)

    def close(self) -> None:
        self.sock.close()

    def _read(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("the gateway closed the connection")
        self.protocol.receive_data(data)

    def _flush(self) -> None:
        for data in self.protocol.data_to_send():
            if data:
                self.sock.sendall(data)

    def __enter__(self) -> StalledClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.sock.close()
