"""Length-prefixed msgpack frames between the server and a worker process.

Why frames and not pickle: the worker runs native model code and is only
semi-trusted; a frame is data (a map with a ``t`` type and a few typed
fields), checked against a size cap before it is read and against a schema
after, so a broken worker can cost a restart but never code execution or an
unbounded allocation in the server.

Wire format: 4-byte big-endian unsigned length, then that many bytes of one
msgpack map. Frames (``t``):

parent → child: ``init`` {config, factory, factory_kwargs, memory_mb, memory_limit},
``request`` {id, prompt, system, max_tokens, stop, max_time_s, temperature},
``cancel`` {id}, ``ping`` {n}.

child → parent: ``ready`` {describe, note, pid}, ``unavailable`` {reason},
``piece`` {id, text}, ``done`` {id, reason}, ``error`` {id, type, message},
``pong`` {n}.
"""

from __future__ import annotations

import socket
import struct
import threading

import msgpack

from runtime.bounded_msgpack import unpack_limited
from runtime.errors import WorkerProtocolError

HEADER = struct.Struct(">I")
MAX_FRAME_BYTES = 1024 * 1024  # a prompt is at most a few tens of kB; a piece a few bytes
MAX_ITEMS = 256  # elements in any map or list inside a frame (stop strings, describe dict)

# Required fields and their types, per frame type. Extra fields are ignored.
_NUM = (int, float)
SCHEMA: dict[str, dict[str, tuple[type, ...]]] = {
    "init": {},
    "request": {"id": (int,), "prompt": (str,), "max_tokens": (int,)},
    "cancel": {"id": (int,)},
    "ping": {"n": (int,)},
    "pong": {"n": (int,)},
    "ready": {"describe": (dict,), "note": (str,), "pid": (int,)},
    "unavailable": {"reason": (str,)},
    "piece": {"id": (int,), "text": (str,)},
    "done": {"id": (int,), "reason": (str,)},
    "error": {"id": (int,), "type": (str,), "message": (str,)},
}


class ConnectionClosed(EOFError):
    """The other side closed the connection (or died) between frames."""


def encode(frame: dict) -> bytes:
    body = msgpack.packb(frame, use_bin_type=True)
    if len(body) > MAX_FRAME_BYTES:
        raise WorkerProtocolError(
            f"a {frame.get('t')!r} frame of {len(body)} bytes is over the "
            f"{MAX_FRAME_BYTES}-byte limit",
            hint="shorten the prompt (the retrieved context) sent to the generator",
        )
    return HEADER.pack(len(body)) + body


def decode(body: bytes, *, max_bytes: int = MAX_FRAME_BYTES) -> dict:
    """One frame body → a checked dict. Raises WorkerProtocolError on anything else."""
    frame = unpack_limited(
        body,
        what="frame from the generator worker",
        max_bin=max_bytes,
        max_items=MAX_ITEMS,
        max_str=max_bytes,
        max_depth=4,  # frames are maps holding lists (stop strings) and small maps (describe)
        error=WorkerProtocolError,
        hint="the worker is restarted; if it repeats, prepare the model again",
    )
    if not isinstance(frame, dict) or frame.get("t") not in SCHEMA:
        kind = frame.get("t") if isinstance(frame, dict) else type(frame).__name__
        raise WorkerProtocolError(
            f"unexpected frame from the generator worker: {str(kind)[:60]!r}",
            hint="the worker is restarted; a server and worker of different versions do not mix",
        )
    for key, types in SCHEMA[frame["t"]].items():
        value = frame.get(key)
        if not isinstance(value, types) or isinstance(value, bool):
            raise WorkerProtocolError(
                f"{frame['t']!r} frame from the generator worker has a bad {key!r} field",
                hint="the worker is restarted; a server and worker of different versions "
                "do not mix",
            )
    return frame


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks = []
    while n:
        chunk = sock.recv(min(n, 65536))
        if not chunk:
            raise ConnectionClosed("connection closed")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def recv_frame(sock: socket.socket, *, max_bytes: int = MAX_FRAME_BYTES) -> dict:
    """Read one frame. The declared length is checked before a byte of the body is read."""
    (size,) = HEADER.unpack(_recv_exact(sock, HEADER.size))
    if size > max_bytes:
        raise WorkerProtocolError(
            f"the generator worker announced a frame of {size} bytes; the limit is {max_bytes}",
            hint="the worker is restarted; if it repeats, prepare the model again",
        )
    return decode(_recv_exact(sock, size), max_bytes=max_bytes)


class FrameWriter:
    """Sends whole frames; one lock so frames from several threads never interleave."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._lock = threading.Lock()

    def send(self, frame: dict) -> None:
        data = encode(frame)
        with self._lock:
            self._sock.sendall(data)
