"""One verifier for every source: checks a staged pack file in the order of rule 1.

size cap → signature over the exact manifest bytes → manifest schema (bounded msgpack)
→ exact file length → every section's sha256 (streamed) → version above the highest
ever accepted → expiry and future dating under the clock policy → compatibility
(locale, runtime version) → embedding binding. Nothing is unpacked before all of this
passes; every failure is a typed PackError and changes no state.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from runtime import __version__ as RUNTIME_VERSION
from runtime.errors import (
    PackCompatibilityError,
    PackExpiredError,
    PackFormatError,
    PackVersionError,
)

from .format import EmbeddingBinding, Manifest, PackFile, manifest_from_bytes
from .signing import verify_envelope
from .trust import TrustState


@dataclass
class VerifyPolicy:
    trusted_keys: set[bytes]
    max_bytes: int
    binding: (
        EmbeddingBinding | None
    )  # None: skip the binding check (inspect/verify on the central side)
    locales: tuple[str, ...] = ()  # kiosk languages; () skips the locale check
    runtime_version: str = RUNTIME_VERSION
    clock_skew_s: int = 300
    clock: Callable[[], float] | None = None  # tests set the system clock


@dataclass
class VerifiedPack:
    path: Path
    manifest: Manifest
    manifest_bytes: bytes
    manifest_sha256: str
    signer: bytes
    size: int
    notes: list[str] = field(default_factory=list)


def _vtuple(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.split(".")[:3])


def verify_pack(
    path: Path,
    policy: VerifyPolicy,
    trust: TrustState,
    *,
    allow_same: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
) -> VerifiedPack:
    """Verify the pack at ``path`` (a private staged copy). ``allow_same``: accept the version
    already recorded when its manifest is byte-identical (finishing an interrupted install)."""
    path = Path(path)
    try:
        size = os.stat(path).st_size
    except OSError as exc:
        raise PackFormatError(
            f"pack {path}: cannot be read ({exc.strerror})", hint="check the path"
        ) from None
    if size > policy.max_bytes:
        raise PackFormatError(
            f"pack {path.name} is {size} bytes, over the cap of {policy.max_bytes}",
            hint="raise [packs] max_pack_bytes if this pack is expected to be this big",
        )
    with PackFile(path) as pf:
        signer = verify_envelope(pf.envelope, policy.trusted_keys, what=f"pack {path.name}")
        manifest = manifest_from_bytes(pf.envelope.body)
        pf.bind_manifest(manifest)
        done = 0
        for _name, n in pf.iter_section_hashes():
            done += n
            if progress:
                progress("verify", done, manifest.body_length)
        msha = hashlib.sha256(pf.envelope.body).hexdigest()
        check_manifest(manifest, msha, policy, trust, allow_same=allow_same)
        return VerifiedPack(path, manifest, pf.envelope.body, msha, signer, size)


def check_manifest(
    m: Manifest,
    manifest_sha256: str,
    policy: VerifyPolicy,
    trust: TrustState,
    *,
    allow_same: bool = False,
) -> None:
    """Version, clock, compatibility and binding checks on a signature-checked manifest."""
    highest, highest_sha = trust.highest(m.pack_id)
    if m.version < highest or (
        m.version == highest and not (allow_same and manifest_sha256 == highest_sha)
    ):
        same = m.version == highest and manifest_sha256 == highest_sha
        raise PackVersionError(
            f"pack {m.pack_id} version {m.version} is not above the highest accepted version {highest}"  # noqa: E501
            + (
                " (it is that very pack)"
                if same
                else " (and has other content)"
                if m.version == highest
                else ""
            ),
            hint="publish changes under a higher version number (roll forward)",
        )
    now = trust.now(policy.clock() if policy.clock else None)
    if m.expires <= now:
        raise PackExpiredError(
            f"pack {m.pack_id} v{m.version} expired at {m.expires} (now {now})",
            hint="publish a fresh pack; the current one keeps serving",
        )
    if m.expires <= m.created:
        raise PackExpiredError(
            f"pack {m.pack_id} v{m.version} expires before it was created",
            hint="rebuild the pack with a later expiry",
        )
    if m.created > now + policy.clock_skew_s:
        raise PackExpiredError(
            f"pack {m.pack_id} v{m.version} is dated {m.created - now} s in the future",
            hint="check the publisher's and the kiosk's clocks",
        )
    if policy.locales and not set(m.compat.locales) & set(policy.locales):
        raise PackCompatibilityError(
            f"pack {m.pack_id} is for locales {m.compat.locales}; "
            f"this kiosk speaks {list(policy.locales)}",
            hint="install a pack built for this kiosk's languages",
        )
    if _vtuple(m.compat.min_runtime) > _vtuple(policy.runtime_version):
        raise PackCompatibilityError(
            f"pack {m.pack_id} needs runtime {m.compat.min_runtime}, "
            f"this kiosk runs {policy.runtime_version}",
            hint="update the kiosk software first",
        )
    b = policy.binding
    if b is not None and (m.embedding.model_id, m.embedding.dim, m.embedding.hash) != (
        b.model_id,
        b.dim,
        b.hash,
    ):
        raise PackCompatibilityError(
            f"pack {m.pack_id} was embedded with {m.embedding.model_id} ({m.embedding.dim}-d, "
            f"{m.embedding.hash[:12]}…); this kiosk uses {b.model_id} ({b.dim}-d, {b.hash[:12]}…)",
            hint="rebuild the pack with the kiosk's embedding model",
        )
