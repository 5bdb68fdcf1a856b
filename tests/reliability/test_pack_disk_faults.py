"""Disk full and I/O errors in the middle of an install: typed error, nothing changed, answering.

Faults are real where that is portable, injected where it is not:

- disk full: a child process with RLIMIT_FSIZE (SIGXFSZ ignored), so the kernel itself
  refuses writes past the limit with EFBIG (short write first), during the staging copy
  or, with a limit just above the pack's size, while SQLite builds the new store;
- I/O error inside SQLite: an apsw VFS shim made the default VFS, whose xWrite fails with
  SQLITE_IOERR after some writes to the store being built (what SQLite sees on EIO);
- I/O error at the switch: os.fsync raising EIO for the ACTIVE temp file (before the
  rename), for the packs folder right after ACTIVE was renamed (the pointer already
  replaced), and for trust.json.

After each: a PackDiskError naming the step and the problem, ACTIVE, trust.json and the
active database byte-identical, staging empty, no stray files, and the kiosk (a fresh
ActiveKnowledge) still answers the active pack's smoke questions. A later install of the
same pack succeeds (the failure left nothing that blocks it).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fakes import FakeEmbedder

from runtime.errors import PackDiskError
from runtime.packs import _fsutil
from runtime.packs.active import ActiveKnowledge
from runtime.packs.format import PackFile, manifest_from_bytes
from runtime.packs.install import PackInstaller, load_smoke, read_pointer, run_smoke
from runtime.packs.sample import PackKit

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def kit(tmp_path):
    return PackKit(tmp_path / "pub", FakeEmbedder(32))


@pytest.fixture
def packs(tmp_path, kit):
    """A kiosk with v1 installed."""
    d = tmp_path / "packs"
    PackInstaller(d, kit.settings()).install_file(kit.make(1, n_docs=8, chunks_per_doc=4))
    return d


def state(packs: Path) -> dict:
    """Everything a failed install must leave byte-identical, plus the file list."""
    out = {n: (packs / n).read_bytes() for n in ("ACTIVE", "trust.json")}
    cur = read_pointer(packs)["current"]
    out["db"] = hashlib.sha256((packs / cur["db"]).read_bytes()).hexdigest()
    out["files"] = sorted(
        str(p.relative_to(packs))
        for p in packs.rglob("*")
        if p.is_file()
        and p.name != "lock"
        and "downloads" not in p.parts
        and not p.name.endswith(("-wal", "-shm"))  # SQLite's side files of a reader
    )
    return out


def assert_unchanged_and_answering(packs: Path, before: dict) -> None:
    assert state(packs) == before
    assert [p for p in (packs / "staging").iterdir() if p.name != "downloads"] == []
    entry = read_pointer(packs)["current"]
    with PackFile(packs / entry["pack"]) as pf:
        m = manifest_from_bytes(pf.envelope.body)
    active = ActiveKnowledge(packs)  # a restarted kiosk: opens with the integrity check
    try:
        with active.acquire() as store:
            assert store is not None and active.using == "current"
            assert run_smoke(store, load_smoke(packs / entry["pack"], m), 5) == []
    finally:
        active.close()


# --- disk full: the kernel's own file-size limit in a child process ---------------------------

_CHILD = r"""
import json, resource, signal, sys
from runtime.packs.format import EmbeddingBinding
from runtime.packs.install import PackInstaller, PackSettings
packs, pack, limit, key, binding, usb = sys.argv[1:]
inst = PackInstaller(packs, PackSettings([key], EmbeddingBinding.model_validate_json(binding),
                                         locales=("en",)))
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead
resource.setrlimit(resource.RLIMIT_FSIZE, (int(limit), int(limit)))
try:
    if usb:  # the background sync's path: USB folder -> staging/downloads -> install
        from runtime.packs.sources.usb import UsbSource
        from runtime.packs.sync import SyncService
        r = SyncService(inst, [UsbSource(usb, 1 << 30)]).run_once("test")
        print(json.dumps({"type": r.get("error_type"), "mro": [r.get("error_type")],
                          "message": r.get("error", ""), "hint": r.get("hint", "")}))
        sys.exit(0)
    r = inst.install_file(pack)
    print(json.dumps({"ok": True, "version": r.version}))
