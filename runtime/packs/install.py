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
    PackError,
    PackInstallError,
    PackSourceError,
    PackVersionError,
)

from ._fsutil import atomic_write_bytes, fsync_dir, fsync_file, private_dir
from .format import (
    EmbeddingBinding,
    Manifest,
    PackFile,
    decode_chunks,
    decode_documents,
    decode_faq,
    decode_smoke,
    decode_vectors,
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
        out_fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            while True:
                buf = os.read(fd, 1 << 20)
                if not buf:
                    break
                copied += len(buf)
                if copied > max_bytes:
                    raise PackSourceError(
                        f"{what} {src}: grew past the cap of {max_bytes} bytes while copying",
                        hint="the source is changing or hostile",
                    )
                os.write(out_fd, buf)
                if progress:
                    progress("copy", copied, st.st_size)
            os.fsync(out_fd)
        except OSError as exc:
            raise PackSourceError(
                f"{what} {src}: read failed after {copied} bytes ({exc.strerror})",
                hint="the medium was removed or is failing; try again",
            ) from None
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


# --- the installer --------------------------------------------------------------------------------


class PackInstaller:
    """Kiosk-side pack management on one packs folder. One installer runs at a time (flock)."""

    def __init__(self, packs_dir: Path, settings: PackSettings) -> None:
        self.dir = Path(packs_dir)
        self.settings = settings
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
        return private_dir(self.dir / "staging" / f"s-{secrets.token_hex(6)}")

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
        t1 = time.perf_counter()
        with PackFile(staged) as pf:
            pf.bind_manifest(m)
            counts = build_store(pf, m, db_tmp, progress=progress)
        timings["build_s"] = time.perf_counter() - t1
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
        for suffix in ("-wal", "-shm", "-journal"):
            Path(f"{db_tmp}{suffix}").unlink(
                missing_ok=True
            )  # closed cleanly: nothing left to replay
        fsync_file(db_tmp)

        db_rel = f"stores/{m.pack_id}-v{m.version}-{token}.sqlite"
        pack_rel = f"archive/{m.pack_id}-v{m.version}-{token}.kpack"
        os.replace(db_tmp, self.dir / db_rel)
        os.replace(staged, self.dir / pack_rel)
        fsync_dir(self.dir / "stores")
        fsync_dir(self.dir / "archive")

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
        old_trust = trust.to_bytes()
        trust.accept_pack(m.pack_id, m.version, vp.manifest_sha256, m.created)
        try:
            trust.save(self.dir)
            write_pointer(self.dir, entry, cur)
        except BaseException:
            with contextlib.suppress(Exception):
                atomic_write_bytes(self.dir / "trust.json", old_trust)
            (self.dir / db_rel).unlink(missing_ok=True)
            (self.dir / pack_rel).unlink(missing_ok=True)
            raise
        self._gc()
        timings["total_s"] = time.perf_counter() - t0
        log.info("installed pack %s v%d (%s)", m.pack_id, m.version, db_rel)
        return InstallResult(
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
            open_checked(self.dir / prev["db"], prev)
            write_pointer(self.dir, prev, cur)
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
    pf: PackFile, m: Manifest, db_path: Path, *, progress: Progress | None = None
) -> dict[str, int]:
    """Unpack the verified pack section by section into a new SQLite store at ``db_path``."""
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
        docs = decode_documents(pf.read_section("documents") or b"", m.counts.documents)
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
            for d in docs
        ]
        del docs
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
            name = f"chunks.{part:04d}"
            chunks = decode_chunks(pf.read_section(name) or b"", len(records), name)
            vecs = decode_vectors(
                pf.read_section(f"embeddings.{part:04d}") or b"",
                len(chunks),
                dim,
                f"embeddings.{part:04d}",
            )
            for (di, chunk), vec in zip(chunks, vecs, strict=True):
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
            total += len(chunks)
            del chunks, vecs
            if progress:
                progress("build", total, m.counts.chunks)
        flush()
        for i, rec in enumerate(records):  # documents without chunks (rare: empty files)
            if i not in done_docs:
                store.add_document(rec, [], np.zeros((0, dim), np.float32))
        if total != m.counts.chunks:
            raise PackInstallError(
                f"pack {m.pack_id}: {total} chunks, the manifest says {m.counts.chunks}",
                hint="the pack is malformed; rebuild it",
            )
        faq_raw = pf.read_section("faq")
        if faq_raw is not None:
            entries = decode_faq(faq_raw, m.counts.faq_entries, m.counts.faq_questions)
            qv = decode_vectors(
                pf.read_section("faq_embeddings") or b"",
                m.counts.faq_questions,
                dim,
                "faq_embeddings",
            )
            vectors, row = [], 0
            entries = [_with_pack(e, m) for e in entries]
            for e in entries:
                vectors.append(qv[row : row + len(e.questions)])
                row += len(e.questions)
            for s in range(0, len(entries), 512):
                store.add_faq(entries[s : s + 512], vectors[s : s + 512])
        elif m.counts.faq_entries:
            raise PackInstallError(
                f"pack {m.pack_id}: manifest counts FAQ entries but has no faq section",
                hint="the pack is malformed; rebuild it",
            )
        store.integrity_check()  # writable: includes the FTS5 integrity check
        stats = store.stats()
    except KnowledgeError as exc:
        raise PackInstallError(
            f"pack {m.pack_id} v{m.version}: building the knowledge base failed: {exc.message}",
            hint=exc.hint or "the pack is malformed; rebuild it",
        ) from exc
    finally:
        store.close()
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
