"""Install a verified pack as a new knowledge base and switch to it atomically; roll back.

Layout of the packs folder (``[packs] directory``, default ``<data_dir>/packs``)::

    ACTIVE        {"current": entry, "previous": entry | null}: the one pointer readers follow
    trust.json    highest accepted versions, newest trusted time, rotated keys (trust.py)
    lock          held (flock) by the one installer at a time
    staging/      private (0700) work folders; anything here after a crash is garbage
    stores/       finished SQLite files, one per installed pack (current and previous kept)
    archive/      the verified pack files of current and previous

Steps (rules 1, 4, 5): copy into private staging under the byte cap → verify (verify.py)
→ unpack section by section with msgpack limits → build a new SQLite file in staging →
SQLite + FTS + vector integrity check, counts against the manifest, smoke questions →
fsync and rename the file into stores/ → record the version in trust.json → replace
ACTIVE (temp, fsync, rename, fsync folder). Until ACTIVE is replaced nothing a reader
sees has changed; a failure at any step removes what it made and raises a PackError.
A SIGKILL at any moment leaves ACTIVE naming the old or the new complete store.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import secrets
import shutil
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from runtime.errors import (
    KioskError,
    KnowledgeError,
    PackCompatibilityError,
    PackDiskError,
    PackError,
    PackFormatError,
    PackInstallError,
    PackSourceError,
    PackVersionError,
)

from ._fsutil import atomic_write_bytes, fsync_dir, fsync_file, private_dir
from .format import (
    EmbeddingBinding,
    Manifest,
    PackFile,
    SectionReader,
    decode_smoke,
    decode_vectors,
    iter_chunks,
    iter_documents,
    iter_faq,
)
from .trust import TrustState
from .verify import VerifiedPack, VerifyPolicy, verify_pack

log = logging.getLogger(__name__)

ACTIVE_FILE = "ACTIVE"
Progress = Callable[[str, int, int], None]


@dataclass
class PackSettings:
    """What the kiosk side needs to judge and install packs (from [packs] + the embedder)."""

    configured_keys: list[str]
    binding: EmbeddingBinding | None
    max_bytes: int = 512 * 1024 * 1024
    locales: tuple[str, ...] = ()
    clock_skew_s: int = 300
    smoke_top_k: int = 5
    clock: Callable[[], float] | None = None
    # The kiosk's live embedder, when loaded: smoke questions are re-embedded with it and must
    # match the pack's vectors, so vectors from another model fail even under a lying binding.
    embedder: Any = None
    min_smoke_cosine: float = 0.98

    def policy(self, trust: TrustState) -> VerifyPolicy:
        return VerifyPolicy(
            trusted_keys=trust.trusted_keys(self.configured_keys),
            max_bytes=self.max_bytes,
            binding=self.binding,
            locales=self.locales,
            clock_skew_s=self.clock_skew_s,
            clock=self.clock,
        )


def settings_from_config(cfg: Any, binding: EmbeddingBinding | None) -> PackSettings:
    p = cfg.packs
    return PackSettings(
        configured_keys=list(p.trusted_keys),
        binding=binding,
        max_bytes=p.max_pack_bytes,
        locales=tuple(cfg.kiosk.languages),
        clock_skew_s=p.clock_skew_s,
        smoke_top_k=p.smoke_top_k,
    )


def packs_dir_for(cfg: Any) -> Path:
    return cfg.packs.directory or cfg.paths.data_dir / "packs"


@dataclass
class InstallResult:
    pack_id: str
    version: int
    db: Path
    chunks: int
    documents: int
    faq_entries: int
    smoke_passed: int
    previous: dict[str, Any] | None
    timings: dict[str, float] = field(default_factory=dict)


# --- pointer -------------------------------------------------------------------------------


def read_pointer(packs_dir: Path) -> dict[str, Any]:
    """The ACTIVE pointer ({"current": None, "previous": None} when nothing is installed)."""
    try:
        obj = json.loads((Path(packs_dir) / ACTIVE_FILE).read_bytes())
    except FileNotFoundError:
        return {"current": None, "previous": None}
    except ValueError:
        raise PackInstallError(
            f"pointer {Path(packs_dir) / ACTIVE_FILE} is unreadable",
            hint="run `kiosk pack rollback` or reinstall a pack",
        ) from None
    return {"current": obj.get("current"), "previous": obj.get("previous")}


def write_pointer(packs_dir: Path, current: dict | None, previous: dict | None) -> None:
    data = json.dumps(
        {"format": 1, "current": current, "previous": previous}, indent=1, sort_keys=True
    ).encode()
    atomic_write_bytes(Path(packs_dir) / ACTIVE_FILE, data, mode=0o644)


# --- disk errors ---------------------------------------------------------------------------------

_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
SQLITE_IOERR, SQLITE_FULL = 10, 13


def disk_error(exc: BaseException, step: str, where: Path) -> PackDiskError:
    """A typed error for an OSError (or SQLite's disk-full / I/O error) during an install step."""
    code = getattr(exc, "errno", None)
    if is_disk_full(exc):
        what, hint = (
            "the disk is full (or the file-size limit was reached)",
            f"free space on the disk holding {where}, then install again; "
            "the active pack is unchanged",
        )
    elif code == errno.EIO or _sqlite_code(exc) == SQLITE_IOERR:
        what, hint = (
            "the disk reported an I/O error",
            "check the disk (dmesg, SMART) before installing again; the active pack is unchanged",
        )
    else:
        what, hint = (
            "a file operation failed",
            f"check permissions and space under {where}; the active pack is unchanged",
        )
    detail = getattr(exc, "strerror", None) or str(exc)[:120] or type(exc).__name__
    return PackDiskError(f"{step} in {where}: {what} ({detail})", hint=hint)


def is_disk_full(exc: BaseException) -> bool:
    return getattr(exc, "errno", None) in _FULL or _sqlite_code(exc) == SQLITE_FULL


def _sqlite_code(exc: BaseException) -> int | None:
    """The primary SQLite result code of a driver exception (sqlite3 or apsw), else None."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:
        code = getattr(exc, "result", None)
    if code is None and type(exc).__module__ == "apsw":  # raised by Python code (a VFS), no code
        code = {"IOError": SQLITE_IOERR, "FullError": SQLITE_FULL}.get(type(exc).__name__)
    return code & 0xFF if isinstance(code, int) else None


def _write_all(fd: int, buf: bytes) -> None:
    """os.write may write less than asked (a disk filling up); keep going until it raises."""
    view = memoryview(buf)
    while view:
        n = os.write(fd, view)
        view = view[n:]


# --- staging copy ------------------------------------------------------------------------------


def copy_into_staging(
    src: Path | int,
    dest: Path,
    max_bytes: int,
    *,
    progress: Progress | None = None,
    what: str = "pack",
) -> Path:
    """Copy a regular file (never a symlink, FIFO or device) into ``dest`` under ``max_bytes``.

    ``src`` may be an already-open descriptor (USB: opened with O_NOFOLLOW). The copy is what
    gets verified (rule 5): the source may change or vanish afterwards without effect.
    """
    own = not isinstance(src, int)
    try:
        fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY) if own else src
    except OSError as exc:
        kind = "a symlink" if exc.errno == errno.ELOOP else exc.strerror
        raise PackSourceError(
            f"{what} {src}: cannot be opened ({kind})",
            hint="give a regular pack file (not a link, pipe or device)",
        ) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise PackSourceError(
                f"{what} {src}: not a regular file", hint="give a regular pack file"
            )
        if st.st_size > max_bytes:
            raise PackSourceError(
                f"{what} {src}: {st.st_size} bytes, over the cap of {max_bytes}",
                hint="raise [packs] max_pack_bytes if this pack is expected to be this big",
            )
        os.set_blocking(fd, True)
        copied = 0
        try:
            out_fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            raise disk_error(exc, f"copying {what} {src} into staging", dest.parent) from exc
        try:
            while True:
                try:
                    buf = os.read(fd, 1 << 20)
                except OSError as exc:
                    raise PackSourceError(
                        f"{what} {src}: read failed after {copied} bytes ({exc.strerror})",
                        hint="the medium was removed or is failing; try again",
                    ) from None
                if not buf:
                    break
                copied += len(buf)
                if copied > max_bytes:
                    raise PackSourceError(
                        f"{what} {src}: grew past the cap of {max_bytes} bytes while copying",
                        hint="the source is changing or hostile",
                    )
                _write_all(out_fd, buf)
                if progress:
                    progress("copy", copied, st.st_size)
            os.fsync(out_fd)
        except OSError as exc:  # writing the copy (reads are handled above)
            raise disk_error(
                exc, f"copying {what} {src} into staging (after {copied} bytes)", dest.parent
            ) from exc
        finally:
            os.close(out_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(dest)
        raise
    finally:
        if own:
            os.close(fd)
    return dest


class _LinkBackup:
    """Hard links to state files taken before they are replaced, to put them back on failure.

    ``restore`` renames each link over its name (or removes a file that did not exist
    before): atomic, byte-identical, and it needs no free space. Leftover links after a
    crash are removed by the next install's recovery (they start with ``.`` and end
    ``.bak``).
    """

    def __init__(self, folder: Path, names: tuple[str, ...], token: str) -> None:
        self.folder = folder
        self.items = [(folder / n, folder / f".{n}.{token}.bak") for n in names]
        self.existed: dict[Path, bool] = {}
        self.copies: dict[Path, bytes] = {}  # where hard links are not supported (FAT, some FUSE)

    def take(self) -> None:
        for path, bak in self.items:
            try:
                os.link(path, bak)
                self.existed[path] = True
            except FileNotFoundError:
                self.existed[path] = False
            except OSError:  # EPERM/EMLINK/ENOTSUP: keep the (small) bytes instead
                self.copies[path] = path.read_bytes()
                self.existed[path] = True

    def restore(self) -> None:
        for path, bak in self.items:
            if path not in self.existed:
                continue
            with contextlib.suppress(OSError):
                if not self.existed[path]:
                    path.unlink(missing_ok=True)
                elif path in self.copies:
                    if path.read_bytes() != self.copies[path]:
                        atomic_write_bytes(path, self.copies[path], mode=0o644)
                else:
                    os.replace(bak, path)  # a no-op when both still name one file: then unlink
                    bak.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            fsync_dir(self.folder)

    def discard(self) -> None:
        for _path, bak in self.items:
            bak.unlink(missing_ok=True)


# --- the installer --------------------------------------------------------------------------------


class PackInstaller:
    """Kiosk-side pack management on one packs folder. One installer runs at a time (flock)."""

    def __init__(self, packs_dir: Path, settings: PackSettings) -> None:
        self.dir = Path(packs_dir)
        self.settings = settings
        # Called with the InstallResult once ACTIVE names the new pack (the serving process
        # points a pipeline that started without a pack at it); its errors are only logged.
        self.on_installed: Callable[[InstallResult], None] | None = None
        for sub in ("stores", "archive"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        private_dir(self.dir / "staging")

    # -- locking and crash recovery --
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self.dir / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise PackInstallError(
                    f"another install is running in {self.dir}",
                    hint="wait for it to finish, then try again",
                ) from None
            self._recover()
            yield
        finally:
            os.close(fd)

    def _recover(self) -> None:
        """Remove what an interrupted install left: staging folders, unreferenced stores/archives."""  # noqa: E501
        for child in (self.dir / "staging").iterdir():
            if child.name == "downloads":  # partial HTTP downloads are kept for resuming
                continue
            shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink(
                missing_ok=True
            )
        for child in self.dir.glob(".*"):  # temp files and backup links of an interrupted switch
            if child.is_file() and child.name.endswith((".tmp", ".bak")):
                child.unlink(missing_ok=True)
        self._gc()

    def _gc(self) -> None:
        pointer = read_pointer(self.dir)
        keep = set()
        for entry in (pointer["current"], pointer["previous"]):
            if entry:
                keep.add(entry["db"])
                keep.add(entry["pack"])
        removed = False
        for sub in ("stores", "archive"):
            for child in (self.dir / sub).iterdir():
                rel = f"{sub}/{child.name}"
                base = rel.removesuffix("-wal").removesuffix("-shm").removesuffix("-journal")
                if base not in keep:
                    child.unlink(missing_ok=True)
                    removed = True
        if removed:
            for sub in ("stores", "archive"):
                fsync_dir(self.dir / sub)

    def new_staging(self) -> Path:
        try:
            return private_dir(self.dir / "staging" / f"s-{secrets.token_hex(6)}")
        except OSError as exc:
            raise disk_error(exc, "creating a staging folder", self.dir / "staging") from exc

    # -- public operations --
    def install_file(self, src: Path, progress: Progress | None = None) -> InstallResult:
        """Copy ``src`` into private staging under the cap, then install that copy."""
        with self._locked():
            work = self.new_staging()
            try:
                staged = copy_into_staging(
                    Path(src), work / "pack.kpack", self.settings.max_bytes, progress=progress
                )
                return self._install(staged, work, progress)
            finally:
                shutil.rmtree(work, ignore_errors=True)

    def install_staged(self, staged: Path, progress: Progress | None = None) -> InstallResult:
        """Install a pack a source already copied into this installer's staging (moved, not copied)."""  # noqa: E501
        with self._locked():
            work = self.new_staging()
            try:
                target = work / "pack.kpack"
                os.replace(staged, target)
                return self._install(target, work, progress)
            finally:
                shutil.rmtree(work, ignore_errors=True)

    def verify_file(self, path: Path, *, check_version: bool = True) -> VerifiedPack:
        """Verify without installing (uses a private copy, changes no state)."""
        trust = TrustState.load(self.dir) if check_version else TrustState()
        work = self.new_staging()
        try:
            staged = copy_into_staging(Path(path), work / "pack.kpack", self.settings.max_bytes)
            return verify_pack(staged, self.settings.policy(trust), trust, allow_same=True)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _install(self, staged: Path, work: Path, progress: Progress | None) -> InstallResult:
        t0 = time.perf_counter()
        timings: dict[str, float] = {}
        trust = TrustState.load(self.dir)
        pointer = read_pointer(self.dir)
        vp = verify_pack(
            staged, self.settings.policy(trust), trust, allow_same=True, progress=progress
        )
        m = vp.manifest
        cur = pointer["current"]
        if cur and cur.get("manifest_sha256") == vp.manifest_sha256:
            raise PackVersionError(
                f"pack {m.pack_id} v{m.version} is already the active pack",
                hint="nothing to do; publish changes under a higher version",
            )
        timings["verify_s"] = time.perf_counter() - t0

        token = secrets.token_hex(4)
        db_tmp = work / "store.sqlite"
        db_rel = f"stores/{m.pack_id}-v{m.version}-{token}.sqlite"
        pack_rel = f"archive/{m.pack_id}-v{m.version}-{token}.kpack"
        step = "building the knowledge base"
        try:
            t1 = time.perf_counter()
            with PackFile(staged) as pf:
                pf.bind_manifest(m)
                counts = build_store(pf, m, db_tmp, progress=progress, disk_dir=self.dir)
            timings["build_s"] = time.perf_counter() - t1
            step = "checking the new knowledge base"
            t2 = time.perf_counter()
            smoke_passed = check_store(
                db_tmp,
                m,
                staged,
                self.settings.smoke_top_k,
                embedder=self.settings.embedder,
                min_cosine=self.settings.min_smoke_cosine,
            )
            timings["check_s"] = time.perf_counter() - t2
            step = "moving the new knowledge base into place"
            for suffix in ("-wal", "-shm", "-journal"):
                # closed cleanly: nothing left to replay
                Path(f"{db_tmp}{suffix}").unlink(missing_ok=True)
            fsync_file(db_tmp)
            os.replace(db_tmp, self.dir / db_rel)
            os.replace(staged, self.dir / pack_rel)
            fsync_dir(self.dir / "stores")
            fsync_dir(self.dir / "archive")
        except BaseException as exc:
            (self.dir / db_rel).unlink(missing_ok=True)
            (self.dir / pack_rel).unlink(missing_ok=True)
            if isinstance(exc, PackDiskError):
                raise
            disk = exc if isinstance(exc, OSError) else _disk_cause(exc)
            if disk is not None:
                raise disk_error(disk, f"pack {m.pack_id} v{m.version}: {step}", self.dir) from exc
            raise

        entry = {
            "pack_id": m.pack_id,
            "version": m.version,
            "manifest_sha256": vp.manifest_sha256,
            "db": db_rel,
            "pack": pack_rel,
            "created": m.created,
            "expires": m.expires,
            "title": m.title,
            "embedding": m.embedding.model_dump(),
            "installed_at": int(time.time()),
            "counts": counts,
            "smoke_passed": smoke_passed,
        }
        trust.accept_pack(m.pack_id, m.version, vp.manifest_sha256, m.created)
        # The switch: trust.json, then ACTIVE. Both are first hard-linked aside, so a failure at
        # any point (even after a rename, while fsyncing the folder) puts the very same files
        # back by renaming (no new data blocks needed on a full disk).
        step = "recording the version in trust.json"
        saved = _LinkBackup(self.dir, ("trust.json", ACTIVE_FILE), token)
        try:
            saved.take()
            trust.save(self.dir)
            step = "switching the ACTIVE pointer"
            write_pointer(self.dir, entry, cur)
        except BaseException as exc:
            saved.restore()
            (self.dir / db_rel).unlink(missing_ok=True)
            (self.dir / pack_rel).unlink(missing_ok=True)
            if isinstance(exc, OSError):
                raise disk_error(exc, f"pack {m.pack_id} v{m.version}: {step}", self.dir) from exc
            raise
        saved.discard()
        self._gc()
        timings["total_s"] = time.perf_counter() - t0
        log.info("installed pack %s v%d (%s)", m.pack_id, m.version, db_rel)
        result = InstallResult(
            m.pack_id,
            m.version,
            self.dir / db_rel,
            counts["chunks"],
            counts["documents"],
            counts["faq_entries"],
            smoke_passed,
            cur,
            timings,
        )
        if self.on_installed is not None:
            try:
                self.on_installed(result)
            except Exception:  # noqa: BLE001 - the install itself succeeded
                log.exception("after installing pack %s v%d", m.pack_id, m.version)
        return result

    def rollback(self) -> dict[str, Any]:
        """Make the previous pack active again (it must still open and pass the integrity check).

        Trust is unchanged: the rolled-back-from version stays the highest accepted, so the
        way forward is a new pack with a higher version (rule 6).
        """
        with self._locked():
            pointer = read_pointer(self.dir)
            prev, cur = pointer["previous"], pointer["current"]
            if not prev:
                raise PackInstallError(
                    "there is no previous pack to roll back to",
                    hint="install an older content as a new, higher version instead",
                )
            open_checked(self.dir / prev["db"], prev).close()
            saved = _LinkBackup(self.dir, (ACTIVE_FILE,), secrets.token_hex(4))
            try:
                saved.take()
                write_pointer(self.dir, prev, cur)
            except OSError as exc:
                saved.restore()
                step = "rolling back: switching the ACTIVE pointer"
                raise disk_error(exc, step, self.dir) from exc
            saved.discard()
            return prev

    def status(self) -> dict[str, Any]:
        pointer = read_pointer(self.dir)
        trust = TrustState.load(self.dir)
        now = trust.now(self.settings.clock() if self.settings.clock else None)
        cur = pointer["current"]
        return {
            "current": cur,
            "previous": pointer["previous"],
            "trusted_versions": trust.packs,
            "newest_time": trust.newest_time,
            "keyring_version": trust.keyring["version"] if trust.keyring else 0,
            "stale": bool(cur and cur["expires"] <= now),
        }


