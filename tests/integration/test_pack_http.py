"""Sync from a published channel served by a real nginx on loopback, and from hostile servers."""

from __future__ import annotations

import http.server
import socketserver
import threading
import time

import pytest
from fakes import FakeEmbedder
from nginx_server import Nginx

from runtime.errors import PackSourceError
from runtime.packs.active import ActiveKnowledge
from runtime.packs.channel import publish
from runtime.packs.install import PackInstaller, read_pointer
from runtime.packs.sample import PackKit
from runtime.packs.signing import make_key_list
from runtime.packs.sources.http import HttpChannelSource
from runtime.packs.sync import SyncService
from runtime.packs.trust import TrustState

pytestmark = pytest.mark.network_loopback


@pytest.fixture
def kit(tmp_path):
    return PackKit(tmp_path / "pub", FakeEmbedder(64))


@pytest.fixture
def channel(tmp_path):
    root = tmp_path / "channel"
    root.mkdir()
    return root


@pytest.fixture
def nginx(tmp_path, channel):
    server = Nginx(channel, tmp_path / "nginx").start()
    yield server
    server.stop()


def _kiosk(tmp_path, kit, url, **kw):
    inst = PackInstaller(tmp_path / "kiosk" / "packs", kit.settings())
    svc = SyncService(inst, [])
    src = HttpChannelSource(url, "stable", svc.downloads, backoff_s=0.05, backoff_max_s=0.2, **kw)
    svc.sources = [src]
    return inst, svc, src


def test_first_sync_then_304_then_update(tmp_path, kit, channel, nginx):
    publish(kit.make(1), channel, "stable", kit.sign)
    inst, svc, src = _kiosk(tmp_path, kit, nginx.url)
    r = svc.run_once()
    assert (r["outcome"], r["version"]) == ("installed", 1), r
    assert TrustState.load(inst.dir).index["stable"] > 0

    r = svc.run_once()
    assert r["outcome"] == "up-to-date" and r["not_modified"] is True
    index_requests = [line for line in nginx.log_lines() if "/stable/index.kidx" in line]
    assert index_requests[-1].startswith("304 ") and "inm=[-]" not in index_requests[-1]

    time.sleep(
        1.1
    )  # nginx's ETag is mtime (seconds) + size: a same-second republish would look unchanged
    publish(kit.make(2, tag="two"), channel, "stable", kit.sign)
    r = svc.run_once()
    assert (r["outcome"], r["version"]) == ("installed", 2)
    assert nginx.log_lines()[-1].startswith("200 GET /packs/demo-v2.kpack")
    active = ActiveKnowledge(inst.dir)
    with active.acquire() as store:
        assert store.search("permit0two", None, k=1, mode="keyword")[0].citation.pack_version == 2
    active.close()


def test_interrupted_download_resumes_with_range(tmp_path, kit, channel, nginx):
    pack = kit.make(1, n_docs=60, chunks_per_doc=8)
    size = pack.stat().st_size
    assert size > 200_000  # several seconds at the /slow/ rate of 64 kB/s
    publish(pack, channel, "stable", kit.sign)
    inst, svc, src = _kiosk(tmp_path, kit, f"{nginx.url}/slow", deadline_s=1.0)
    r = svc.run_once()
    assert r["ok"] is False and r["error_type"] == "PackSourceError" and "deadline" in r["error"], r
    parts = list(svc.downloads.glob("*.part"))
    assert len(parts) == 1 and 0 < parts[0].stat().st_size < size
    have = parts[0].stat().st_size
    assert not (inst.dir / "ACTIVE").exists()

    src.deadline_s = 60.0
    r = svc.run_once()
    assert (r["outcome"], r["version"]) == ("installed", 1), r
    pack_lines = [line for line in nginx.log_lines() if "/slow/packs/demo-v1.kpack" in line]
    assert pack_lines[-1].startswith("206 ") and f"range=[bytes={have}-]" in pack_lines[-1]
    assert int(pack_lines[-1].rsplit("sent=", 1)[1]) == size - have  # only the rest was sent
    assert list(svc.downloads.glob("*.part")) == []


