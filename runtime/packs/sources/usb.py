"""USB source: a configured mount folder, scanned for ``*.kpack`` (and ``*.kkeys``) files.

Only regular files at the top of the folder with plain names are considered; each is
opened with O_NOFOLLOW | O_NONBLOCK (a symlink fails with ELOOP, a FIFO cannot block
us) and checked with fstat before a byte is read. :meth:`offer` reads only the pack's
signed header; :meth:`fetch` copies the whole file into private staging, which is what
gets verified (rule 5). The stick may vanish at any moment: every read error becomes a
PackSourceError and the partial copy is removed.

Watching is by polling (:meth:`snapshot` is a cheap listdir + fstat): it works for any
mount, including ones inotify does not see.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import secrets
import stat
from pathlib import Path

from runtime.errors import KioskError, PackSourceError

from ..format import MAX_MANIFEST_BYTES, PACK_MAGIC, manifest_from_bytes, read_envelope
from ..install import copy_into_staging
from ..signing import verify_envelope
from ..trust import TrustState
from .base import Offer, PackSource, SourceProgress

log = logging.getLogger(__name__)
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\.(kpack|kkeys)$")
MAX_ENTRIES = 1000
MAX_KEYLIST_BYTES = 64 * 1024


class UsbSource(PackSource):
    name = "usb"

    def __init__(self, mount: Path, max_bytes: int) -> None:
        self.mount = Path(mount)
        self.max_bytes = max_bytes
        self.rejected: list[str] = []

    def _names(self, suffix: str) -> list[str]:
        try:
            with os.scandir(self.mount) as it:
                names = []
                for i, entry in enumerate(it):
                    if i >= MAX_ENTRIES:
                        break
                    names.append(entry.name)
        except OSError:
            return []  # no stick (or it was pulled): nothing to offer
        out = []
        for name in sorted(names):
            if not name.endswith(suffix):
                continue
            if not NAME_RE.match(name):
                self.rejected.append(
                    f"{name!r}: name not allowed (letters, digits, '.', '_', '-' only)"
                )
                continue
            out.append(name)
        return out

    def _open(self, name: str) -> int:
        """Open a stick file safely: no symlinks, no FIFOs/devices, nothing outside the folder."""
        try:
            dir_fd = os.open(self.mount, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            raise PackSourceError(
                f"USB folder {self.mount} cannot be opened ({exc.strerror})",
                hint="insert the stick again",
            ) from None
        try:
            fd = os.open(
                name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY, dir_fd=dir_fd
            )
        except OSError as exc:
            reason = "it is a symlink" if exc.errno == errno.ELOOP else exc.strerror
            raise PackSourceError(
                f"USB file {name} refused: {reason}", hint="put regular pack files on the stick"
            ) from None
        finally:
            os.close(dir_fd)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise PackSourceError(
                f"USB file {name} refused: not a regular file",
                hint="put regular pack files on the stick",
            )
        return fd

    def snapshot(self) -> tuple:
        """What the watcher compares between polls: (name, size, mtime) of candidate files."""
        out = []
        for name in self._names(".kpack") + self._names(".kkeys"):
            try:
                st = os.stat(self.mount / name, follow_symlinks=False)
                out.append((name, st.st_size, st.st_mtime_ns))
            except OSError:
                continue
        return tuple(out)

    def key_lists(self, trust: TrustState, trusted: set[bytes]) -> list[bytes]:
        out = []
        for name in self._names(".kkeys"):
            try:
                fd = self._open(name)
                try:
                    data = os.read(fd, MAX_KEYLIST_BYTES + 1)
                finally:
                    os.close(fd)
            except (PackSourceError, OSError) as exc:
                self.rejected.append(f"{name}: {exc}")
                continue
            if len(data) <= MAX_KEYLIST_BYTES:
                out.append(data)
        return out

    def offer(self, trust: TrustState, trusted: set[bytes]) -> Offer | None:
        self.rejected = []
        best: Offer | None = None
        errors: list[KioskError] = []
        for name in self._names(".kpack"):
            try:
                fd = self._open(name)
                try:
                    size = os.fstat(fd).st_size
                    if size > self.max_bytes:
                        raise PackSourceError(
                            f"USB file {name} is {size} bytes, over the cap of {self.max_bytes}",
                            hint="raise [packs] max_pack_bytes if this pack is expected",
                        )
                    os.set_blocking(fd, True)
                    with os.fdopen(os.dup(fd), "rb", buffering=0) as fh:
                        env = read_envelope(
                            fh, PACK_MAGIC, what=f"USB pack {name}", max_body=MAX_MANIFEST_BYTES
                        )
                finally:
                    os.close(fd)
                verify_envelope(env, trusted, what=f"USB pack {name}")
                m = manifest_from_bytes(env.body)
            except KioskError as exc:
                errors.append(exc)
                self.rejected.append(f"{name}: {exc.message}")
                continue
            except OSError as exc:
                errors.append(
                    PackSourceError(
                        f"USB file {name}: {exc.strerror}", hint="insert the stick again"
                    )
                )
                continue
            if m.version > trust.highest(m.pack_id)[0] and (
                best is None or m.version > best.version
            ):
                best = Offer(
                    self.name,
                    m.pack_id,
                    m.version,
                    size,
                    name,
                    manifest_sha256=hashlib.sha256(env.body).hexdigest(),
                )
        if best is None and errors:
            raise errors[0]
        return best

    def fetch(self, offer: Offer, downloads: Path, progress: SourceProgress | None = None) -> Path:
        fd = self._open(offer.ref)
        dest = Path(downloads) / f"usb-{secrets.token_hex(4)}.kpack"
        try:
            return copy_into_staging(
                fd, dest, self.max_bytes, progress=progress, what=f"USB pack {offer.ref}"
            )
        finally:
            os.close(fd)