# --- build and check ------------------------------------------------------------------------------


def _store_cls():
    from runtime.knowledge.store import KnowledgeStore

    return KnowledgeStore


def build_store(
    pf: PackFile,
    m: Manifest,
    db_path: Path,
    *,
    progress: Progress | None = None,
    disk_dir: Path | None = None,
) -> dict[str, int]:
    """Unpack the verified pack section by section into a new SQLite store at ``db_path``.

    ``disk_dir``: the folder named when the disk fills up (the packs folder; default db's folder).
    """
    from runtime.knowledge.records import DocumentRecord

    dim = m.embedding.dim
    try:
        store = _store_cls().open(
            db_path, embedding_model=m.embedding.model_id, dim=dim, create=True
        )
    except KnowledgeError as exc:
        raise PackInstallError(
            f"cannot create the new knowledge base: {exc.message}", hint=exc.hint
        ) from exc
    # A build writes the file once, front to back: memory-mapping it and a large page cache
    # would only make resident memory grow with the pack (file pages count in RSS).
    store.connection.execute("PRAGMA mmap_size = 0")
    store.connection.execute("PRAGMA cache_size = -8192")
    try:
        # Sections are streamed row by row (format.iter_*): the one decoded thing held whole is
        # the document list (chunks refer to documents by index) and one embeddings part.
        records = [
            DocumentRecord(
                source_path=d["source_path"],
                title=d["title"],
                language=d["language"],
                content_hash=d["content_hash"],
                category=d["category"],
                pack_id=m.pack_id,
                pack_version=m.version,
                meta=d["meta"],
            )
            for d in iter_documents(_section(pf, "documents"), m.counts.documents)
        ]
        done_docs: set[int] = set()
        current: int | None = None
        buf_chunks: list = []
        buf_vecs: list[np.ndarray] = []
        total = 0

        def flush() -> None:
            if current is None:
                return
            store.add_document(
                records[current],
                buf_chunks,
                np.stack(buf_vecs) if buf_vecs else np.zeros((0, dim), np.float32),
            )
            done_docs.add(current)

        for part in range(m.chunk_parts):
            name, ename = f"chunks.{part:04d}", f"embeddings.{part:04d}"
            vecs = decode_vectors(_section(pf, ename), None, dim, ename)
            rows = iter_chunks(_section(pf, name), len(records), name, expected=len(vecs))
            with store.batch():  # one transaction per part: fewer commits, bounded WAL
                for (di, chunk), vec in zip(rows, vecs, strict=True):
                    if di != current:
                        flush()
                        if di in done_docs:
                            raise PackInstallError(
                                f"pack {m.pack_id}: chunks of document {di} are not contiguous",
                                hint="the pack is malformed; rebuild it",
                            )
                        current, buf_chunks, buf_vecs = di, [], []
                    buf_chunks.append(chunk)
                    buf_vecs.append(vec)
            total += len(vecs)
            del vecs
            if progress:
                progress("build", total, m.counts.chunks)
        flush()
        with store.batch():
            for i, rec in enumerate(records):  # documents without chunks (rare: empty files)
                if i not in done_docs:
                    store.add_document(rec, [], np.zeros((0, dim), np.float32))
        if total != m.counts.chunks:
            raise PackInstallError(
                f"pack {m.pack_id}: {total} chunks, the manifest says {m.counts.chunks}",
                hint="the pack is malformed; rebuild it",
            )
        faq_src = pf.open_section("faq")
        if faq_src is not None:
            qv = decode_vectors(
                _section(pf, "faq_embeddings"), m.counts.faq_questions, dim, "faq_embeddings"
            )
            entries: list = []
            row = 0

            def add_faq() -> None:
                nonlocal row
                vectors = []
                for e in entries:
                    vectors.append(qv[row : row + len(e.questions)])
                    row += len(e.questions)
                store.add_faq(entries, vectors)
                entries.clear()

            for e in iter_faq(faq_src, m.counts.faq_entries, m.counts.faq_questions):
                entries.append(_with_pack(e, m))
                if len(entries) == 512:
                    add_faq()
            if entries:
                add_faq()
        elif m.counts.faq_entries:
            raise PackInstallError(
                f"pack {m.pack_id}: manifest counts FAQ entries but has no faq section",
                hint="the pack is malformed; rebuild it",
            )
        store.integrity_check()  # writable: includes the FTS5 integrity check
        stats = store.stats()
        store.close()  # checkpoints the WAL into the file: writes, so it may fail too
    except BaseException as exc:
        # apsw keeps the errno under SQLite's generic IOERR/FULL: EFBIG/ENOSPC is "disk full"
        sys_errno = getattr(store.connection.raw, "system_errno", 0) or 0
        _close_quietly(store)
        disk = _disk_cause(exc)
        if disk is not None:
            if sys_errno and not isinstance(disk, OSError):
                disk = OSError(sys_errno, os.strerror(sys_errno))
            where = disk_dir or db_path.parent
            raise disk_error(disk, "building the knowledge base", where) from exc
        if isinstance(exc, KnowledgeError):
            raise PackInstallError(
                f"pack {m.pack_id} v{m.version}: building the knowledge base failed: {exc.message}",
                hint=exc.hint or "the pack is malformed; rebuild it",
            ) from exc
        raise
    counts = {
        "documents": stats["documents"],
        "chunks": stats["chunks"],
        "faq_entries": stats["faq_entries"],
    }
    expected = {
        "documents": m.counts.documents,
        "chunks": m.counts.chunks,
        "faq_entries": m.counts.faq_entries,
    }
    if counts != expected:
        raise PackInstallError(
            f"pack {m.pack_id}: the built knowledge base holds {counts}, the manifest says {expected}",  # noqa: E501
            hint="the pack has duplicate documents or entries; rebuild it",
        )
    return counts