def test_server_gone_kiosk_keeps_answering(tmp_path, kit, channel, nginx):
    publish(kit.make(1), channel, "stable", kit.sign)
    inst, svc, src = _kiosk(tmp_path, kit, nginx.url, retries=2)
    assert svc.run_once()["outcome"] == "installed"
    before = (inst.dir / "ACTIVE").read_bytes(), (inst.dir / "trust.json").read_bytes()
    nginx.stop()
    r = svc.run_once()
    assert (
        r["ok"] is False and r["error_type"] == "PackSourceError" and "3 attempts" in r["error"]
    ), r
    assert ((inst.dir / "ACTIVE").read_bytes(), (inst.dir / "trust.json").read_bytes()) == before
    active = ActiveKnowledge(inst.dir)
    with active.acquire() as store:
        assert (
            store.search("permit0", None, k=1, mode="keyword")[0].citation.source_path
            == "docs/permit-00000.md"
        )
    active.close()
    assert svc.status()["active"]["version"] == 1 and svc.status()["last_result"]["ok"] is False


def test_tampered_file_on_the_server_and_old_index_replay(tmp_path, kit, channel, nginx):
    publish(kit.make(1), channel, "stable", kit.sign)
    old_index = (channel / "stable" / "index.kidx").read_bytes()
    inst, svc, src = _kiosk(tmp_path, kit, nginx.url)
    assert svc.run_once()["outcome"] == "installed"
    time.sleep(1.1)  # index times have one-second resolution
    publish(kit.make(2), channel, "stable", kit.sign)
    p = channel / "packs" / "demo-v2.kpack"
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 1
    p.write_bytes(bytes(data))
    r = svc.run_once()
    assert r["error_type"] == "PackIntegrityError" and "signed index" in r["error"], r
    assert read_pointer(inst.dir)["current"]["version"] == 1
    # a mirror serving the older index is refused as a replay
    time.sleep(1.1)  # (a same-second, same-size rewrite would keep nginx's ETag and answer 304)
    (channel / "stable" / "index.kidx").write_bytes(old_index)
    r = svc.run_once()
    assert r["error_type"] == "PackVersionError" and "older than one already seen" in r["error"], r


def test_key_rotation_through_the_channel(tmp_path, kit, channel, nginx):
    new = PackKit(tmp_path / "new", FakeEmbedder(64))
    publish(kit.make(1), channel, "stable", kit.sign)
    inst, svc, src = _kiosk(tmp_path, kit, nginx.url)
    assert svc.run_once()["outcome"] == "installed"
    rotation = tmp_path / "keys-v1.kkeys"
    rotation.write_bytes(make_key_list(kit.key, [kit.public_key, new.public_key], 1))
    time.sleep(1.1)
    publish(
        new.make(2), channel, "stable", kit.sign, key_list=rotation
    )  # index by the old key, pack by the new
    r = svc.run_once()
    assert (r["outcome"], r["version"]) == ("installed", 2), r
    assert TrustState.load(inst.dir).keyring["version"] == 1


# --- hostile servers (plain Python servers on loopback: nginx will not misbehave on purpose) ---


class _Hostile(http.server.BaseHTTPRequestHandler):
    index = b""
    mode = "forever"

    def log_message(self, *a):  # keep test output clean
        pass

    def do_GET(self):  # noqa: N802
        if self.path.endswith("index.kidx"):
            self.send_response(200)
            self.send_header("Content-Length", str(len(self.index)))
            self.end_headers()
            self.wfile.write(self.index)
            return
        self.send_response(200)
        self.end_headers()  # no Content-Length: a stream
        try:
            if self.mode == "forever":
                while True:
                    self.wfile.write(b"\0" * 65536)
            else:
                for _ in range(600):
                    self.wfile.write(b"\0")
                    self.wfile.flush()
                    time.sleep(1.0 if self.mode == "trickle" else 0)
        except (BrokenPipeError, ConnectionResetError):
            pass