except Exception as exc:
    print(json.dumps({"type": type(exc).__name__,
                      "mro": [c.__name__ for c in type(exc).__mro__],
                      "message": getattr(exc, "message", str(exc)),
                      "hint": getattr(exc, "hint", "")}))
"""


def _install_with_fsize_limit(
    packs: Path, pack: Path, kit: PackKit, limit: int, usb: Path | None = None
) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), *sys.path]))
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            _CHILD,
            str(packs),
            str(pack),
            str(limit),
            kit.public_key,
            kit.binding.model_dump_json(),
            str(usb or ""),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_disk_full_during_the_staging_copy_leaves_no_partial_file(packs, kit):
    pack = kit.make(2, n_docs=8, chunks_per_doc=4)
    before = state(packs)
    size = pack.stat().st_size
    r = _install_with_fsize_limit(packs, pack, kit, size // 2 + 1)
    assert "PackDiskError" in r["mro"], r
    assert "copying pack" in r["message"] and "disk is full" in r["message"], r
    assert "free space" in r["hint"]
    # state() lists every file under the packs folder: no half-copied pack is left anywhere
    assert_unchanged_and_answering(packs, before)
    assert PackInstaller(packs, kit.settings()).install_file(pack).version == 2


def test_disk_full_while_the_usb_sync_copies_leaves_no_partial_download(packs, kit, tmp_path):
    usb = tmp_path / "stick"
    usb.mkdir()
    pack = kit.make(2, n_docs=8, chunks_per_doc=4)
    (usb / pack.name).write_bytes(pack.read_bytes())
    before = state(packs)
    r = _install_with_fsize_limit(packs, pack, kit, pack.stat().st_size // 2 + 1, usb=usb)
    assert r["type"] == "PackDiskError", r
    assert "copying USB pack" in r["message"] and "disk is full" in r["message"], r
    downloads = packs / "staging" / "downloads"
    assert not downloads.exists() or list(downloads.iterdir()) == []
    assert_unchanged_and_answering(packs, before)


def test_disk_full_while_sqlite_builds_the_new_store(packs, kit):
    pack = kit.make(2, n_docs=200, chunks_per_doc=4)
    before = state(packs)
    # the copy fits (as do SQLite's 32 KiB WAL index and sqlite-vec's 128 KiB vector chunks);
    # the new SQLite file (text + FTS + two copies of the vectors) does not
    size = pack.stat().st_size
    assert size > 256 * 1024
    r = _install_with_fsize_limit(packs, pack, kit, size + 4096)
    assert "PackDiskError" in r["mro"], r
    assert "building the knowledge base" in r["message"] and "disk is full" in r["message"], r
    assert_unchanged_and_answering(packs, before)
    assert PackInstaller(packs, kit.settings()).install_file(pack).version == 2


# --- I/O error inside SQLite: a VFS shim ---------------------------------------------------------


@pytest.fixture
def faulty_vfs():
    """Make a VFS whose writes to files under a 'staging' folder fail after ``arm(n)`` writes."""
    from runtime.knowledge.connection import available_driver

    if available_driver() != "apsw":
        pytest.skip("the VFS shim needs the apsw driver (this Python's sqlite3 is in use)")
    import apsw

    class Ctl:
        left: int | None = None
        fired = 0
        vfs = None

        def arm(self, n: int) -> None:
            self.left = n

        def remove(self) -> None:
            """Back to SQLite's own VFS (a Python VFS has no WAL shared memory for readers)."""
            if self.vfs is not None:
                self.vfs.unregister()
                self.vfs = None

    ctl = Ctl()

    class FaultFile(apsw.VFSFile):
        def __init__(self, name, flags):
            path = name.filename() if isinstance(name, apsw.URIFilename) else str(name)
            self.staging = "/staging/" in path
            super().__init__("unix", name, flags)

        def xWrite(self, data, offset):
            if self.staging and ctl.left is not None:
                if ctl.left <= 0:
                    ctl.fired += 1
                    raise apsw.IOError("injected EIO")
                ctl.left -= 1
            return super().xWrite(data, offset)

    class FaultVFS(apsw.VFS):
        def __init__(self):
            super().__init__("kiosk-faulty", "unix", makedefault=True)

        def xOpen(self, name, flags):
            return FaultFile(name, flags)

    ctl.vfs = FaultVFS()
    try:
        yield ctl
    finally:
        ctl.remove()