def _disk_cause(exc: BaseException | None) -> BaseException | None:
    """The disk-full / I/O error behind ``exc`` (itself or a cause, e.g. under a KnowledgeError)."""
    for _ in range(8):
        if exc is None:
            return None
        if getattr(exc, "errno", None) in (*_FULL, errno.EIO) or _sqlite_code(exc) in (
            SQLITE_IOERR,
            SQLITE_FULL,
        ):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _close_quietly(store: Any) -> None:
    with contextlib.suppress(Exception):
        store.close()


def _section(pf: PackFile, name: str) -> SectionReader:
    src = pf.open_section(name)
    if src is None:  # the manifest schema requires these; a second line of defence
        raise PackFormatError(f"pack {pf.path.name}: section {name} is missing", hint="rebuild it")
    return src


def _with_pack(e: Any, m: Manifest) -> Any:
    from dataclasses import replace

    return replace(e, pack_id=m.pack_id, pack_version=m.version)


def open_checked(db: Path, entry: dict[str, Any], *, lean: bool = False):
    """Open a store read-only and run its integrity check; PackInstallError when it fails.

    ``lean``: no memory map and a small page cache (a one-off check, not a serving store).
    """
    emb = entry["embedding"]
    try:
        store = _store_cls().open(
            db, embedding_model=emb["model_id"], dim=emb["dim"], create=False, readonly=True
        )
    except KnowledgeError as exc:
        raise PackInstallError(
            f"knowledge base {db} cannot be opened: {exc.message}", hint=exc.hint
        ) from exc
    if lean:
        store.connection.execute("PRAGMA mmap_size = 0")
        store.connection.execute("PRAGMA cache_size = -8192")
    try:
        store.integrity_check()
    except KnowledgeError as exc:
        store.close()
        raise PackInstallError(
            f"knowledge base {db} fails its integrity check: {exc.message}", hint=exc.hint
        ) from exc
    return store