@pytest.fixture
def hostile(tmp_path, kit, channel):
    publish(kit.make(1), channel, "stable", kit.sign)

    class Handler(_Hostile):
        index = (channel / "stable" / "index.kidx").read_bytes()

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server, Handler
    server.shutdown()
    server.server_close()


def test_server_streaming_forever_is_cut_at_the_signed_length(tmp_path, kit, hostile):
    server, handler = hostile
    handler.mode = "forever"
    inst, svc, src = _kiosk(
        tmp_path, kit, f"http://127.0.0.1:{server.server_address[1]}", deadline_s=30
    )
    r = svc.run_once()
    assert r["error_type"] == "PackSourceError" and "more than the signed" in r["error"], r
    assert not (inst.dir / "ACTIVE").exists()
    assert list(svc.downloads.glob("*.part")) == [] or all(
        p.stat().st_size <= src.last_index["pack"]["length"] for p in svc.downloads.glob("*.part")
    )


def test_one_byte_a_second_hits_the_deadline(tmp_path, kit, hostile):
    server, handler = hostile
    handler.mode = "trickle"
    inst, svc, src = _kiosk(
        tmp_path, kit, f"http://127.0.0.1:{server.server_address[1]}", deadline_s=2.5
    )
    t0 = time.monotonic()
    r = svc.run_once()
    assert r["error_type"] == "PackSourceError" and "deadline" in r["error"], r
    assert time.monotonic() - t0 < 30  # guards a hang only
    assert not (inst.dir / "ACTIVE").exists()


def test_deadline_error_is_typed_when_called_directly(tmp_path, kit, hostile):
    server, handler = hostile
    handler.mode = "trickle"
    inst, svc, src = _kiosk(
        tmp_path, kit, f"http://127.0.0.1:{server.server_address[1]}", deadline_s=1.5
    )
    offer = src.offer(TrustState(), {bytes(kit.key.verify_key)})
    with pytest.raises(PackSourceError, match="deadline"):
        src.fetch(offer, svc.downloads)


def test_disk_full_during_a_download_is_typed_and_frees_the_partial_file(
    tmp_path, kit, channel, nginx, monkeypatch
):
    """ENOSPC while writing the download (injected into the source's file writes): the sync
    reports PackDiskError, the partial file is removed (it must not keep the disk full),
    nothing is installed, and the next sync after space is freed installs the pack."""
    import errno
    import io

    import runtime.packs.sources.http as http_source

    publish(kit.make(1, n_docs=30, chunks_per_doc=4), channel, "stable", kit.sign)
    inst, svc, src = _kiosk(tmp_path, kit, nginx.url)
    real_open = open

    class FullDisk(io.RawIOBase):
        def __init__(self, fh):
            self.fh, self.written = fh, 0

        def write(self, data):
            if self.written + len(data) > 16 * 1024:
                raise OSError(errno.ENOSPC, "No space left on device")
            self.written += len(data)
            return self.fh.write(data)

        def __getattr__(self, name):
            return getattr(self.fh, name)

        def __exit__(self, *exc):
            self.fh.close()

    def open_(path, mode="r", *a, **kw):
        fh = real_open(path, mode, *a, **kw)
        return FullDisk(fh) if str(path).endswith(".part") and "b" in mode else fh

    monkeypatch.setattr(http_source, "open", open_, raising=False)
    r = svc.run_once()
    assert r["ok"] is False and r["error_type"] == "PackDiskError", r
    assert "downloading pack" in r["error"] and "disk is full" in r["error"], r
    assert list(svc.downloads.glob("*.part")) == []
    assert not (inst.dir / "ACTIVE").exists()

    monkeypatch.undo()
    r = svc.run_once()
    assert (r["outcome"], r["version"]) == ("installed", 1), r
