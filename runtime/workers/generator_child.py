"""The generator worker process: load the chosen generator, serve requests over one socket.

Started by ``runtime.workers.supervisor.ProcessGenerator`` as
``python -m runtime.workers.generator_child --fd N``, where N is its end of a
socketpair. The first frame is ``init``: the validated config as JSON (not a
pickled object), the memory cap, and, for tests only, a ``factory``
("module:callable") that builds the generator instead of
``load_chosen_generator``. Only the parent can write to the socket, so only
the parent can name a factory.

One request at a time: the main thread decodes, a reader thread answers pings
and sets the cancel flag, so a cancel or a ping is seen while a generation
runs. When the parent goes away (EOF) the process exits at once, without
waiting for native code to finish.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import queue
import resource
import signal
import socket
import sys
import threading
import time

T_START = time.perf_counter()  # before the imports below, to time them

from runtime.workers.protocol import ConnectionClosed, FrameWriter, recv_frame  # noqa: E402

log = logging.getLogger("runtime.workers.generator_child")

EXIT_PARENT_GONE = 0
EXIT_OUT_OF_MEMORY = 3
EXIT_BAD_INIT = 4


def set_memory_cap(memory_mb: int, kind: str) -> None:
    """Cap this process's memory so a blow-up fails here, not on the whole box.

    RLIMIT_DATA counts the heap and private anonymous maps (what a runaway
    allocation grows); RLIMIT_AS also counts reserved address space, which
    OpenVINO maps generously (about 2.2 GB of address space for the 0.5B
    against 0.9 GB of data), so "data" is the default.
    """
    if memory_mb <= 0:
        return
    limit = resource.RLIMIT_AS if kind == "address-space" else resource.RLIMIT_DATA
    cap = int(memory_mb) * 1024 * 1024
    _, hard = resource.getrlimit(limit)
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(limit, (cap, hard))


def _load(init: dict):
    """(generator, one line saying what was loaded) or (None, why not)."""
    factory = init.get("factory")
    if factory:
        module, _, name = str(factory).partition(":")
        make = getattr(importlib.import_module(module), name)
        gen = make(**dict(init.get("factory_kwargs") or {}))
        return gen, f"generator {gen.model_id} on {gen.backend}/{gen.device} (factory {factory})"
    from kiosk_config.loader import validate_config
    from runtime.inference.generator_select import load_chosen_generator

    cfg = validate_config(_json_loads(init.get("config")), "the generator worker's init frame")
    gen, choice = load_chosen_generator(cfg)
    if gen is None:
        return None, "; ".join(choice.reasons) or "no usable generator"
    return gen, f"generator {choice.model_id} ({choice.variant}) on {gen.backend}/{gen.device}"


def _json_loads(text):
    import json

    if not isinstance(text, str):
        raise ValueError("the init frame carries no config")
    return json.loads(text)


class Child:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.out = FrameWriter(sock)
        self.requests: queue.Queue = queue.Queue(maxsize=4)
        self.current: int | None = None
        self.cancelled: set[int] = set()
        self.lock = threading.Lock()

    # -- reader thread -------------------------------------------------------------
    def read_loop(self) -> None:
        try:
            while True:
                frame = recv_frame(self.sock)
                kind = frame["t"]
                if kind == "ping":
                    self.out.send({"t": "pong", "n": frame["n"]})
                elif kind == "cancel":
                    with self.lock:
                        self.cancelled.add(frame["id"])
                elif kind == "request":
                    try:
                        self.requests.put_nowait(frame)
                    except queue.Full:
                        self.out.send(
                            {
                                "t": "error",
                                "id": frame["id"],
                                "type": "WorkerBusyError",
                                "message": "the worker already has requests waiting",
                            }
                        )
        except (ConnectionClosed, OSError):
            pass
        except Exception:  # noqa: BLE001 - a bad frame from the parent: nothing sane to do but exit
            log.exception("generator worker: bad frame from the server")
        os._exit(EXIT_PARENT_GONE)  # the server is gone or broken: do not wait for native code

    # -- main thread ---------------------------------------------------------------
    def serve(self, gen) -> None:
        from runtime.inference.base import GenerationRequest

        while True:
            frame = self.requests.get()
            rid = frame["id"]
            with self.lock:
                self.cancelled -= {i for i in self.cancelled if i < rid}  # late cancels of old ids
                if rid in self.cancelled:  # cancelled before it started
                    self.cancelled.discard(rid)
                    self.out.send({"t": "done", "id": rid, "reason": "cancelled"})
                    continue
            max_time = frame.get("max_time_s")
            request = GenerationRequest(
                prompt=frame["prompt"],
                system=frame.get("system") if isinstance(frame.get("system"), str) else None,
                max_tokens=int(frame["max_tokens"]),
                stop=tuple(s for s in frame.get("stop") or () if isinstance(s, str)),
                max_time_s=float(max_time) if isinstance(max_time, (int, float)) else None,
                temperature=float(frame.get("temperature") or 0.0),
            )
            reason = "stop"
            pieces = None
            try:
                pieces = gen.stream(request)
                for piece in pieces:
                    if rid in self.cancelled:
                        reason = "cancelled"
                        break
                    if piece:
                        self.out.send({"t": "piece", "id": rid, "text": str(piece)})
            except MemoryError:
                self._error(rid, "MemoryError", "out of memory while generating")
                os._exit(EXIT_OUT_OF_MEMORY)  # start clean rather than limp on a fragmented heap
            except Exception as exc:  # noqa: BLE001 - reported to the server, the worker lives on
                self._error(rid, type(exc).__name__, getattr(exc, "message", str(exc)))
                continue
            finally:
                if pieces is not None and hasattr(pieces, "close"):
                    pieces.close()  # stops the backend's decoding (streamer returns STOP)
                with self.lock:
                    self.cancelled.discard(rid)
            self.out.send({"t": "done", "id": rid, "reason": reason})

    def _error(self, rid: int, kind: str, message: str) -> None:
        self.out.send({"t": "error", "id": rid, "type": kind[:80], "message": str(message)[:2000]})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="kiosk generator worker (started by the server)")
    ap.add_argument("--fd", type=int, required=True, help="this worker's end of the socketpair")
    args = ap.parse_args(argv)
    signal.signal(
        signal.SIGINT, signal.SIG_IGN
    )  # Ctrl-C in the server's terminal: the server stops us
    os.dup2(2, 1)  # native libraries that print must not write into the server's stdout
    logging.basicConfig(
        level=os.environ.get("KIOSK_WORKER_LOG_LEVEL", "WARNING"),
        format="%(asctime)s generator-worker[%(process)d] %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    sock = socket.socket(fileno=args.fd)
    child = Child(sock)
    try:
        init = recv_frame(sock)
    except Exception:  # noqa: BLE001
        log.exception("generator worker: no valid init frame")
        return EXIT_BAD_INIT
    if init["t"] != "init":
        return EXIT_BAD_INIT
    set_memory_cap(int(init.get("memory_mb") or 0), str(init.get("memory_limit") or "data"))
    t_imported = time.perf_counter()
    threading.Thread(target=child.read_loop, name="worker-reader", daemon=True).start()
    try:
        gen, note = _load(init)
    except MemoryError:
        child.out.send({"t": "unavailable", "reason": "out of memory while loading the generator"})
        return EXIT_OUT_OF_MEMORY
    except Exception as exc:  # noqa: BLE001 - reported to the server, which serves the fast paths
        log.exception("generator worker: loading failed")
        child.out.send(
            {"t": "unavailable", "reason": f"loading failed ({type(exc).__name__}: {exc})"[:2000]}
        )
        return 0
    if gen is None:
        child.out.send({"t": "unavailable", "reason": note[:2000]})
        return 0
    describe = {str(k): str(v) for k, v in gen.describe().items()}
    child.out.send(
        {
            "t": "ready",
            "describe": describe,
            "note": note,
            "pid": os.getpid(),
            "import_s": round(t_imported - T_START, 3),
            "load_s": round(time.perf_counter() - t_imported, 3),
        }
    )
    child.serve(gen)
    return 0


if __name__ == "__main__":
    sys.exit(main())