def run_smoke(store: Any, smoke: list[dict[str, Any]], k: int) -> list[str]:
    """The smoke questions whose expected source is not among the top ``k`` hits (or FAQ hits)."""
    failed = []
    for item in smoke:
        hits = store.search(item["question"], item["vector"], k=k, mode="hybrid")
        if any(h.citation.source_path == item["expected_source"] for h in hits):
            continue
        faq = store.match_faq(item["question"], item["vector"], k=k)
        if any(
            f.source == item["expected_source"]
            or f.source.startswith(item["expected_source"] + "#")
            for f in faq
        ):
            continue
        failed.append(item["question"])
    return failed


def load_smoke(pack_path: Path, m: Manifest) -> list[dict[str, Any]]:
    with PackFile(pack_path) as pf:
        pf.bind_manifest(m)
        return decode_smoke(pf.read_section("smoke") or b"", m.counts.smoke, m.embedding.dim)


def check_store(
    db: Path,
    m: Manifest,
    pack_path: Path,
    k: int,
    *,
    embedder: Any = None,
    min_cosine: float = 0.98,
) -> int:
    """Reopen the new store read-only: integrity check, then every smoke question must pass.

    With ``embedder``, the questions are embedded live and must match the pack's vectors
    (cosine >= ``min_cosine``), and the live vectors are the ones searched with.
    """
    smoke = load_smoke(pack_path, m)
    if embedder is not None:
        try:
            live = np.asarray(
                embedder.embed_batch([s["question"] for s in smoke]), dtype=np.float32
            )
        except KioskError as exc:
            raise PackInstallError(
                f"smoke questions could not be embedded: {exc.message}", hint=exc.hint
            ) from exc
        packed = np.stack([s["vector"] for s in smoke])
        if live.shape != packed.shape:
            raise PackCompatibilityError(
                f"pack {m.pack_id}: this kiosk's embedder gives {live.shape[1]}-d vectors, "
                f"the pack {packed.shape[1]}-d",
                hint="rebuild the pack with this kiosk's model",
            )
        cos = np.sum(live * packed, axis=1) / (
            np.linalg.norm(live, axis=1) * np.linalg.norm(packed, axis=1) + 1e-12
        )
        if float(cos.min()) < min_cosine:
            raise PackCompatibilityError(
                f"pack {m.pack_id} v{m.version}: its vectors were not made by this kiosk's embedder "  # noqa: E501
                f"{getattr(embedder, 'model_id', '?')} (smoke question cosine {float(cos.min()):.3f} < {min_cosine})",  # noqa: E501
                hint="rebuild the pack with the kiosk's embedding model",
            )
        for s, v in zip(smoke, live, strict=True):
            s["vector"] = v
    entry = {"embedding": m.embedding.model_dump()}
    store = open_checked(db, entry, lean=True)
    # sqlite-vec's own kNN reads the vec0 chunks through SQLite's small page cache; the numpy
    # index would load every vector of the pack into one matrix (memory growing with the pack).
    store.vector_backend = "sqlite-vec"
    try:
        failed = run_smoke(store, smoke, k)
    except KioskError as exc:
        raise PackInstallError(
            f"pack {m.pack_id} v{m.version}: smoke questions could not run: {exc.message}",
            hint=exc.hint,
        ) from exc
    finally:
        store.close()
    if failed:
        raise PackInstallError(
            f"pack {m.pack_id} v{m.version}: {len(failed)} of {len(smoke)} smoke questions did not find their "  # noqa: E501
            f"expected source (first: {failed[0][:60]!r})",
            hint="the pack's content does not answer its own smoke questions; rebuild it",
        )
    return len(smoke)


__all__ = [
    "PackInstaller",
    "PackSettings",
    "InstallResult",
    "read_pointer",
    "copy_into_staging",
    "settings_from_config",
    "packs_dir_for",
    "PackError",
]
