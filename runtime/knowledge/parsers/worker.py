"""Parse untrusted files in a separate process with a time and memory limit.

Why a process: PDF and Office parsers are large native-backed libraries fed
untrusted bytes. A crafted file can make them loop for ever, allocate without
bound, or crash the interpreter. Inside a worker process each of those costs
one restarted worker and a "skipped" line in the report; the ingest command
and the store it is writing stay intact. The worker is a fresh interpreter
(``python -m runtime.knowledge.parsers.worker``: no model threads inherited, and
unlike multiprocessing's spawn it never re-imports the caller's main script),
started once and reused until it misbehaves. Requests and replies are pickled
frames over its stdin/stdout.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from runtime import errors
from runtime.errors import DocumentLimitError, DocumentParseError, IngestError
from runtime.knowledge.parsers import ParsedDocument, ParsedFaq, ParseLimits

log = logging.getLogger(__name__)

ParseFn = Any  # Callable[[bytes, str, ParseLimits], ParsedDocument | ParsedFaq]
DEFAULT_PARSE_FN = "runtime.knowledge.parsers:parse_bytes"
STARTUP_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class WorkerLimits:
    timeout_s: float = 60.0
    memory_bytes: int = 2048 * 1024 * 1024  # address space of the worker (RLIMIT_AS); 0 = no cap


def _serve(conn: Connection, memory_bytes: int, parse_fn: ParseFn) -> None:
    if memory_bytes:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    logging.getLogger("pypdf").setLevel(
        logging.ERROR
    )  # per-object warnings would flood the terminal
    conn.send("ready")
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return
        if request is None:
            return
        data, name, limits = request
        try:
            reply: tuple = ("ok", parse_fn(data, name, limits))
        except IngestError as exc:
            reply = ("error", type(exc).__name__, exc.message, exc.hint)
        except MemoryError:
            reply = (
                "error",
                "DocumentLimitError",
                f"{name}: parsing needs more memory than the worker may use",
                "raise [knowledge] parse_memory_mb, or split the file",
            )
        except RecursionError:
            reply = (
                "error",
                "DocumentParseError",
                f"{name}: is nested too deeply to parse",
                "re-save the file",
            )
        except Exception as exc:  # noqa: BLE001 - any parser bug becomes a per-file reason
            reply = (
                "error",
                "DocumentParseError",
                f"{name}: parser failed ({type(exc).__name__}: {exc})",
                "re-save the file in a standard tool; report it if it opens fine elsewhere",
            )
        del data
        try:
            conn.send(reply)
        except (OSError, ValueError):
            return


def _load(target: str) -> ParseFn:
    module, attr = target.split(":")
    return getattr(importlib.import_module(module), attr)


def _error(kind: str, message: str, hint: str | None) -> IngestError:
    cls = getattr(errors, kind, None)
    if not (isinstance(cls, type) and issubclass(cls, IngestError)):
        cls = DocumentParseError
    return cls(message, hint=hint)


class ParseWorker:
    """One reusable parse process: ``parse(data, name, limits)`` or an IngestError. Close when done.

    ``parse_fn`` names the function the worker calls ("module:function"); tests
    point it at a deliberately slow or crashing parser.
    """

    def __init__(
        self, limits: WorkerLimits | None = None, parse_fn: str = DEFAULT_PARSE_FN
    ) -> None:
        self.limits = limits or WorkerLimits()
        self.parse_fn = parse_fn
        self._proc: subprocess.Popen | None = None
        self._send: Connection | None = None
        self._recv: Connection | None = None
        self.restarts = 0

    def _start(self) -> None:
        env = dict(os.environ)
        env["KIOSK_PARSE_WORKER"] = json.dumps(
            {
                "memory_bytes": self.limits.memory_bytes,
                "parse_fn": self.parse_fn,
                "sys_path": sys.path,
            }
        )
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "runtime.knowledge.parsers.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            close_fds=True,
        )
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._send = Connection(os.dup(self._proc.stdin.fileno()), readable=False)
        self._recv = Connection(os.dup(self._proc.stdout.fileno()), writable=False)
        self._proc.stdin.close()
        self._proc.stdout.close()
        # The parse time limit starts once the worker has imported its parsers.
        try:
            ready = self._recv.poll(STARTUP_TIMEOUT_S) and self._recv.recv() == "ready"
        except (EOFError, OSError):
            ready = False
        if not ready:
            code = self._stop(kill=True)
            raise IngestError(
                f"the parse worker did not start (exit code {code})",
                hint="run with -v to see its error output; check the Python environment",
            )

    def _stop(self, *, kill: bool) -> int | None:
        proc, self._proc = self._proc, None
        for conn in (self._send, self._recv):
            if conn is not None:
                conn.close()
        self._send = self._recv = None
        if proc is None:
            return None
        if kill:
            proc.kill()
        try:
            return proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait(5)

    def parse(self, data: bytes, name: str, limits: ParseLimits) -> ParsedDocument | ParsedFaq:
        if self._proc is None or self._proc.poll() is not None:
            self._stop(kill=True)
            self._start()
        assert self._send is not None and self._recv is not None
        try:
            self._send.send((data, name, limits))
            ready = self._recv.poll(self.limits.timeout_s)
            reply = self._recv.recv() if ready else None
        except (EOFError, OSError):
            code = self._stop(kill=True)
            self.restarts += 1
            raise DocumentParseError(
                f"{name}: the parser process died (exit code {code}), "
                "probably out of memory or a crash",
                hint="re-save the file in a standard tool, or raise [knowledge] parse_memory_mb",
            ) from None
        if reply is None:
            self._stop(kill=True)
            self.restarts += 1
            raise DocumentLimitError(
                f"{name}: parsing took longer than {self.limits.timeout_s:g} s and was stopped",
                hint="re-save or split the file, or raise [knowledge] parse_timeout_s",
            )
        if reply[0] == "ok":
            return reply[1]
        raise _error(reply[1], reply[2], reply[3])

    def close(self) -> None:
        if self._proc is None:
            return
        try:
            if self._send is not None:
                self._send.send(None)
        except OSError:
            pass
        if self._send is not None:
            self._send.close()
            self._send = None
        try:
            self._proc.wait(2)
        except subprocess.TimeoutExpired:
            pass
        self._stop(kill=self._proc.poll() is None)

    def __enter__(self) -> ParseWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class InlineParser:
    """Same interface, no process: for trusted inputs and tests of the parsers themselves."""

    def __init__(self, parse_fn: str = DEFAULT_PARSE_FN) -> None:
        self.parse_fn = _load(parse_fn)
        self.restarts = 0

    def parse(self, data: bytes, name: str, limits: ParseLimits) -> ParsedDocument | ParsedFaq:
        return self.parse_fn(data, name, limits)

    def close(self) -> None:
        pass

    def __enter__(self) -> InlineParser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def main() -> None:
    """Worker entry: frames on the original stdin/stdout; anything printed goes to stderr."""
    settings = json.loads(os.environ.pop("KIOSK_PARSE_WORKER", "{}"))
    for entry in settings.get("sys_path", []):
        if entry not in sys.path:
            sys.path.append(entry)
    recv = Connection(os.dup(0), writable=False)
    send_fd = os.dup(1)
    os.dup2(2, 1)  # stray prints from libraries must not corrupt the reply frames
    parse_fn = _load(settings.get("parse_fn", DEFAULT_PARSE_FN))
    for module in ("pypdf", "docx", "openpyxl", "lxml.html", "markdown_it"):
        try:  # imported before "ready", so the per-file time limit measures parsing only
            importlib.import_module(module)
        except ImportError:
            pass
    _serve(
        _Duplex(recv, Connection(send_fd, readable=False)),
        int(settings.get("memory_bytes", 0)),
        parse_fn,
    )


class _Duplex:
    def __init__(self, recv: Connection, send: Connection) -> None:
        self._r, self._s = recv, send

    def recv(self):
        return self._r.recv()

    def send(self, obj) -> None:
        self._s.send(obj)


if __name__ == "__main__":
    main()
