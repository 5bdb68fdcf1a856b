"""HTTP channel source: a signed index plus pack files, served as plain static files.

- Index: conditional GET (If-None-Match with the last ETag); a 304 means "no change" and
  the cached index bytes (kept in private staging) are verified again.
- Pack: downloaded to ``downloads/<sha256>.part``; an interrupted download resumes with
  ``Range: bytes=N-`` (+ If-Range) on the next attempt or the next sync. The signed index
  gives the exact length (the byte cap) and sha256.
- Limits: one total deadline for the whole fetch (retries included), a per-read timeout,
  retries with exponential backoff and full jitter on transport errors, 5xx and 429.
  A server that streams past the signed length, or trickles one byte a second, is cut off.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import random
import time
from pathlib import Path
from typing import Any

import httpx

from runtime.errors import KioskError, PackIntegrityError, PackSourceError

from .._fsutil import atomic_write_bytes
from ..channel import MAX_INDEX_BYTES, index_path, read_index
from ..trust import TrustState
from .base import Offer, PackSource, SourceProgress

log = logging.getLogger(__name__)
STATE_FILE = "http-state.json"


class _Transient(Exception):
    """A failure worth retrying (connection, timeout, 5xx, 429)."""


class HttpChannelSource(PackSource):
    name = "http"

    def __init__(
        self,
        base_url: str,
        channel: str,
        downloads: Path,
        *,
        deadline_s: float = 900.0,
        retries: int = 4,
        read_timeout_s: float = 20.0,
        backoff_s: float = 0.5,
        backoff_max_s: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        clock_skew_s: int = 300,
    ) -> None:
        self.base = base_url.rstrip("/")
        self.channel = channel
        self.downloads = Path(downloads)
        self.deadline_s = deadline_s
        self.retries = retries
        self.read_timeout_s = read_timeout_s
        self.backoff_s, self.backoff_max_s = backoff_s, backoff_max_s
        self.transport = transport
        self.clock_skew_s = clock_skew_s
        self.last_index: dict[str, Any] | None = None
        self.not_modified = False
        self.last_status: dict[str, int] = {}  # URL path -> last HTTP status (diagnostics, tests)

    # -- plumbing --
    def _client(self, timeout: float) -> httpx.Client:
        t = httpx.Timeout(
            connect=min(10.0, timeout),
            read=min(self.read_timeout_s, timeout),
            write=10.0,
            pool=10.0,
        )
        return httpx.Client(
            transport=self.transport,
            timeout=t,
            follow_redirects=False,
            trust_env=False,
            headers={"Accept-Encoding": "identity", "User-Agent": "kiosk-assistant-sync"},
        )

    def _state(self) -> dict[str, Any]:
        try:
            return json.loads((self.downloads / STATE_FILE).read_text())
        except (FileNotFoundError, ValueError):
            return {}

    def _save_state(self, state: dict[str, Any]) -> None:
        atomic_write_bytes(self.downloads / STATE_FILE, json.dumps(state).encode())

    def _retrying(self, what: str, deadline: float, attempt_fn):
        """Run ``attempt_fn()`` with retries on _Transient, backoff with full jitter, one total deadline."""  # noqa: E501
        attempt = 0
        while True:
            if time.monotonic() >= deadline:
                raise PackSourceError(
                    f"{what}: the {self.deadline_s:.0f} s deadline passed",
                    hint="the channel is slow or unreachable; the next sync resumes",
                )
            try:
                return attempt_fn()
            except _Transient as exc:
                attempt += 1
                if attempt > self.retries:
                    raise PackSourceError(
                        f"{what}: failed after {attempt} attempts ({exc})",
                        hint="check the network and [packs] channel_url; the next sync retries",
                    ) from None
                pause = random.uniform(
                    0, min(self.backoff_max_s, self.backoff_s * 2 ** (attempt - 1))
                )
                pause = min(pause, max(0.0, deadline - time.monotonic()))
                log.warning("%s: %s; retry %d in %.1f s", what, exc, attempt, pause)
                time.sleep(pause)

    # -- index --
    def _fetch_index(self, deadline: float) -> tuple[bytes, bool]:
        state = self._state()
        url = f"{self.base}/{index_path(self.channel)}"
        headers = {}
        cached = (
            base64.b64decode(state["index"])
            if state.get("url") == url and state.get("index")
            else None
        )
        if cached is not None and state.get("etag"):
            headers["If-None-Match"] = state["etag"]

        def attempt() -> tuple[bytes, bool]:
            try:
                with (
                    self._client(max(0.1, deadline - time.monotonic())) as client,
                    client.stream("GET", url, headers=headers) as resp,
                ):
                    self.last_status[index_path(self.channel)] = resp.status_code
                    if resp.status_code == 304 and cached is not None:
                        return cached, True
                    _raise_for(resp, url)
                    body = _read_capped(resp, MAX_INDEX_BYTES, deadline, url)
                    etag = resp.headers.get("ETag")
            except httpx.TransportError as exc:
                raise _Transient(f"{type(exc).__name__}: {exc}") from None
            self._save_state({"url": url, "etag": etag, "index": base64.b64encode(body).decode()})
            return body, False

        return self._retrying(f"channel index {url}", deadline, attempt)

    def offer(self, trust: TrustState, trusted: set[bytes]) -> Offer | None:
        deadline = time.monotonic() + self.deadline_s
        data, self.not_modified = self._fetch_index(deadline)
        index = read_index(data, trusted, trust, self.channel, clock_skew_s=self.clock_skew_s)
        self.last_index = index
        p = index["pack"]
        if p["version"] <= trust.highest(p["pack_id"])[0]:
            return None
        return Offer(
            self.name,
            p["pack_id"],
            p["version"],
            p["length"],
            p["file"],
            sha256=p["sha256"],
            manifest_sha256=p["manifest_sha256"],
            index_created=index["created"],
        )

    def key_lists(self, trust: TrustState, trusted: set[bytes]) -> list[bytes]:
        """The key list the last index names (fetched after offer(); small, capped)."""
        if not self.last_index or not self.last_index.get("keys"):
            return []
        k = self.last_index["keys"]
        url = f"{self.base}/{k['file']}"
        deadline = time.monotonic() + min(self.deadline_s, 60)

        def attempt() -> bytes:
            try:
                with (
                    self._client(max(0.1, deadline - time.monotonic())) as client,
                    client.stream("GET", url) as resp,
                ):
                    _raise_for(resp, url)
                    return _read_capped(resp, min(k["length"], 64 * 1024), deadline, url)
            except httpx.TransportError as exc:
                raise _Transient(str(exc)) from None

        data = self._retrying(f"key list {url}", deadline, attempt)
        if hashlib.sha256(data).hexdigest() != k["sha256"]:
            raise PackIntegrityError(
                f"key list {url} does not match the signed index", hint="republish the channel"
            )
        return [data]

    # -- pack --
    def fetch(self, offer: Offer, downloads: Path, progress: SourceProgress | None = None) -> Path:
        downloads = Path(downloads)
        url = f"{self.base}/{offer.ref}"
        part = downloads / f"{offer.sha256}.part"
        for stale in downloads.glob("*.part"):  # only one download is resumed: the one offered now
            if stale != part:
                stale.unlink(missing_ok=True)
        deadline = time.monotonic() + self.deadline_s
        etag_file = downloads / f"{offer.sha256}.etag"

        def attempt() -> Path:
            have = part.stat().st_size if part.exists() else 0
            if have > offer.length:
                part.unlink()
                have = 0
            if have == offer.length:
                return part
            headers = {}
            if have:
                headers["Range"] = f"bytes={have}-"
                if etag_file.exists():
                    headers["If-Range"] = etag_file.read_text()
            try:
                with (
                    self._client(max(0.1, deadline - time.monotonic())) as client,
                    client.stream("GET", url, headers=headers) as resp,
                ):
                    self.last_status[offer.ref] = resp.status_code
                    if resp.status_code == 416:  # our partial file is bad: start over
                        part.unlink(missing_ok=True)
                        raise _Transient("range not satisfiable; restarting")
                    _raise_for(resp, url)
                    if resp.status_code == 206:
                        start = _content_range_start(resp.headers.get("Content-Range", ""))
                        if start != have:
                            part.unlink(missing_ok=True)
                            raise _Transient(f"server resumed at {start}, not {have}; restarting")
                        mode = "ab"
                    else:
                        have, mode = 0, "wb"
                    if resp.headers.get("ETag"):
                        etag_file.write_text(resp.headers["ETag"])
                    declared = resp.headers.get("Content-Length")
                    if (
                        declared is not None
                        and declared.isdigit()
                        and have + int(declared) > offer.length
                    ):
                        raise PackSourceError(
                            f"pack {url}: server announces {have + int(declared)} bytes, "
                            f"the signed index says {offer.length}",
                            hint="the server holds another file than the index names",
                        )
                    with open(part, mode) as fh:
                        got = have
                        for chunk in resp.iter_raw():
                            got += len(chunk)
                            if got > offer.length:
                                fh.write(chunk[: len(chunk) - (got - offer.length)])
                                raise PackSourceError(
                                    f"pack {url}: server sent more than the signed "
                                    f"{offer.length} bytes",
                                    hint="the server is misconfigured or hostile",
                                )
                            fh.write(chunk)
                            if progress:
                                progress("download", got, offer.length)
                            if time.monotonic() > deadline:
                                fh.flush()
                                raise PackSourceError(
                                    f"pack {url}: the {self.deadline_s:.0f} s deadline passed "
                                    f"after {got} of {offer.length} bytes",
                                    hint="the download resumes at the next sync",
                                )
                        fh.flush()
                        os.fsync(fh.fileno())
            except httpx.TransportError as exc:
                raise _Transient(f"{type(exc).__name__}: {exc}") from None
            except OSError as exc:  # writing the download: disk full, I/O error
                from ..install import disk_error, is_disk_full

                if is_disk_full(exc):  # a partial pack must not keep the kiosk's disk full
                    part.unlink(missing_ok=True)
                raise disk_error(exc, f"downloading pack {url}", downloads) from exc
            if part.stat().st_size < offer.length:
                raise _Transient(
                    f"connection closed after {part.stat().st_size} of {offer.length} bytes"
                )
            return part

        try:
            self._retrying(f"pack {url}", deadline, attempt)
        except KioskError:
            if part.exists() and part.stat().st_size > offer.length:
                part.unlink()
            raise
        h = hashlib.sha256()
        with open(part, "rb") as fh:
            while buf := fh.read(1 << 20):
                h.update(buf)
        if h.hexdigest() != offer.sha256:
            part.unlink(missing_ok=True)
            raise PackIntegrityError(
                f"pack {url} does not match the sha256 in the signed index",
                hint="the server holds a damaged or different file; it is downloaded afresh next time",  # noqa: E501
            )
        done = downloads / f"http-{offer.sha256[:16]}.kpack"
        os.replace(part, done)
        etag_file.unlink(missing_ok=True)
        return done


def _raise_for(resp: httpx.Response, url: str) -> None:
    code = resp.status_code
    if code in (200, 206):
        return
    if code == 429 or code >= 500:
        raise _Transient(f"HTTP {code}")
    raise PackSourceError(
        f"{url}: HTTP {code}",
        hint="check [packs] channel_url and channel; is the channel published?",
    )


def _read_capped(resp: httpx.Response, cap: int, deadline: float, url: str) -> bytes:
    buf = bytearray()
    for chunk in resp.iter_raw():
        buf += chunk
        if len(buf) > cap:
            raise PackSourceError(
                f"{url}: more than {cap} bytes", hint="the server is misconfigured or hostile"
            )
        if time.monotonic() > deadline:
            raise PackSourceError(
                f"{url}: deadline passed while reading", hint="the channel is too slow"
            )
    return bytes(buf)


def _content_range_start(value: str) -> int:
    # "bytes 100-199/200"
    try:
        return int(value.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return -1
