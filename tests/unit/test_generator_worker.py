"""The generator in a supervised worker process (runtime/workers): streaming, cancel, single
flight, crash / hang / garbage / memory faults, restarts with backoff, and the frame codec.

The child runs the scripted generator of ``test_generator_worker_fake`` (this folder is put on
its PYTHONPATH) or, for protocol faults, a small misbehaving script given as ``child_argv``.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import msgpack
import pytest

from runtime.errors import (
    InferenceError,
    WorkerBusyError,
    WorkerCrashedError,
    WorkerError,
    WorkerHungError,
    WorkerProtocolError,
    WorkerUnavailableError,
)
from runtime.inference.base import GenerationRequest
from runtime.workers import protocol
from runtime.workers.supervisor import ProcessGenerator, WorkerSettings, backoff_delay

HERE = Path(__file__).resolve().parent
FACTORY = "test_generator_worker_fake:make"
FAST = WorkerSettings(
    memory_mb=0,
    start_timeout_s=60.0,
    restart_min_s=0.05,
    restart_max_s=0.2,
    ping_interval_s=0.1,
    ping_timeout_s=3.0,
    grace_s=0.5,
    request_timeout_s=30.0,
)
LONG_WAIT = 60.0  # generous bound for "eventually" (process starts on a loaded 2-core box)


def _env() -> dict[str, str]:
    return {"PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}


@pytest.fixture
def make_worker():
    made: list[ProcessGenerator] = []

    def make(settings: WorkerSettings = FAST, *, child_argv=None, ready=True, **kwargs):
        gen = ProcessGenerator(
            settings=settings,
            factory=None if child_argv else FACTORY,
            factory_kwargs=kwargs,
            child_argv=child_argv,
            env=_env(),
        )
        made.append(gen)
        gen.start()
        if ready:
            assert gen.wait_ready(LONG_WAIT) == "ready", gen.status()
        return gen

    yield make
    for gen in made:
        gen.close()


def wait_for(predicate, what: str, timeout: float = LONG_WAIT) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def req(prompt: str = "Is the hall open on Sundays?", **kw) -> GenerationRequest:
    return GenerationRequest(prompt=prompt, **kw)


# --- streaming -------------------------------------------------------------------------


def test_streams_pieces_and_describes_the_child_generator(make_worker):
    gen = make_worker(mode="ok", text="The hall is closed on Sundays.")
    assert list(gen.stream(req(max_tokens=50))) == [
        "The",
        " hall",
        " is",
        " closed",
        " on",
        " Sundays.",
    ]
    d = gen.describe()
    assert d["model"] == "scripted-generator" and d["backend"] == "scripted"
    assert d["isolation"] == "process" and d["worker_state"] == "ready"
    st = gen.status()
    assert st["pid"] and st["pid"] != os.getpid() and st["restarts"] == 0
    assert st["rss_mb"] > 0


def test_request_fields_reach_the_child(make_worker):
    gen = make_worker(mode="echo")
    out = gen.generate(
        req("周日开门吗？", system="You are a kiosk.", max_tokens=64, stop=("\n\n",))
    )
    assert out == "system=You are a kiosk. prompt=周日开门吗？ max_tokens=64 request=1"
    assert gen.generate(req("again", max_tokens=64)).endswith("request=2")


def test_stopping_early_cancels_decoding_in_the_child(make_worker, tmp_path):
    words = " ".join(f"w{i}" for i in range(400))
    gen = make_worker(mode="ok", text=words, piece_delay_s=0.05)
    it = gen.stream(req(max_tokens=400))
    got = [next(it) for _ in range(3)]
    assert got == ["w0", " w1", " w2"]
    it.close()  # the consumer went away: a cancel frame goes to the child
    # The child confirms with "done" long before the 400 pieces (20 s) would have been decoded.
    wait_for(lambda: not gen.status()["busy"], "the child to confirm the cancel", timeout=10)
    assert gen.generate(req(max_tokens=2)) == "w0 w1"
    assert gen.status()["restarts"] == 0


def test_backend_error_is_an_inference_error_and_the_worker_lives_on(make_worker):
    gen = make_worker(mode="raise")
    with pytest.raises(InferenceError, match="scripted backend failure") as err:
        list(gen.stream(req()))
    assert not isinstance(err.value, WorkerError)
    assert gen.status()["state"] == "ready" and gen.status()["restarts"] == 0


def test_a_second_concurrent_stream_waits_then_fails_fast_with_busy(make_worker):
    gen = make_worker(mode="ok", text=" ".join(["word"] * 40), piece_delay_s=0.1)
    first = gen.stream(req(max_tokens=40))
    assert next(first) == "word"
    with pytest.raises(WorkerBusyError):
        list(gen.stream(req(max_tokens=5, max_time_s=0.2)))  # its whole budget passes waiting
    # One with budget to spare waits for the first to finish and is then served.
    result: list[str] = []
    waiter = threading.Thread(
        target=lambda: result.append(gen.generate(req(max_tokens=2, max_time_s=30)))
    )
    waiter.start()
    rest = list(first)
    waiter.join(LONG_WAIT)
    assert len(rest) == 39 and result == ["word word"]


# --- faults ----------------------------------------------------------------------------


def test_sigkill_mid_stream_raises_at_once_and_a_restart_serves_the_next(make_worker):
    settings = WorkerSettings(**{**FAST.__dict__, "restart_min_s": 1.0, "restart_max_s": 2.0})
    gen = make_worker(settings, mode="ok", text=" ".join(["word"] * 200), piece_delay_s=0.05)
    pid = gen.status()["pid"]
    it = gen.stream(req(max_tokens=200))
    assert next(it) == "word"
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(WorkerCrashedError, match="SIGKILL"):
        list(it)
    # While it is down, stream() refuses at once (the pipeline's breaker counts these).
    assert gen.status()["state"] == "restarting"
    with pytest.raises(WorkerUnavailableError, match="restarting"):
        list(gen.stream(req()))
    assert gen.wait_ready(LONG_WAIT) == "ready"
    st = gen.status()
    assert st["restarts"] == 1 and st["pid"] != pid and "SIGKILL" in st["last_error"]
    assert gen.generate(req(max_tokens=2)) == "word word"


def test_a_request_hung_in_the_child_is_detected_and_the_child_replaced(make_worker):
    gen = make_worker(mode="hang")
    pid = gen.status()["pid"]
    with pytest.raises(WorkerHungError, match="time limit"):
        list(gen.stream(req(max_time_s=0.2)))  # hung past max_time_s + grace_s
    wait_for(
        lambda: gen.status()["restarts"] >= 1 and gen.status()["state"] == "ready", "a restart"
    )
    assert gen.status()["pid"] != pid


def test_a_frozen_idle_child_misses_pongs_and_is_replaced(make_worker):
    gen = make_worker(mode="ok")
    pid = gen.status()["pid"]
    os.kill(pid, signal.SIGSTOP)  # no pongs from now on
    wait_for(lambda: gen.status()["restarts"] >= 1, "the supervisor to replace a frozen child")
    assert "ping" in gen.status()["last_error"]
    assert gen.wait_ready(LONG_WAIT) == "ready" and gen.status()["pid"] != pid
    assert gen.generate(req(max_tokens=1)) == "The"


def test_memory_blow_up_hits_the_workers_cap_not_the_server(make_worker):
    settings = WorkerSettings(**{**FAST.__dict__, "memory_mb": 400})
    gen = make_worker(settings, mode="memory", alloc_mb=2048)
    pid = gen.status()["pid"]
    with pytest.raises(InferenceError, match="MemoryError"):
        list(gen.stream(req()))
    # The child exits after an out-of-memory error (EXIT_OUT_OF_MEMORY) and is replaced.
    wait_for(
        lambda: gen.status()["restarts"] >= 1 and gen.status()["state"] == "ready", "a restart"
    )
    assert gen.status()["pid"] != pid
    assert "exited with code 3" in gen.status()["last_error"]


def test_a_generator_that_cannot_load_fails_for_good_without_restarts(make_worker):
    gen = make_worker(ready=False, load_fail=True)
    assert gen.wait_ready(LONG_WAIT) == "failed"
    with pytest.raises(WorkerUnavailableError, match="failed"):
        list(gen.stream(req()))
    time.sleep(0.3)  # several backoff periods: nothing is restarted
    st = gen.status()
    assert st["restarts"] == 0 and "scripted load failure" in st["last_error"]


def test_a_child_crashing_at_start_is_restarted_with_backoff(make_worker):
    gen = make_worker(child_argv=[sys.executable, "-c", "import sys; sys.exit(7)"], ready=False)
    # Start-up does not wait through a crash loop: it returns at the first crash.
    assert gen.wait_ready(LONG_WAIT, until_crash=True) in ("starting", "restarting")
    assert "exited with code 7" in gen.status()["last_error"]
    wait_for(lambda: gen.status()["restarts"] >= 3, "three restarts")
    st = gen.status()
    assert st["state"] in ("starting", "restarting") and "exited with code 7" in st["last_error"]
    with pytest.raises(WorkerUnavailableError):
        list(gen.stream(req()))


def test_oversize_request_is_refused_without_harming_the_child(make_worker):
    gen = make_worker(mode="ok")
    with pytest.raises(WorkerProtocolError, match="over the"):
        list(gen.stream(req("x" * (protocol.MAX_FRAME_BYTES + 10))))
    assert gen.generate(req(max_tokens=2)) == "The hall"
    assert gen.status()["restarts"] == 0


# A child that gets ready properly, then answers its first request with a bad frame.
BAD_CHILD = r"""
import os, socket, struct, sys
import msgpack
from runtime.workers.protocol import FrameWriter, recv_frame
variant, fd = sys.argv[1], int(sys.argv[3])
sock = socket.socket(fileno=fd)
out = FrameWriter(sock)
recv_frame(sock)  # init
out.send({"t": "ready", "describe": {"model": "bad"}, "note": "bad child", "pid": os.getpid()})
while recv_frame(sock)["t"] != "request":
    pass
