"""MMP framing (§4.1): a 4-byte big-endian length, then minified UTF-8 JSON. 1 MiB at most."""

from __future__ import annotations

import asyncio
import json
import struct
from typing import Any

MAX_FRAME_BYTES = 1024 * 1024
_HEADER = struct.Struct(">I")


class FrameTooLarge(Exception):
    """Length 0 or over 1 MiB: the protocol says close the connection."""


def dumps(frame: dict[str, Any]) -> bytes:
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def encode_frame(frame: dict[str, Any]) -> bytes:
    body = dumps(frame)
    if len(body) > MAX_FRAME_BYTES:
        raise FrameTooLarge(f"frame of {len(body)} bytes exceeds {MAX_FRAME_BYTES}")
    return _HEADER.pack(len(body)) + body


def decode_body(body: bytes | str) -> dict[str, Any] | None:
    """Parse a frame body; None for anything the protocol says to drop silently."""
    try:
        frame = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):  # deep nesting is hostile input too
        return None
    if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
        return None
    return frame


async def read_frame(reader: asyncio.StreamReader) -> dict[str, Any] | None:
    """Read frames until one parses. Raises FrameTooLarge, or IncompleteReadError at EOF."""
    while True:
        header = await reader.readexactly(_HEADER.size)
        (length,) = _HEADER.unpack(header)
        if length == 0 or length > MAX_FRAME_BYTES:
            raise FrameTooLarge(f"declared frame length {length}")
        body = await reader.readexactly(length)
        frame = decode_body(body)
        if frame is not None:
            return frame
