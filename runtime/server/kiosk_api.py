"""The kiosk's own endpoints: ask (JSON or SSE), FAQ list, session reset, speak, voice (WebSocket).

- ``POST /v1/kiosk/ask`` ``{"question", "history"?, "session"?, "stream"?}``: JSON answer, or with
  ``"stream": true`` (or ``Accept: text/event-stream``) server-sent events ``sources`` (best
  passage, at once), ``partial`` (generated text so far, unchecked), ``replace`` (the generated
  text failed its check: show this instead), ``path`` and ``done`` (the whole answer).
- ``GET /v1/kiosk/faq?lang=zh``: the static FAQ (what the start screen offers as buttons).
- ``POST /v1/kiosk/session/reset`` ``{"session"}``: forget a session's history (next visitor).
- ``POST /v1/kiosk/speak`` ``{"text", "language"}``: a WAV of the text, when a voice is loaded.
- ``WS /v1/kiosk/voice``: binary 16 kHz mono s16le chunks in, ``speech_start``/``partial``/``final``
  events out, then the answer to the final transcript; text message ``{"type": "end"}`` ends
  the utterance (push-to-talk release). Messages over ``max_ws_message_bytes`` close it (1009).

Sessions are kept server-side only as a short, bounded history (``SessionStore``), so a
kiosk screen can send a session id instead of its whole history.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import threading
import time
import wave
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from runtime.errors import KioskError

from .common import (
    SSE_HEADERS,
    FastJSONResponse,
    answer_dict,
    busy_response,
    error_response,
    read_json,
    reject,
    source_dict,
    sse,
    sse_response,
    str_field,
)
from .security import is_loopback
from .turns import TurnRunner

log = logging.getLogger(__name__)

MAX_QUESTION_CHARS = 2000
RATE_CHECKED = "kiosk.rate_checked"  # scope key: this request's rate-limit token is already spent
MAX_HISTORY = 20
MAX_SPEAK_CHARS = 2000


class SessionStore:
    """Recent turns per session id: bounded in sessions, turns and age."""

    def __init__(
        self, *, max_sessions: int = 1000, max_turns: int = 6, ttl_s: float = 600.0
    ) -> None:
        self.max_sessions, self.max_turns, self.ttl_s = max_sessions, max_turns, ttl_s
        self._data: OrderedDict[str, tuple[float, list]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, sid: str) -> list:
        with self._lock:
            item = self._data.get(sid)
            if item is None or time.monotonic() - item[0] > self.ttl_s:
                self._data.pop(sid, None)
                return []
            return list(item[1])

    def append(self, sid: str, *turns) -> None:
        with self._lock:
            hist = self._data.get(sid, (0.0, []))[1]
            hist = [*hist, *turns][-self.max_turns :]
            self._data[sid] = (time.monotonic(), hist)
            self._data.move_to_end(sid)
            while len(self._data) > self.max_sessions:
                self._data.popitem(last=False)

    def reset(self, sid: str) -> bool:
        with self._lock:
            return self._data.pop(sid, None) is not None


def parse_history(raw: Any) -> list:
    from runtime.answer.types import Turn

    if raw is None:
        return []
    if not isinstance(raw, list) or len(raw) > MAX_HISTORY:
        raise reject(f'"history" must be a list of at most {MAX_HISTORY} turns', None, 422)
    turns = []
    for i, t in enumerate(raw):
        if (
            not isinstance(t, dict)
            or t.get("role") not in ("user", "assistant")
            or not isinstance(t.get("content"), str)
        ):
            raise reject(
                f'history[{i}] must be {{"role": "user"|"assistant", "content": "..."}}', None, 422
            )
        turns.append(Turn(t["role"], t["content"][:MAX_QUESTION_CHARS]))
    return turns


def answer_json(answer: Any, degraded: bool) -> dict:
    d = answer_dict(answer)
    d.pop("generated", None)  # raw model output is for evaluation, not for visitors
    d["degraded"] = degraded
    return d


def _speak_to_samples(synth: Any, text: str, language: str) -> tuple[Any, int]:
    """Text → (int16 samples, rate) the way `kiosk speak` does it: sentence by sentence
    (a voice model has a length limit per call), joined into one clip."""
    from runtime.speech.speaker import CollectSink, Speaker

    sink = CollectSink()
    Speaker({language: synth}, sink, max_chars=MAX_SPEAK_CHARS).speak(text, language)
    return sink.samples()


class KioskRoutes:
    def __init__(
        self,
        turns: TurnRunner,
        *,
        max_body_bytes: int = 256 * 1024,
        max_ws_message_bytes: int = 65536,
        get_synthesizer: Callable[[str], Any] = lambda lang: None,
        make_voice_session: Callable[[], Any] | None = None,
        sessions: SessionStore | None = None,
    ) -> None:
        self.turns = turns
        self.max_body_bytes = max_body_bytes
        self.max_ws_message_bytes = max_ws_message_bytes
        self.get_synthesizer = get_synthesizer
        self.make_voice_session = make_voice_session
        self.sessions = sessions or SessionStore()

    def routes(self) -> list:
        return [
            Route("/v1/kiosk/ask", self.ask, methods=["POST"]),
            Route("/v1/kiosk/faq", self.faq, methods=["GET"]),
            Route("/v1/kiosk/session/reset", self.reset, methods=["POST"]),
            Route("/v1/kiosk/speak", self.speak, methods=["POST"]),
            WebSocketRoute("/v1/kiosk/voice", self.voice),
        ]

    def _fail(self, exc: KioskError) -> JSONResponse:
        self.turns.metrics.rejected.labels(reason=type(exc).__name__).inc()
        return error_response(exc)

    async def ask(self, request: Request):
        """Answer a question: JSON, or server-sent events when ``stream`` is true."""
        try:
            if not request.scope.get(
                RATE_CHECKED
            ):  # the fast lane may have spent the token already
                self.turns.check_rate(request.client, request.headers)
            data = await read_json(request, self.max_body_bytes)
            question = str_field(data, "question", max_chars=MAX_QUESTION_CHARS)
            sid = str_field(data, "session", max_chars=64, required=False)
            history = parse_history(data.get("history"))
            if sid and not history:
                history = self.sessions.get(sid)
            stream = data.get("stream", False)
            if not isinstance(stream, bool):
                raise reject('"stream" must be true or false', None, 422)
            stream = stream or "text/event-stream" in request.headers.get("accept", "")
            self.turns.pipeline()
        except KioskError as exc:
            return self._fail(exc)
        deadline = self.turns.deadline(request.headers)
        client = "loopback" if is_loopback(request.client) else "remote"

        def remember(ans) -> None:
            if sid:
                from runtime.answer.types import Turn

                self.sessions.append(sid, Turn("user", question), Turn("assistant", ans.text))

        if not stream:
            res = await self.turns.answer(
                question, history, deadline, channel="kiosk", client=client
            )
            remember(res.answer)
            return FastJSONResponse(answer_json(res.answer, res.degraded))

        hit = self.turns.fast(question, history, channel="kiosk", client=client)
        if hit is not None:  # complete already: the same events in one plain response
            remember(hit)
            body = sse({"path": hit.path, "degraded": False}, "path") + sse(
                answer_json(hit, False), "done"
            )
            return Response(body, media_type="text/event-stream", headers=SSE_HEADERS)

        async def events():
            m = self.turns.metrics
            m.sse_sessions.inc()
            try:
                async for kind, item, degraded in self.turns.stream(
                    question, history, deadline, channel="kiosk", client=client
                ):
                    if kind == "sources":
                        yield sse(
                            {"text": item.text, "sources": [source_dict(s) for s in item.sources]},
                            "sources",
                        )
                    elif kind in ("partial", "replace"):
                        yield sse({"text": item.text}, kind)
                    elif kind == "done":
                        remember(item)
                        yield sse({"path": item.path, "degraded": degraded}, "path")
                        yield sse(answer_json(item, degraded), "done")
            except Exception as exc:  # noqa: BLE001 - the stream is open: report in-band, never a broken stream
                log.exception("streamed answer failed")
                yield sse({"message": f"answer failed: {type(exc).__name__}"}, "error")
            finally:
                m.sse_sessions.dec()

        return sse_response(events())

    async def faq(self, request: Request):
        """The static FAQ entries, optionally for one language."""
        lang = request.query_params.get("lang")
        if lang is not None and lang not in ("zh", "en"):
            return self._fail(reject('"lang" must be "zh" or "en"', None, 422))
        try:
            p = self.turns.pipeline()
        except KioskError as exc:
            return error_response(exc)
        static = getattr(p, "static_faq", None)
        entries = (
            []
            if static is None
            else [
                {"id": e.faq_id, "language": e.language, "question": e.question, "answer": e.answer}
                for e in static.entries
                if lang is None or e.language == lang
            ]
        )
        return JSONResponse({"entries": entries})

    async def reset(self, request: Request):
        """Forget a session's history (the next visitor starts fresh)."""
        try:
            data = await read_json(request, self.max_body_bytes)
            sid = str_field(data, "session", max_chars=64)
        except KioskError as exc:
            return self._fail(exc)
        return JSONResponse({"session": sid, "reset": self.sessions.reset(sid)})

    async def speak(self, request: Request):
        """Synthesize ``text`` in ``language`` to a 16-bit WAV."""
        try:
            self.turns.check_rate(request.client, request.headers)
            data = await read_json(request, self.max_body_bytes)
            text = str_field(data, "text", max_chars=MAX_SPEAK_CHARS)
            lang = str_field(data, "language", max_chars=8, required=False, default="en")
            if lang not in ("zh", "en"):
                raise reject('"language" must be "zh" or "en"', None, 422)
            if not text.strip():
                raise reject('"text" is empty', None, 422)
            synth = self.get_synthesizer(lang)
            if synth is None:
                raise reject(
                    f"no voice is loaded for {lang!r}", "check [speech] and `kiosk doctor`", 503
                )
        except KioskError as exc:
            return self._fail(exc)
        deadline = self.turns.deadline(request.headers)
        from .admission import DeadlineMissed

        if self.turns.admission.decide(deadline) is not None:
            return busy_response("the kiosk is busy")
        try:
            samples, rate = await self.turns.admission.run(
                deadline, _speak_to_samples, synth, text, lang
            )
        except DeadlineMissed:
            return busy_response("speech did not finish in time")
        except KioskError as exc:
            return error_response(exc)
        buf = io.BytesIO()
        with wave.open(buf, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(int(rate))
            w.writeframes(samples.astype("<i2").tobytes())
        return Response(buf.getvalue(), media_type="audio/wav")

    async def voice(self, ws: WebSocket):
        """Speech in over a WebSocket, transcripts and the answer out."""
        if self.make_voice_session is None:
            await ws.close(code=1011, reason="speech input is not available on this kiosk")
            return
        try:
            self.turns.pipeline()
        except KioskError:
            await ws.close(code=1013, reason="the kiosk is still loading")
            return
        await ws.accept()
        session = await asyncio.to_thread(self.make_voice_session)
        client = "loopback" if is_loopback(ws.client) else "remote"
        try:
            while True:
                msg = await ws.receive()
                if msg["type"] == "websocket.disconnect":
                    return
                data, text = msg.get("bytes"), msg.get("text")
                size = len(data) if data is not None else len((text or "").encode())
                if size > self.max_ws_message_bytes:
                    self.turns.metrics.rejected.labels(reason="ws_message_too_large").inc()
                    await ws.close(
                        code=1009, reason=f"message over {self.max_ws_message_bytes} bytes"
                    )
                    return
                if data is not None:
                    events = await asyncio.to_thread(session.feed, data)
                else:
                    try:
                        cmd = json.loads(text or "")
                    except ValueError:
                        cmd = None
                    if not isinstance(cmd, dict) or cmd.get("type") != "end":
                        await ws.send_json(
                            {"kind": "error", "text": 'text messages must be {"type": "end"}'}
                        )
                        continue
                    events = [await asyncio.to_thread(session.end)]
                for ev in events:
                    await ws.send_json(ev.to_json())
                    if ev.kind == "final" and ev.text.strip():
                        res = await self.turns.answer(
                            ev.text,
                            [],
                            self.turns.deadline(ws.headers),
                            channel="voice",
                            client=client,
                        )
                        await ws.send_json(
                            {"kind": "answer", **answer_json(res.answer, res.degraded)}
                        )
        except WebSocketDisconnect:
            return
        except KioskError as exc:  # AudioLimitError and friends: tell the client why, then close
            self.turns.metrics.rejected.labels(reason=type(exc).__name__).inc()
            try:
                await ws.send_json({"kind": "error", "text": exc.message, "hint": exc.hint})
                await ws.close(code=1008, reason=exc.message[:120])
            except Exception:  # noqa: BLE001 - client already gone
                pass
        finally:
            close = getattr(session, "close", None)
            if close is not None:
                close()
