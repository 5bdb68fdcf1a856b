"""The generator in a supervised child process: ``ProcessGenerator``.

Why: OpenVINO and onnxruntime-genai run native code; a crash, a hang or a
memory blow-up there would take the whole kiosk with it. Here the model lives
in ``runtime.workers.generator_child``; the server keeps a socket to it and a
supervisor thread that

- notices a dead child at once (the socket reaches EOF when the process dies),
  a hung one by pings (no pong within ``ping_timeout_s``) and by time (a
  request past its ``max_time_s`` + ``grace_s``, or a cancel not confirmed
  within ``grace_s``), and a broken one by its frames (undecodable, oversize,
  malformed): the child is killed and the request in flight raises a
  ``WorkerError`` subclass;
- restarts it in the background after ``backoff_delay`` (doubling from
  ``restart_min_s`` to ``restart_max_s``, with jitter); meanwhile ``stream()``
  raises ``WorkerUnavailableError`` at once, so the answer pipeline's breaker
  opens and the fast paths answer;
- gives up only when the child reports that no generator can be loaded at all
  (state ``failed``), as the in-process loader would.

Single flight: the child decodes one request at a time. A second ``stream()``
waits for the first to finish (a cancelled one finishes within its grace) for
at most its own time budget (``max_time_s``, else ``request_timeout_s``) and
then raises ``WorkerBusyError``; the answer pipeline runs one generation at a
time anyway.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import os
import queue
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from runtime.errors import (
    InferenceError,
    WorkerBusyError,
    WorkerCrashedError,
    WorkerError,
    WorkerHungError,
    WorkerProtocolError,
    WorkerUnavailableError,
)
from runtime.inference.base import GenerationRequest, Generator
from runtime.workers.protocol import ConnectionClosed, FrameWriter, encode, recv_frame

log = logging.getLogger(__name__)

CHILD_MODULE = "runtime.workers.generator_child"
SEND_TIMEOUT_S = 2  # a child that stops reading cannot block the server for longer
TICK_S = 0.05  # how often the supervisor checks timers (deaths wake it at once)
MAX_PIECE_CHARS = 64 * 1024  # a piece is a token or a few; more is a broken worker
MAX_QUEUED_CHARS = 4 * 1024 * 1024  # text received but not yet taken by the consumer
HINT = (
    "the generator worker is restarted in the background; "
    "answers come from the quoted passage meanwhile"
)


@dataclass(frozen=True)
class WorkerSettings:
    """Limits and timers of one generator worker (``[generation]`` in the config)."""

    memory_mb: int = 4096
    memory_limit: str = "data"  # "data" (RLIMIT_DATA) or "address-space" (RLIMIT_AS)
    start_timeout_s: float = 120.0
    restart_min_s: float = 1.0
    restart_max_s: float = 30.0
    ping_interval_s: float = 2.0
    ping_timeout_s: float = 10.0
    grace_s: float = 5.0
    request_timeout_s: float = 120.0

    @classmethod
    def from_config(cls, cfg) -> WorkerSettings:
        g = cfg.generation
        return cls(
            memory_mb=g.worker_memory_mb,
            memory_limit=g.worker_memory_limit,
            start_timeout_s=g.worker_start_timeout_s,
            restart_min_s=g.worker_restart_min_s,
            restart_max_s=max(g.worker_restart_max_s, g.worker_restart_min_s),
            ping_interval_s=g.worker_ping_interval_s,
            ping_timeout_s=g.worker_ping_timeout_s,
            grace_s=g.worker_grace_s,
            request_timeout_s=g.worker_request_timeout_s,
        )


def backoff_delay(
    failures: int, *, base: float, cap: float, rng: Callable[[], float] = random.random
) -> float:
    """Seconds to wait before restart number ``failures`` (1, 2, ...) in a row.

    ``min(cap, base * 2**(failures-1))``, scaled by a random factor in [0.5, 1) so
    that several kiosks (or workers) restarted by one cause do not retry in step.
    """
    full = min(cap, base * 2 ** min(max(failures, 1) - 1, 60))
    return full * (0.5 + 0.5 * rng())


def exit_text(returncode: int | None) -> str:
    if returncode is None:
        return "is still running"
    if returncode < 0:
        try:
            return f"was killed by signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with code {returncode}"


def _proc_memory_mb(pid: int | None) -> dict[str, float]:
    if pid is None:
        return {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    out = {}
    for key, name in (("VmRSS", "rss_mb"), ("VmHWM", "peak_rss_mb"), ("VmData", "data_mb")):
        m = re.search(key + r":\s+(\d+)", text)
        if m:
            out[name] = round(int(m.group(1)) / 1024, 1)
    return out


_END = object()
_LIVE: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    """At interpreter exit, stop every worker cleanly (their children would exit on EOF anyway)."""
    for gen in list(_LIVE):
        gen.close()


@dataclass
class _Flight:
    """One request in the child."""

    id: int
    hard_deadline: float  # past this the child counts as hung
    q: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    cancelled_at: float | None = None
    queued_chars: int = 0  # bounded: a worker flooding pieces is killed, not buffered


@dataclass
class _Child:
    proc: subprocess.Popen
    sock: socket.socket
    writer: FrameWriter
    started_at: float
    ready_at: float | None = None
    ended: threading.Event = field(default_factory=threading.Event)
    protocol_error: str | None = None
    unavailable: str | None = None
    ping_n: int = 0
    ping_sent_at: float = 0.0
    pong_n: int = 0
    served_ok: int = 0
    reader: threading.Thread | None = None


class ProcessGenerator(Generator):
    """A Generator whose model runs in a supervised child process (see the module docstring).

    ``factory`` ("module:callable", with ``factory_kwargs``) makes the child build
    its generator with that callable instead of ``load_chosen_generator``: for
    tests and drills only; it is never read from the config. ``child_argv``
    replaces the child command (tests use it to run a misbehaving child).
    """

    def __init__(
        self,
        cfg=None,
        *,
        settings: WorkerSettings | None = None,
        factory: str | None = None,
        factory_kwargs: dict | None = None,
        child_argv: list[str] | None = None,
        env: dict[str, str] | None = None,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if cfg is None and factory is None and child_argv is None:
            raise ValueError("ProcessGenerator needs a config (or a test factory)")
        self.settings = settings or (
            WorkerSettings.from_config(cfg) if cfg is not None else WorkerSettings()
        )
        self._config_json = cfg.model_dump_json() if cfg is not None else None
        self._factory = factory
        self._factory_kwargs = dict(factory_kwargs or {})
        self._child_argv = list(child_argv) if child_argv else [sys.executable, "-m", CHILD_MODULE]
        self._env = dict(env or {})
        self._rng = rng
        self._cond = threading.Condition()
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._ids = itertools.count(1)
        self._child: _Child | None = None
        self._flight: _Flight | None = None
        self._thread: threading.Thread | None = None
        # Public state (read with status()).
        self.state = "starting"  # starting | ready | restarting | failed | stopped
        self.restarts = 0
        self.last_error: str | None = None
        self.note = "generator worker starting"
        self._describe: dict[str, str] = {}
        self.child_timings: dict[str, float] = {}  # the last child's import and load seconds
        self.model_id = "unknown"
        self.backend = "worker"
        self.device = "?"

    # -- lifecycle -----------------------------------------------------------------
    def start(self) -> ProcessGenerator:
        """Start the supervisor (and the first child) in the background; returns at once."""
        with self._cond:
            if self._thread is None:
                _LIVE.add(self)
                self._thread = threading.Thread(
                    target=self._supervise, name="generator-supervisor", daemon=True
                )
                self._thread.start()
        return self

    def wait_ready(self, timeout: float | None = None, *, until_crash: bool = False) -> str:
        """Wait until the worker is ready or has failed for good (or ``timeout``); the state.

        ``until_crash``: also stop waiting when a worker dies before it is ready (start-up
        should not wait through a crash loop; the restarts go on in the background).
        """
        timeout = self.settings.start_timeout_s if timeout is None else timeout
        end = time.monotonic() + timeout
        with self._cond:
            while self.state not in ("ready", "failed", "stopped"):
                if until_crash and self.last_error is not None:
                    break
                left = end - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            return self.state

    def close(self) -> None:
        """Stop the child (EOF, then SIGKILL after a grace) and the supervisor. Safe twice."""
        self._closed.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=10)
        with self._cond:
            self.state = "stopped"
            self._cond.notify_all()

    # -- what it is ----------------------------------------------------------------
    def describe(self) -> dict[str, str]:
        with self._cond:
            base = dict(self._describe) or {
                "kind": self.kind,
                "model": self.model_id,
                "backend": self.backend,
                "device": self.device,
            }
            child = self._child
            base.update(
                isolation="process",
                worker_state=self.state,
                worker_pid=str(child.proc.pid) if child and self.state == "ready" else "",
                worker_restarts=str(self.restarts),
            )
            return base

    def status(self) -> dict[str, object]:
        """For /healthz, /metrics and `kiosk doctor`: state, restarts, last error, pid, memory."""
        with self._cond:
            child = self._child
            pid = child.proc.pid if child is not None and child.proc.poll() is None else None
            out: dict[str, object] = {
                "isolation": "process",
                "state": self.state,
                "restarts": self.restarts,
                "last_error": self.last_error,
                "pid": pid,
                "note": self.note,
                "generator": dict(self._describe),
                "memory_cap_mb": self.settings.memory_mb,
                "memory_limit": self.settings.memory_limit,
                "busy": self._flight is not None,
                "child_timings_s": dict(self.child_timings),
            }
        out.update(_proc_memory_mb(pid))
        return out

    # -- generation ----------------------------------------------------------------
    def stream(self, request: GenerationRequest) -> Iterator[str]:
        budget = (
            request.max_time_s
            if request.max_time_s is not None
            else self.settings.request_timeout_s
        )
        budget = max(0.0, float(budget))
        with self._cond:
            self._check_serving()
            wait_until = time.monotonic() + budget
            while self._flight is not None:
                left = wait_until - time.monotonic()
                if left <= 0:
                    raise WorkerBusyError(
                        "the generator worker was busy with another request for this request's "
                        f"whole budget ({budget:.1f} s)",
                        hint="the worker decodes one request at a time; send fewer at once",
                    )
                self._cond.wait(min(left, 1.0))
                self._check_serving()
            child = self._child
            assert child is not None
            flight = _Flight(next(self._ids), time.monotonic() + budget + self.settings.grace_s)
            self._flight = flight
        frame = {
            "t": "request",
            "id": flight.id,
            "prompt": request.prompt,
            "system": request.system,
            "max_tokens": int(request.max_tokens),
            "stop": list(request.stop),
            "max_time_s": request.max_time_s,
            "temperature": float(request.temperature),
        }
        try:
            child.writer.send(frame)
        except WorkerProtocolError:  # our own frame is over the size cap: the child is fine
            self._end_flight(flight)
            raise
        except OSError as exc:
            self._end_flight(flight)
            raise WorkerCrashedError(
                f"the generator worker (pid {child.proc.pid}) could not be sent the request "
                f"({exc.strerror or exc})",
                hint=HINT,
            ) from None
        yield from self._receive(flight, child)

    def _receive(self, flight: _Flight, child: _Child) -> Iterator[str]:
        finished = False
        try:
            while True:
                # The supervisor ends every flight by its hard deadline; this is a safety net.
                left = flight.hard_deadline + 2 * self.settings.grace_s - time.monotonic()
                try:
                    item = flight.q.get(timeout=max(0.05, left))
                except queue.Empty:
                    finished = True
                    self._end_flight(flight)
                    self._kill(child, "the supervisor missed a hung request")
                    raise WorkerHungError(
                        "the generator worker did not finish a request in time", hint=HINT
                    ) from None
                if item is _END:
                    finished = True
                    return
                if isinstance(item, BaseException):
                    finished = True
                    raise item
                with self._cond:
                    flight.queued_chars -= len(item)
                yield item
        finally:
            if not finished:
                self._cancel(flight, child)

    def _cancel(self, flight: _Flight, child: _Child) -> None:
        """The consumer stopped early: tell the child to stop decoding (it confirms with done)."""
        with self._cond:
            if self._flight is not flight or flight.cancelled_at is not None:
                return
            flight.cancelled_at = time.monotonic()
        try:
            child.writer.send({"t": "cancel", "id": flight.id})
        except OSError:
            pass  # a dead child: the supervisor ends the flight

    def _end_flight(self, flight: _Flight, item: object = None) -> None:
        with self._cond:
            if self._flight is flight:
                self._flight = None
                if item is not None:
                    flight.q.put(item)
                self._cond.notify_all()

    def _check_serving(self) -> None:
        if self._closed.is_set():
            raise WorkerUnavailableError(
                "the generator worker is stopped", hint="restart the kiosk"
            )
        if self.state != "ready":
            what = {
                "starting": "is still starting",
                "restarting": "is restarting",
                "failed": "failed and is not restarted",
            }.get(self.state, self.state)
            last = f" (last error: {self.last_error})" if self.last_error else ""
            raise WorkerUnavailableError(
                f"the generator worker {what}{last}",
                hint=HINT
                if self.state != "failed"
                else "see `kiosk doctor` for why no generator loads",
            )

    # -- supervisor thread -----------------------------------------------------------
    def _supervise(self) -> None:
        failures = 0
        while not self._closed.is_set():
            try:
                child = self._spawn()
            except (OSError, WorkerError) as exc:
                reason = f"could not be started: {exc}"
                with self._cond:
                    self.last_error = f"the generator worker {reason}"
                    self.state = "restarting"
                    self._cond.notify_all()
                log.warning("generator worker %s", reason)
                failures += 1
            else:
                try:
                    outcome, error_cls = self._watch(child)
                except Exception as exc:  # noqa: BLE001 - the supervisor must outlive its bugs
                    log.exception("generator worker: supervising failed")
                    outcome, error_cls = (
                        f"was dropped by its supervisor ({exc!r})",
                        WorkerCrashedError,
                    )
                self._reap(child, outcome, error_cls)
                if self._closed.is_set():
                    break
                if child.unavailable is not None:
                    with self._cond:
                        self.state = "failed"
                        self.last_error = child.unavailable
                        self.note = "no generator: " + child.unavailable
                        self._cond.notify_all()
                    log.warning(
                        "generator worker: no generator can be loaded: %s", child.unavailable
                    )
                    return
                stable = child.ready_at is not None and (
                    child.served_ok > 0
                    or time.monotonic() - child.ready_at >= self.settings.restart_max_s
                )
                failures = 1 if stable else failures + 1
            delay = backoff_delay(
                failures,
                base=self.settings.restart_min_s,
                cap=self.settings.restart_max_s,
                rng=self._rng,
            )
            log.warning(
                "generator worker: restarting in %.1f s (failure %d in a row)", delay, failures
            )
            if self._closed.wait(delay):
                break
            with self._cond:
                self.restarts += 1
        with self._cond:
            self.state = "stopped"
            self._cond.notify_all()

    def _spawn(self) -> _Child:
        init = encode(  # before the process exists: a config over the frame cap fails here
            {
                "t": "init",
                "config": self._config_json,
                "factory": self._factory,
                "factory_kwargs": self._factory_kwargs,
                "memory_mb": self.settings.memory_mb,
                "memory_limit": self.settings.memory_limit,
            }
        )
        parent_sock, child_sock = socket.socketpair()
        try:
            parent_sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", SEND_TIMEOUT_S, 0)
            )
            argv = [*self._child_argv, "--fd", str(child_sock.fileno())]
            env = {**os.environ, **self._env}
            proc = subprocess.Popen(
                argv, pass_fds=(child_sock.fileno(),), stdin=subprocess.DEVNULL, env=env
            )
        except BaseException:
            parent_sock.close()
            child_sock.close()
            raise
        child_sock.close()
        child = _Child(proc, parent_sock, FrameWriter(parent_sock), time.monotonic())
        with self._cond:
            self._child = child
            if self.state != "failed":
                self.state = "starting" if self.restarts == 0 else "restarting"
            self._cond.notify_all()
        child.reader = threading.Thread(
            target=self._read, args=(child,), name="generator-worker-reader", daemon=True
        )
        child.reader.start()
        try:
            parent_sock.sendall(init)
        except OSError as exc:  # the child died already: _watch sees it
            log.warning("generator worker: sending init failed: %s", exc)
        return child

    def _watch(self, child: _Child) -> tuple[str, type[WorkerError]]:
        """Wait until this child must go; (what happened, the error for a request in flight)."""
        s = self.settings
        while True:
            self._wake.wait(TICK_S)
            self._wake.clear()
            now = time.monotonic()
            if self._closed.is_set():
                return "was stopped with the kiosk", WorkerUnavailableError
            if child.ended.is_set() or child.proc.poll() is not None:
                if child.protocol_error:
                    return f"sent a bad frame: {child.protocol_error}", WorkerProtocolError
                if child.unavailable is not None:
                    return "could not load a generator", WorkerUnavailableError
                return "died", WorkerCrashedError
            if child.ready_at is None:
                if now - child.started_at > s.start_timeout_s:
                    return f"was not ready within {s.start_timeout_s:.0f} s", WorkerHungError
                continue
            with self._cond:
                flight = self._flight
            if flight is not None and now > flight.hard_deadline:
                return "overran a request's time limit", WorkerHungError
            if (
                flight is not None
                and flight.cancelled_at is not None
                and now - flight.cancelled_at > s.grace_s
            ):
                return f"did not stop within {s.grace_s:.1f} s of a cancel", WorkerHungError
            if flight is not None and child.pong_n < child.ping_n:
                # onnxruntime-genai holds the GIL through a prefill, so pongs wait for it; while a
                # request runs its own time limit decides, and the pong clock restarts after it.
                child.ping_sent_at = now
            if child.pong_n < child.ping_n and now - child.ping_sent_at > s.ping_timeout_s:
                return f"did not answer a ping within {s.ping_timeout_s:.1f} s", WorkerHungError
            if child.pong_n == child.ping_n and now - child.ping_sent_at >= s.ping_interval_s:
                child.ping_n += 1
                child.ping_sent_at = now
                try:
                    child.writer.send({"t": "ping", "n": child.ping_n})
                except OSError:
                    pass  # dead: the next tick sees it

    def _kill(self, child: _Child, why: str) -> None:
        if child.proc.poll() is None:
            log.warning("generator worker (pid %s): killing it: %s", child.proc.pid, why)
            try:
                child.proc.kill()
            except OSError:
                pass
        self._wake.set()

    def _reap(self, child: _Child, outcome: str, error_cls: type[WorkerError]) -> None:
        """Make sure the child is gone, end the request in flight with a typed error."""
        if self._closed.is_set():
            try:
                child.sock.shutdown(socket.SHUT_RDWR)  # EOF: the child exits by itself
            except OSError:
                pass
            try:
                child.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                pass
        if child.proc.poll() is None and child.ended.is_set() and not child.protocol_error:
            try:  # EOF came first; the exit status follows within moments
                child.proc.wait(timeout=1)
            except subprocess.TimeoutExpired:
                pass
        self._kill(child, outcome)
        try:
            child.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            log.error("generator worker (pid %s) did not die after SIGKILL", child.proc.pid)
        message = f"the generator worker (pid {child.proc.pid}) {outcome}"
        if error_cls is WorkerCrashedError:
            message += f" ({exit_text(child.proc.returncode)})"
        if self._closed.is_set():
            message = "the generator worker was stopped with the kiosk"
        else:
            log.warning("%s", message)
        try:
            child.sock.close()
        except OSError:
            pass
        if child.reader is not None:
            child.reader.join(timeout=2)
        with self._cond:
            flight = self._flight
            if flight is not None:
                self._flight = None
                flight.q.put(error_cls(message, hint=HINT))
            if self._child is child:
                self._child = None
            if not self._closed.is_set():
                self.last_error = message
                self.state = "restarting"
            self._cond.notify_all()

    # -- reader thread (one per child) ------------------------------------------------
    def _read(self, child: _Child) -> None:
        try:
            while True:
                self._dispatch(child, recv_frame(child.sock))
        except (ConnectionClosed, OSError):
            pass
        except WorkerProtocolError as exc:
            child.protocol_error = exc.message
        except Exception as exc:  # noqa: BLE001 - whatever a broken frame causes: kill the worker
            log.exception("generator worker: reading its frames failed")
            child.protocol_error = f"{type(exc).__name__}: {exc}"
        finally:
            child.ended.set()
            self._wake.set()

    def _dispatch(self, child: _Child, frame: dict) -> None:
        kind = frame["t"]
        if kind == "pong":
            child.pong_n = max(child.pong_n, min(frame["n"], child.ping_n))
            return
        with self._cond:
            flight = self._flight
            if kind == "ready":
                if child.ready_at is not None:
                    raise WorkerProtocolError("the generator worker said 'ready' twice")
                describe = {str(k)[:64]: str(v)[:256] for k, v in frame["describe"].items()}
                child.ready_at = time.monotonic()
                child.ping_sent_at = child.ready_at
                self._describe = describe
                self.model_id = describe.get("model", "unknown")
                self.backend = describe.get("backend", "worker")
                self.device = describe.get("device", "?")
                self.note = frame["note"][:500]
                self.child_timings = {
                    k: float(frame[k])
                    for k in ("import_s", "load_s")
                    if isinstance(frame.get(k), (int, float))
                }
                if not self._closed.is_set() and self._child is child:
                    self.state = "ready"
                self._cond.notify_all()
            elif kind == "unavailable":
                child.unavailable = frame["reason"][:2000]
                self._wake.set()
            elif kind == "piece":
                text = frame["text"]
                if len(text) > MAX_PIECE_CHARS:
                    raise WorkerProtocolError(
                        f"the generator worker sent a piece of {len(text)} characters"
                    )
                if flight is not None and flight.id == frame["id"] and flight.cancelled_at is None:
                    flight.queued_chars += len(text)
                    if flight.queued_chars > MAX_QUEUED_CHARS:
                        raise WorkerProtocolError(
                            "the generator worker sent text far faster than it is read"
                        )
                    flight.q.put(text)
            elif kind in ("done", "error"):
                if flight is None or flight.id != frame["id"]:
                    return  # a late answer to a request already ended
                if kind == "done":
                    flight.q.put(_END)
                    if frame["reason"] == "stop":
                        child.served_ok += 1
                else:
                    flight.q.put(
                        InferenceError(
                            f"the generator failed in its worker: {frame['type']}: "
                            f"{frame['message'][:500]}",
                            hint="check `kiosk doctor`; the worker keeps serving",
                        )
                    )
                self._flight = None
                self._cond.notify_all()
            else:
                raise WorkerProtocolError(f"the generator worker sent a {kind!r} frame")