@pytest.mark.parametrize("after_writes", [0, 40])
def test_io_error_while_sqlite_builds_the_new_store(packs, kit, faulty_vfs, after_writes):
    pack = kit.make(2, n_docs=8, chunks_per_doc=4)
    before = state(packs)
    faulty_vfs.arm(after_writes)
    with pytest.raises(PackDiskError, match="I/O error") as err:
        PackInstaller(packs, kit.settings()).install_file(pack)
    assert faulty_vfs.fired >= 1
    assert "building the knowledge base" in err.value.message
    assert "check the disk" in err.value.hint
    faulty_vfs.remove()  # healthy again
    assert_unchanged_and_answering(packs, before)
    assert PackInstaller(packs, kit.settings()).install_file(pack).version == 2


# --- I/O error at the switch: fsync of ACTIVE / trust.json / the folder ------------------------


def _fd_name(fd: int) -> str:
    return os.readlink(f"/proc/self/fd/{fd}")


@pytest.mark.parametrize(
    "target,step,links",
    [
        ("active-temp", "switching the ACTIVE pointer", True),  # before the rename
        ("folder-after-active", "switching the ACTIVE pointer", True),  # ACTIVE replaced
        ("trust-temp", "recording the version in trust.json", True),
        ("folder-after-active", "switching the ACTIVE pointer", False),  # no hard links (FAT)
    ],
)
def test_io_error_at_the_switch(packs, kit, monkeypatch, target, step, links):
    pack = kit.make(2, n_docs=8, chunks_per_doc=4)
    before = state(packs)
    if not links:

        def no_link(src, dst, *a, **kw):
            raise OSError(errno.EPERM, os.strerror(errno.EPERM))

        monkeypatch.setattr(os, "link", no_link)
    real_fsync, real_replace = os.fsync, os.replace
    renamed = {"active": False}
    fired = []

    def replace(src, dst, *a, **kw):
        real_replace(src, dst, *a, **kw)
        if Path(dst) == packs / "ACTIVE":
            renamed["active"] = True

    def fsync(fd):
        name = _fd_name(fd)
        hit = (
            (target == "active-temp" and Path(name).name.startswith(".ACTIVE."))
            or (target == "trust-temp" and Path(name).name.startswith(".trust.json."))
            or (target == "folder-after-active" and renamed["active"] and name == str(packs))
        )
        if hit and not fired:
            fired.append(name)
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real_fsync(fd)

    monkeypatch.setattr(_fsutil.os, "fsync", fsync)
    monkeypatch.setattr(_fsutil.os, "replace", replace)
    with pytest.raises(PackDiskError, match="I/O error") as err:
        PackInstaller(packs, kit.settings()).install_file(pack)
    assert fired, "the fault was never reached"
    assert step in err.value.message
    monkeypatch.undo()
    assert_unchanged_and_answering(packs, before)
    assert PackInstaller(packs, kit.settings()).install_file(pack).version == 2


def test_io_error_while_rolling_back_keeps_the_pointer(packs, kit, monkeypatch):
    """EIO on the folder fsync right after ACTIVE was renamed: the old pointer comes back."""
    PackInstaller(packs, kit.settings()).install_file(kit.make(2, n_docs=8, chunks_per_doc=4))
    before = state(packs)
    real_fsync, real_replace = os.fsync, os.replace
    renamed = []

    def replace(src, dst, *a, **kw):
        real_replace(src, dst, *a, **kw)
        if Path(dst) == packs / "ACTIVE":
            renamed.append(dst)

    def fsync(fd):
        if renamed and _fd_name(fd) == str(packs) and len(renamed) == 1:
            renamed.append("fired")
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real_fsync(fd)

    monkeypatch.setattr(_fsutil.os, "fsync", fsync)
    monkeypatch.setattr(_fsutil.os, "replace", replace)
    with pytest.raises(PackDiskError, match="rolling back.*I/O error"):
        PackInstaller(packs, kit.settings()).rollback()
    assert "fired" in renamed
    monkeypatch.undo()
    assert_unchanged_and_answering(packs, before)
    assert read_pointer(packs)["current"]["version"] == 2
    assert PackInstaller(packs, kit.settings()).rollback()["version"] == 1
