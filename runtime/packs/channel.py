"""Publishing: a channel is a folder of plain static files that any web server can serve.

Layout written by ``publish`` (``ROOT`` is what nginx, a CDN or an object store serves)::

    ROOT/<channel>/index.kidx          signed index: the latest pack of this channel
    ROOT/packs/<pack id>-v<version>.kpack   pack files (immutable: a name is never rewritten)
    ROOT/keys/keys-v<n>.kkeys          optional rotated key list the index points to

The index is an envelope (magic KINDX) whose body is::

    {"format": 1, "channel": "stable", "created": t, "expires": t,
     "pack": {"pack_id", "version", "file", "length", "sha256", "manifest_sha256"},
     "keys": null | {"file", "length", "sha256"}}

A kiosk trusts none of it until the index signature checks out with its trusted keys; the
signed ``length`` is the byte cap of the download and ``sha256`` is checked before the pack
goes to the verifier (which checks the pack's own signature again).
"""

from __future__ import annotations

import hashlib
import re
import shutil
import time
from pathlib import Path
from typing import Any

from runtime.errors import PackExpiredError, PackFormatError, PackSourceError, PackVersionError

from ._fsutil import atomic_write_bytes
from .format import (
    INDEX_MAGIC,
    PackFile,
    encode_envelope,
    manifest_from_bytes,
    pack_obj,
    read_envelope_bytes,
    safe_relpath,
    unpack_limited,
)
from .signing import verify_envelope
from .trust import TrustState

INDEX_NAME = "index.kidx"
MAX_INDEX_BYTES = 64 * 1024
CHANNEL_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")


def index_path(channel: str) -> str:
    return f"{channel}/{INDEX_NAME}"


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while buf := fh.read(1 << 20):
            h.update(buf)
    return h.hexdigest()


def _place_immutable(src: Path, dest: Path) -> None:
    """Copy ``src`` to ``dest`` unless an identical file is there; a different one is an error."""
    if dest.exists():
        if _sha256_file(dest) != _sha256_file(src):
            raise PackSourceError(
                f"{dest} already exists with other content",
                hint="published files are immutable (caches keep them); publish a higher version",
            )
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.copyfile(src, tmp)
    tmp.replace(dest)


def publish(
    pack: Path,
    root: Path,
    channel: str,
    sign,
    *,
    expires_days: float = 30.0,
    key_list: Path | None = None,
    created: int | None = None,
) -> dict[str, Any]:
    """Add ``pack`` to the channel folder ``root`` and point ``channel``'s signed index at it."""
    if not CHANNEL_RE.match(channel):
        raise PackFormatError(
            f"channel name {channel!r} is not valid", hint="use lowercase letters, digits, '-', '_'"
        )
    pack, root = Path(pack), Path(root)
    with PackFile(pack) as pf:
        verify_envelope(pf.envelope, {pf.envelope.public_key}, what=f"pack {pack.name}")
        manifest = manifest_from_bytes(pf.envelope.body)
        pf.bind_manifest(manifest)
        for _ in pf.iter_section_hashes():
            pass
        manifest_sha = hashlib.sha256(pf.envelope.body).hexdigest()
    rel = f"packs/{manifest.pack_id}-v{manifest.version}.kpack"
    _place_immutable(pack, root / rel)
    keys = None
    if key_list is not None:
        data = Path(key_list).read_bytes()
        from .format import KEYS_MAGIC
        from .signing import read_key_list

        env = read_envelope_bytes(data, KEYS_MAGIC, what="key list")
        version = read_key_list(data, {env.public_key})["version"]
        krel = f"keys/keys-v{version}.kkeys"
        _place_immutable(Path(key_list), root / krel)
        keys = {"file": krel, "length": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    now = int(time.time()) if created is None else int(created)
    body = {
        "format": 1,
        "channel": channel,
        "created": now,
        "expires": now + int(expires_days * 86400),
        "pack": {
            "pack_id": manifest.pack_id,
            "version": manifest.version,
            "file": rel,
            "length": (root / rel).stat().st_size,
            "sha256": _sha256_file(root / rel),
            "manifest_sha256": manifest_sha,
        },
        "keys": keys,
    }
    raw = pack_obj(body)
    pub, sig = sign(INDEX_MAGIC + raw)
    atomic_write_bytes(
        root / index_path(channel), encode_envelope(INDEX_MAGIC, raw, pub, sig), mode=0o644
    )
    return body


def read_index(
    data: bytes,
    trusted: set[bytes],
    trust: TrustState,
    channel: str,
    *,
    clock: float | None = None,
    clock_skew_s: int = 300,
) -> dict[str, Any]:
    """Verify a channel index: size, signature, schema, channel, not older than the last one, not expired."""  # noqa: E501
    if len(data) > MAX_INDEX_BYTES:
        raise PackFormatError(
            f"channel index is {len(data)} bytes, over {MAX_INDEX_BYTES}",
            hint="the server is misconfigured or hostile",
        )
    env = read_envelope_bytes(data, INDEX_MAGIC, what="channel index")
    verify_envelope(env, trusted, what="channel index")
    obj = unpack_limited(env.body, what="channel index", max_bin=0, max_items=32, max_depth=2)
    try:
        ok = (
            isinstance(obj, dict)
            and set(obj) == {"format", "channel", "created", "expires", "pack", "keys"}
            and obj["format"] == 1
            and isinstance(obj["channel"], str)
            and type(obj["created"]) is int
            and type(obj["expires"]) is int
            and isinstance(obj["pack"], dict)
            and set(obj["pack"])
            == {"pack_id", "version", "file", "length", "sha256", "manifest_sha256"}
            and type(obj["pack"]["version"]) is int
            and type(obj["pack"]["length"]) is int
            and all(
                isinstance(obj["pack"][k], str)
                for k in ("pack_id", "file", "sha256", "manifest_sha256")
            )
            and (
                obj["keys"] is None
                or (
                    isinstance(obj["keys"], dict)
                    and set(obj["keys"]) == {"file", "length", "sha256"}
                    and isinstance(obj["keys"]["file"], str)
                    and type(obj["keys"]["length"]) is int
                )
            )
        )
    except (TypeError, KeyError):
        ok = False
    if not ok:
        raise PackFormatError(
            "channel index does not match the schema", hint="republish the channel"
        )
    safe_relpath(obj["pack"]["file"], "channel index pack file")
    if obj["keys"]:
        safe_relpath(obj["keys"]["file"], "channel index key list file")
    if obj["channel"] != channel:
        raise PackFormatError(
            f"channel index is for channel {obj['channel']!r}, not {channel!r}",
            hint="check [packs] channel and channel_url",
        )
    if obj["created"] < trust.index.get(channel, 0):
        raise PackVersionError(
            f"channel index of {obj['created']} is older than one already seen "
            f"({trust.index[channel]})",
            hint="the server is serving an old copy (replay or stale cache)",
        )
    now = trust.now(clock)
    if obj["expires"] <= now:
        raise PackExpiredError(
            f"channel index expired at {obj['expires']} (now {now})",
            hint="the publisher must republish the channel; the current pack keeps serving",
        )
    if obj["created"] > now + clock_skew_s:
        raise PackExpiredError(
            "channel index is dated in the future", hint="check the publisher's and kiosk's clocks"
        )
    return obj
