"""msgpack from untrusted or semi-trusted bytes, with every limit set.

Packs (runtime/packs/format.py) and the generator worker's frames
(runtime/workers/protocol.py) decode msgpack they did not write. msgpack's C
unpacker refuses declared lengths above the limits before allocating, and its
parse stack is fixed-size (a deep nest fails with StackError, not a crash); the
nesting depth of what it returns is then checked without recursion. Each
caller says which typed error to raise, so the message names its subsystem.
"""

from __future__ import annotations

from typing import Any

import msgpack

from runtime.errors import KioskError

# Everything msgpack.unpackb raises on bad, over-limit or hostile input.
DECODE_ERRORS = (
    ValueError,
    msgpack.exceptions.ExtraData,
    msgpack.exceptions.StackError,
    msgpack.exceptions.FormatError,
    TypeError,
    UnicodeDecodeError,
)


def unpack_limited(
    data: bytes,
    *,
    what: str,
    max_bin: int,
    max_items: int,
    max_str: int,
    max_depth: int,
    error: type[KioskError],
    hint: str,
) -> Any:
    """``data`` decoded under the limits, or ``error`` naming ``what`` and why."""
    try:
        obj = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            use_list=True,
            max_str_len=max_str,
            max_bin_len=max_bin,
            max_array_len=max_items,
            max_map_len=max_items,
            max_ext_len=0,
        )
    except DECODE_ERRORS as exc:
        raise error(
            f"{what}: invalid or over-limit msgpack ({type(exc).__name__}: {str(exc)[:120]})",
            hint=hint,
        ) from None
    check_depth(obj, max_depth, what, error=error, hint=hint)
    return obj


def check_depth(
    obj: Any, max_depth: int, what: str, *, error: type[KioskError], hint: str
) -> None:
    """Raise ``error`` when lists/maps nest deeper than ``max_depth`` (iterative, no recursion)."""
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (list, dict)):
            if depth > max_depth:
                raise error(f"{what}: nested deeper than {max_depth} levels", hint=hint)
            children = item.values() if isinstance(item, dict) else item
            for child in children:
                if isinstance(child, (list, dict)):
                    stack.append((child, depth + 1))