def raw(body):
    sock.sendall(struct.pack(">I", len(body)) + body)
if variant == "oversize":
    sock.sendall(struct.pack(">I", 2**31))
elif variant == "undecodable":
    raw(b"\xc1\xc1\xc1")
elif variant == "wrong-type":
    raw(msgpack.packb({"t": "piece", "id": 1, "text": 42}))
elif variant == "unknown-frame":
    raw(msgpack.packb({"t": "exec", "code": "import os"}))
elif variant == "deep":
    raw(b"\x91" * 100000 + b"\xc0")
elif variant == "not-a-map":
    raw(msgpack.packb([1, 2, 3]))
elif variant == "truncated":
    sock.sendall(struct.pack(">I", 100) + b"\x81")
    os._exit(0)
import time
time.sleep(3600)
"""


@pytest.mark.parametrize(
    "variant,error",
    [
        ("oversize", WorkerProtocolError),
        ("undecodable", WorkerProtocolError),
        ("wrong-type", WorkerProtocolError),
        ("unknown-frame", WorkerProtocolError),
        ("deep", WorkerProtocolError),
        ("not-a-map", WorkerProtocolError),
        ("truncated", WorkerCrashedError),
    ],
)
def test_garbage_from_the_child_is_a_typed_error_and_a_restart(make_worker, variant, error):
    gen = make_worker(child_argv=[sys.executable, "-c", BAD_CHILD, variant])
    pid = gen.status()["pid"]
    with pytest.raises(error) as err:
        list(gen.stream(req()))
    assert type(err.value) is error
    wait_for(lambda: gen.status()["restarts"] >= 1, "a restart")
    assert gen.status()["pid"] != pid
    wait_for(lambda: not _alive(pid), "the bad child to be gone", timeout=10)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie counts as gone
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_close_stops_the_child(make_worker):
    gen = make_worker(mode="ok")
    pid = gen.status()["pid"]
    gen.close()
    assert gen.status()["state"] == "stopped"
    assert not _alive(pid)
    with pytest.raises(WorkerUnavailableError):
        list(gen.stream(req()))


# --- backoff and frames ---------------------------------------------------------------


def test_backoff_doubles_from_the_minimum_up_to_the_cap_with_jitter():
    full = [backoff_delay(n, base=1.0, cap=30.0, rng=lambda: 1.0) for n in range(1, 9)]
    assert full == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    half = [backoff_delay(n, base=1.0, cap=30.0, rng=lambda: 0.0) for n in range(1, 9)]
    assert half == [d / 2 for d in full]
    import random

    rng = random.Random(7)
    for n in range(1, 12):
        d = backoff_delay(n, base=0.5, cap=10.0, rng=rng.random)
        top = min(10.0, 0.5 * 2 ** (n - 1))
        assert top / 2 <= d <= top
    assert backoff_delay(10_000, base=1.0, cap=30.0, rng=lambda: 1.0) == 30.0


def test_frames_round_trip_and_are_checked():
    frame = {"t": "piece", "id": 3, "text": "周日休息"}
    data = protocol.encode(frame)
    assert data[:4] == len(data[4:]).to_bytes(4, "big")
    assert protocol.decode(data[4:]) == frame
    for bad in (
        msgpack.packb({"t": "done", "id": "3", "reason": "stop"}),
        msgpack.packb({"t": "done", "id": True, "reason": "stop"}),
        msgpack.packb({"t": "piece", "id": 1}),
        msgpack.packb({1: 2}),
        msgpack.packb("piece"),
        msgpack.packb({"t": "piece", "id": 1, "text": "x"}) + b"\x00",
        msgpack.packb(
            {"t": "ready", "describe": {str(i): i for i in range(1000)}, "note": "", "pid": 1}
        ),
        b"",
    ):
        with pytest.raises(WorkerProtocolError):
            protocol.decode(bad)


def test_an_announced_oversize_frame_is_refused_before_its_body_is_read():
    a, b = socket.socketpair()
    with a, b:
        a.sendall((protocol.MAX_FRAME_BYTES + 1).to_bytes(4, "big"))  # and no body at all
        b.settimeout(5)  # a reader waiting for the body would time out instead of raising
        with pytest.raises(WorkerProtocolError, match="announced a frame"):
            protocol.recv_frame(b)
        a.sendall(b"\x00\x00")
        a.shutdown(socket.SHUT_WR)
        with pytest.raises(protocol.ConnectionClosed):
            protocol.recv_frame(b)


# --- wiring ----------------------------------------------------------------------------


def test_load_answer_generator_reports_why_not_from_the_worker(tmp_path):
    """The real child (config sent as JSON, load_chosen_generator in the child) with nothing
    prepared: no generator, and the reason, as in-process loading gives."""
    from kiosk_config import load_config
    from runtime.answer.generation import load_answer_generator

    env = {"KIOSK_DATA_DIR": str(tmp_path / "data"), "KIOSK_MODEL_CACHE": str(tmp_path / "cache")}
    cfg = load_config(environ={**env, "KIOSK_GENERATION__WORKER_START_TIMEOUT_S": "60"})
    assert cfg.generation.isolation == "process"
    gen, note = load_answer_generator(cfg)
    assert gen is None
    assert note.startswith("no generator: ") and "prepare" in note, note
    # Started early (overlapping the embedder's load), then picked up rather than started twice.
    from runtime.answer import generation

    generation.prestart_answer_generator(cfg)
    assert len(generation._PRESTARTED) == 1
    assert load_answer_generator(cfg) == (None, note)
    assert generation._PRESTARTED == {}
    thread_cfg = load_config(environ={**env, "KIOSK_GENERATION__ISOLATION": "thread"})
    in_process_gen, in_process_note = load_answer_generator(thread_cfg)
    assert in_process_gen is None and note.split(": ", 1)[1] == in_process_note.split(": ", 1)[1]


def test_a_worker_flooding_text_is_killed_not_buffered(make_worker):
    flood = BAD_CHILD.replace(
        'elif variant == "truncated":',
        'elif variant == "flood":\n'
        "    while True:\n"
        '        out.send({"t": "piece", "id": 1, "text": "x" * 60000})\n'
        'elif variant == "truncated":',
    )
    gen = make_worker(child_argv=[sys.executable, "-c", flood, "flood"])
    it = gen.stream(req())
    assert next(it) == "x" * 60000
    time.sleep(0.5)  # the consumer stalls while the worker keeps sending
    with pytest.raises(WorkerProtocolError, match="faster than it is read"):
        list(it)
    wait_for(lambda: gen.status()["restarts"] >= 1, "a restart")


PARENT = r"""
import sys
from runtime.workers.supervisor import ProcessGenerator
gen = ProcessGenerator(factory="test_generator_worker_fake:make", factory_kwargs={"mode": "ok"})
gen.start()
assert gen.wait_ready(60) == "ready", gen.status()
print(gen.status()["pid"], flush=True)
sys.stdin.read()
"""


def test_the_worker_exits_when_the_server_is_killed():
    import subprocess

    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, **_env()},
    )
    try:
        child_pid = int(parent.stdout.readline())
        assert _alive(child_pid)
        parent.kill()  # SIGKILL: no atexit, no close(); the worker sees EOF on its socket
        parent.wait(LONG_WAIT)
        wait_for(lambda: not _alive(child_pid), "the orphaned worker to exit", timeout=30)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        parent.stdin.close()
        parent.stdout.close()
