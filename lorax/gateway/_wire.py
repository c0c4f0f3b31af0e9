"""The bytes of a response message's WebSocket frame, written in one pass.

The gateway's per-token work: a ``Frame(call_id, message=FrameMessage(message=...))``
(websocket.proto) inside an unmasked binary WebSocket frame (RFC 6455 5.2). The call's
part of it is built once per call (:func:`message_prefix`); per message, one join
writes the WebSocket header, the rest of the ``Frame`` and the message's own bytes
(:func:`message_wire`). The bytes are those of ``wsf.encode_message`` inside what
websockets' ``Frame.serialize()`` writes for a server without extensions.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping

from lorax._pbwire import VARINTS, _varint

__all__ = ["end_frame", "headers_frame", "message_prefix", "message_wire", "message_wires"]

# Varints of 0..16383 (one or two bytes): every length and call id of an ordinary call
# (the table of lorax/_pbwire.py, shared).
_VARINTS = VARINTS

_FRAME_CALL_ID = b"\x08"  # Frame.call_id: field 1, varint
_FRAME_MESSAGE = b"\x22"  # Frame.message: field 4, length-delimited
_FRAME_HEADERS = b"\x1a"  # Frame.headers: field 3, length-delimited
_MESSAGE_BYTES = b"\x0a"  # FrameMessage.message: field 1, length-delimited
_LEN16 = struct.Struct("!BBH").pack
_LEN64 = struct.Struct("!BBQ").pack


def message_prefix(call_id: int) -> bytes:
    """The bytes of a call's message frames before the FrameMessage's length."""
    if not 0 < call_id < 1 << 64:
        raise ValueError(f"call id {call_id} is out of range")
    return _FRAME_CALL_ID + _varint(call_id) + _FRAME_MESSAGE


def message_wire(prefix: bytes, payload: bytes) -> tuple[bytes, int]:
    """(the WebSocket frame carrying the call's FrameMessage of `payload`, the size of
    the ``Frame`` in it: what the frame limit and the memory budgets count)."""
    n = len(payload)
    if n:
        head = _VARINTS[n] if n < 16384 else _varint(n)
        inner = 1 + len(head) + n
        length = _VARINTS[inner] if inner < 16384 else _varint(inner)
        size = len(prefix) + len(length) + inner
        if size < 126:
            ws = bytes((0x82, size))
        elif size < 1 << 16:
            ws = _LEN16(0x82, 126, size)
        else:
            ws = _LEN64(0x82, 127, size)
        return b"".join((ws, prefix, length, _MESSAGE_BYTES, head, payload)), size
    # An empty message: an empty FrameMessage (proto3 leaves the empty bytes out).
    size = len(prefix) + 1
    return bytes((0x82, size)) + prefix + b"\x00", size


def _string(data: bytes) -> bytes:
    n = len(data)
    return (_VARINTS[n] if n < 16384 else _varint(n)) + data


def headers_frame(call_id: int, status: int, headers: Mapping[str, str], window_bytes: int | None = None) -> bytes:
    """The serialized ``Frame`` carrying ``FrameHeaders(status, headers, window_bytes)``:
    what ``wsf.encode_headers`` gives, without building two upb messages and a map.

    The same message, not always the same bytes: upb writes map entries in its own
    order, this in the mapping's (protobuf leaves the order of map entries open).
    Every map entry has both its key and value, as upb writes them.
    """
    if not 0 < call_id < 1 << 64 or not 0 <= status < 1 << 32:
        raise ValueError(f"call id {call_id} or status {status} is out of range")
    parts = [_FRAME_CALL_ID, _varint(call_id), _FRAME_HEADERS]
    body = [b"\x08" + _varint(status)] if status else []  # FrameHeaders.status: field 1, varint
    for name, value in headers.items():
        entry = b"\x0a" + _string(name.encode("utf-8")) + b"\x12" + _string(value.encode("utf-8"))
        body.append(b"\x12" + _string(entry))  # FrameHeaders.headers: field 2, map entries
    if window_bytes:
        if not 0 < window_bytes < 1 << 64:
            raise ValueError(f"window_bytes {window_bytes} is out of range")
        body.append(b"\x18" + _varint(window_bytes))  # FrameHeaders.window_bytes: field 3, varint
    parts.append(_string(b"".join(body)))
    return b"".join(parts)


def end_frame(call_id: int) -> bytes:
    """The serialized ``Frame`` carrying ``FrameEnd``: the bytes of ``wsf.encode_end``."""
    if not 0 < call_id < 1 << 64:
        raise ValueError(f"call id {call_id} is out of range")
    return _FRAME_CALL_ID + _varint(call_id) + b"\x2a\x00"  # Frame.end: field 5, empty


def message_wires(prefix: bytes, payloads: list[bytes]) -> tuple[list[bytes], list[int]]:
    """:func:`message_wire` of each of `payloads` (the messages of one upstream read):
    (the WebSocket frames, the ``Frame`` sizes), in one loop."""
    wires: list[bytes] = []
    sizes: list[int] = []
    add_wire = wires.append
    add_size = sizes.append
    varints = _VARINTS
    fixed = len(prefix)
    join = b"".join
    for payload in payloads:
        n = len(payload)
        if 0 < n < 16000:  # both varints from the table (inner < 16384)
            head = varints[n]
            inner = 1 + len(head) + n
            length = varints[inner]
            size = fixed + len(length) + inner
            if size < 126:
                add_wire(join((bytes((0x82, size)), prefix, length, _MESSAGE_BYTES, head, payload)))
            else:
                add_wire(join((_LEN16(0x82, 126, size), prefix, length, _MESSAGE_BYTES, head, payload)))
            add_size(size)
        else:
            wire, size = message_wire(prefix, payload)
            add_wire(wire)
            add_size(size)
    return wires, sizes
