"""Ed25519 keys and signatures (PyNaCl), and signed key lists for key rotation.

Key files: the private key is ``kiosk-ed25519-private:<64 hex seed>`` in a file created
with mode 0600 (loading refuses a file others can read); the public key is the text
``ed25519:<64 hex>``, the form ``[packs] trusted_keys`` takes.

Rotation: a *key list* is a signed envelope (magic KKEYS) whose body is
``{"format": 1, "version": n, "created": t, "keys": ["ed25519:..", ...]}``. A kiosk accepts
it only when it is signed by a key the kiosk trusts now and its version is above the
last key list it accepted; from then on the list replaces the trusted keys (so the old
key can be retired or revoked). See trust.py for where the accepted list is kept.
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from runtime.errors import PackKeyError, PackSignatureError

from .format import (
    KEYS_MAGIC,
    Envelope,
    encode_envelope,
    pack_obj,
    read_envelope_bytes,
    unpack_limited,
)

PRIVATE_PREFIX = "kiosk-ed25519-private:"
PUBLIC_PREFIX = "ed25519:"


def generate_key() -> SigningKey:
    return SigningKey.generate()


def public_key_text(key: SigningKey | VerifyKey | bytes) -> str:
    raw = bytes(key.verify_key) if isinstance(key, SigningKey) else bytes(key)
    return PUBLIC_PREFIX + raw.hex()


def parse_public_key(text: str) -> bytes:
    """``ed25519:<hex>`` (or bare hex) → 32 raw bytes."""
    value = text.strip()
    if value.startswith(PUBLIC_PREFIX):
        value = value[len(PUBLIC_PREFIX) :]
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise PackKeyError(
            f"trusted key {text[:80]!r} is not an ed25519 public key",
            hint="use the text printed by `kiosk pack keygen` (ed25519:<64 hex digits>)",
        )
    return raw


def save_keypair(path: Path, key: SigningKey) -> Path:
    """Write the private key (0600, never overwritten) and ``<path>.pub``; returns the .pub path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise PackKeyError(
            f"key file {path} already exists",
            hint="choose another path; keys are never overwritten",
        ) from None
    with os.fdopen(fd, "w") as fh:
        fh.write(PRIVATE_PREFIX + bytes(key).hex() + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    pub = path.with_name(path.name + ".pub")
    pub.write_text(public_key_text(key) + "\n", encoding="ascii")
    return pub


def load_private_key(path: Path) -> SigningKey:
    path = Path(path)
    try:
        st = os.stat(path)
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise PackKeyError(
            f"signing key {path} cannot be read ({exc})",
            hint="check the path; create one with `kiosk pack keygen`",
        ) from None
    if stat.S_IMODE(st.st_mode) & 0o077:
        raise PackKeyError(
            f"signing key {path} is readable by other users (mode {stat.S_IMODE(st.st_mode):o})",
            hint=f"run: chmod 600 {path}",
        )
    if not text.startswith(PRIVATE_PREFIX):
        raise PackKeyError(
            f"{path} is not a kiosk signing key", hint="create one with `kiosk pack keygen`"
        )
    try:
        seed = bytes.fromhex(text[len(PRIVATE_PREFIX) :])
        return SigningKey(seed)
    except (ValueError, TypeError):
        raise PackKeyError(
            f"signing key {path} is malformed", hint="create a new one with `kiosk pack keygen`"
        ) from None


def signer(key: SigningKey):
    """A ``sign(message) -> (public_key, signature)`` callable for writers."""

    def sign(message: bytes) -> tuple[bytes, bytes]:
        return bytes(key.verify_key), key.sign(message).signature

    return sign


def verify_envelope(env: Envelope, trusted: set[bytes], *, what: str) -> bytes:
    """Check the one signature over magic + exact body bytes; returns the signer's public key."""
    if not trusted:
        raise PackSignatureError(
            f"{what}: no trusted keys are configured",
            hint="add the publisher's key to [packs] trusted_keys (from `kiosk pack keygen`)",
        )
    if env.public_key not in trusted:
        raise PackSignatureError(
            f"{what}: signed by {public_key_text(env.public_key)[:24]}…, which is not trusted",
            hint="check [packs] trusted_keys, or ask the publisher which key signed it",
        )
    try:
        VerifyKey(env.public_key).verify(env.signed_message, env.signature)
    except BadSignatureError:
        raise PackSignatureError(
            f"{what}: the signature does not match its contents",
            hint="the file was altered; get a fresh copy from the publisher",
        ) from None
    return env.public_key


# --- key lists (rotation) -------------------------------------------------------------------------


def make_key_list(
    signing_key: SigningKey, keys: list[str], version: int, *, created: int | None = None
) -> bytes:
    """A key list signed by ``signing_key`` (a key the kiosks trust now)."""
    for k in keys:
        parse_public_key(k)
    body = pack_obj(
        {
            "format": 1,
            "version": int(version),
            "created": int(created or time.time()),
            "keys": [public_key_text(parse_public_key(k)) for k in keys],
        }
    )
    pub, sig = signer(signing_key)(KEYS_MAGIC + body)
    return encode_envelope(KEYS_MAGIC, body, pub, sig)


def read_key_list(data: bytes, trusted: set[bytes] | None) -> dict:
    """Parse a key list: returns {"version", "created", "keys"} (keys as text).

    ``trusted=None`` parses without checking the signature: only to see the version, so an
    old list (e.g. still on a USB stick after the rotation) is skipped without an error.
    """
    from runtime.errors import PackFormatError

    if len(data) > 64 * 1024:
        raise PackFormatError("key list is over 64 KiB", hint="the file is corrupt or hostile")
    env = read_envelope_bytes(data, KEYS_MAGIC, what="key list")
    if trusted is not None:
        verify_envelope(env, trusted, what="key list")
    obj = unpack_limited(env.body, what="key list", max_bin=0, max_items=64, max_depth=2)
    if (
        not isinstance(obj, dict)
        or set(obj) != {"format", "version", "created", "keys"}
        or obj["format"] != 1
        or type(obj["version"]) is not int
        or type(obj["created"]) is not int
        or not isinstance(obj["keys"], list)
        or not 1 <= len(obj["keys"]) <= 32
        or not all(isinstance(k, str) for k in obj["keys"])
    ):
        raise PackFormatError(
            "key list does not match the schema", hint="the file is corrupt; get a fresh copy"
        )
    keys = [public_key_text(parse_public_key(k)) for k in obj["keys"]]
    return {"version": obj["version"], "created": obj["created"], "keys": keys}
