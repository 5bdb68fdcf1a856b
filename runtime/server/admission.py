"""Admission control: who gets a pipeline worker, who gets a fast answer now, who waits.

The answer pipeline is synchronous and slow when it generates (seconds on 2 cores),
while a crowd of kiosks and tablets asks the same few questions. So each turn goes:

1. **Fast path, on the event loop** (:class:`FastPath`): an exact answer-cache hit or an
   exact static-FAQ match is answered at once. These never wait behind generation.
2. **Admission** (:class:`Admission`): the turn runs in a bounded worker pool (threads,
   off the event loop) only if the pool has room (``workers`` + ``queue_limit``) *and* the
   estimated finish time — turns ahead of it × the measured mean turn time — is within
   the request's deadline. Otherwise it is answered immediately by the fast paths'
   best effort (near FAQ match, else the staff hand-off), marked ``degraded``: never
   queued to death.
3. A turn admitted but still running at its deadline is answered degraded too; its
   worker finishes in the background (a thread cannot be killed) and still counts in
   the queue depth, so the estimate stays honest.

Per-client :class:`RateLimiter` (token bucket) turns floods into 429 + Retry-After.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import itertools
import logging
import math
import os
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from runtime.errors import RateLimitedError

log = logging.getLogger(__name__)


class Pipeline(Protocol):
    """What the service calls on the answer pipeline (runtime.answer.pipeline.AnswerPipeline)."""

    def answer(self, question: str, history: Sequence[Any] = ()) -> Any: ...

    def stream(self, question: str, history: Sequence[Any] = ()) -> Iterator[Any]: ...


@dataclass(frozen=True)
class Deadline:
    """An absolute point on the monotonic clock by which the visitor must have an answer."""

    at: float

    @classmethod
    def after_ms(cls, ms: float) -> Deadline:
        return cls(time.monotonic() + ms / 1000.0)

    @classmethod
    def from_headers(cls, headers, default_ms: int) -> Deadline:
        """``X-Deadline-Ms`` may shorten (never lengthen) the server's default deadline."""
        raw = headers.get("x-deadline-ms")
        ms = float(default_ms)
        if raw is not None:
            try:
                asked = float(raw)
            except ValueError:
                asked = ms
            if math.isfinite(asked) and asked > 0:
                ms = min(ms, asked)
        return cls.after_ms(ms)

    def remaining_s(self) -> float:
        return self.at - time.monotonic()


# --- fast paths ------------------------------------------------------------------------


_TRACE_PREFIX = os.urandom(4).hex()
_trace_counter = itertools.count(1)


def new_trace_id() -> str:
    """16 hex characters, unique in this process (random prefix + counter).

    ``uuid4`` was the largest single cost of a cache answer; a trace id only has to tell
    turns apart in the logs and the audit log, not be unguessable.
    """
    return f"{_TRACE_PREFIX}{next(_trace_counter) & 0xFFFFFFFF:08x}"


@dataclass(frozen=True)
class Prepared:
    """A question cleaned as the pipeline cleans it, with its matching keys."""

    text: str  # cleaned question
    language: str  # answer language
    key: str  # cache / static-FAQ key (question_key)
    faq_norm: str | None  # the store's exact-FAQ key, None when the pipeline would rewrite first


MEMO_MAX_CHARS = 256  # longer questions are prepared every time (they rarely repeat)


@functools.lru_cache(maxsize=4096)
def _prepare_cached(question: str, languages: tuple[str, ...]) -> Prepared:
    return _prepare_uncached(question, languages)


def _prepare_uncached(question: str, languages: tuple[str, ...]) -> Prepared:
    from runtime.answer.languages import answer_language, question_language
    from runtime.answer.normalize import clean_question, question_key
    from runtime.answer.rewrite import normalize_weekdays
    from runtime.knowledge.text import normalize

    text, _ = clean_question(question)
    qlang = question_language(text, default=languages[0])
    lang = answer_language(qlang, list(languages))
    key = question_key(text)
    faq_norm = None
    # The pipeline matches the pack FAQ on the rewritten question; with no history that is the
    # question itself except for Chinese weekday words, where it also re-checks word overlap.
    # Only the unchanged case is answered here; the rest goes to the pipeline.
    if key and qlang in languages and (lang != "zh" or normalize_weekdays(text) == text):
        faq_norm = normalize(text)
    return Prepared(text, lang, key, faq_norm)


def prepare_question(question: str, languages: tuple[str, ...]) -> Prepared:
    """Memoised for short questions: a crowd asks the same few, and this is pure."""
    if len(question) <= MEMO_MAX_CHARS:
        return _prepare_cached(question, languages)
    return _prepare_uncached(question, languages)


@functools.lru_cache(maxsize=1024)
def faq_answer_text(question: str, answer: str, language: str) -> str:
    """The FAQ answer as the pipeline words it for this question (a yes/no lead when the
    entry's own sentences decide a yes/no question). Memoised: only exact FAQ questions
    reach it, and the first costs up to ~0.2 ms (word segmentation)."""
    from runtime.answer.verdict import with_yes_no

    return with_yes_no(question, answer, language)


class FastPath:
    """Answers that need no model and no worker: the answer cache, the active pack's FAQ
    (exact normalised match, :mod:`runtime.server.pack_faq`) and the static FAQ.

    Works on a real :class:`AnswerPipeline` (its ``cache``, ``store``, ``static_faq``,
    ``staff_handoff``) or on any pipeline that offers ``fast_answer(question, history)`` itself.
    """

    def __init__(self, pipeline: Any) -> None:
        self.pipeline = pipeline
        self._index: _BigramIndex | None = None
        self._langs = tuple(getattr(pipeline, "languages", None) or ("zh", "en"))
        self._static_of: Any = None
        self._static_map: dict = {}
        self.pack_faq = None
        if not hasattr(pipeline, "fast_answer") and hasattr(pipeline, "store"):  # may be None now
            from .pack_faq import PackFaqIndex

            self.pack_faq = PackFaqIndex(pipeline)
            self.pack_faq.refresh_soon()

    def _prepare(self, question: str) -> tuple[str, str]:
        prep = prepare_question(question, self._langs)
        return prep.text, prep.language

    def _answer(
        self, text: str, lang: str, path: str, answer_text: str, notes: list[str], sources=()
    ) -> Any:
        from runtime.answer.types import Answer

        p = self.pipeline
        settings = getattr(p, "settings", None)
        return Answer(
            text=answer_text,
            language=lang,
            path=path,
            sources=list(sources),
            experiment_id=getattr(settings, "experiment_id", ""),
            trace_id=new_trace_id(),
            question=text,
            rewritten=text,
            notes=notes,
        )

    def lookup(self, question: str, history: Sequence[Any]) -> Any | None:
        """An exact cache hit, exact pack-FAQ or exact static-FAQ match, else None.

        Microseconds; safe on the event loop.
        """
        p = self.pipeline
        if hasattr(p, "fast_answer"):
            return p.fast_answer(question, history)
        if (
            history
        ):  # a follow-up means something else in another conversation (as the pipeline does)
            return None
        t0 = time.perf_counter()
        prep = prepare_question(question, self._langs)
        text, lang, key = prep.text, prep.language, prep.key
        if not key:
            return None
        cache = getattr(p, "cache", None)
        if cache is not None:
            hit = cache.get(key, None, lang)
            if hit is not None:
                prev, how = hit
                ms = (time.perf_counter() - t0) * 1000
                return dataclasses.replace(
                    prev,
                    path="cache",
                    trace_id=new_trace_id(),
                    question=text,
                    timings_ms={"cache": ms, "total": ms},
                    notes=[f"cache hit ({how}) on the fast path; was {prev.path}"],
                )
        if self.pack_faq is not None and prep.faq_norm:
            try:
                e = self.pack_faq.lookup(prep.faq_norm, lang)
                if e is not None:
                    return self._pack_faq_answer(e, text, lang, t0)
            except Exception:  # noqa: BLE001 - a bug here must not fail the visitor: the pipeline answers
                log.exception("pack FAQ fast path failed; leaving the question to the pipeline")
        static = getattr(p, "static_faq", None)
        if static is not None:
            e = self._static_exact(static).get((key, lang))
            if e is not None:
                return self._faq_answer(
                    static, e, text, lang, t0, "exact static FAQ match on the fast path"
                )
        return None

    def _static_exact(self, static) -> dict:
        """(key, language) → first static FAQ entry; rebuilt when the static FAQ is replaced."""
        if self._static_of is not static:
            table: dict = {}
            for e in static.entries:
                table.setdefault((e.key, e.language), e)
            self._static_map, self._static_of = table, static
        return self._static_map

    def _pack_faq_answer(self, e, text: str, lang: str, t0: float) -> Any:
        """The answer the pipeline gives for an exact pack FAQ match (same text and source)."""
        from runtime.answer.types import Source

        src = Source(
            1,
            "FAQ",
            e.matched_question,
            e.source,
            e.pack_id,
            e.pack_version,
            e.answer,
            faq_id=e.faq_id,
        )
        ans = self._answer(
            text,
            lang,
            "faq",
            faq_answer_text(text, e.answer, lang),
            ["exact pack FAQ match on the fast path"],
            [src],
        )
        ms = (time.perf_counter() - t0) * 1000
        ans.timings_ms = {"faq": ms, "total": ms}
        return ans

    def _faq_answer(self, static, e, text: str, lang: str, t0: float, note: str) -> Any:
        from runtime.answer.types import Source

        src = Source(1, "FAQ", e.question, static.source, "", 0, e.answer, faq_id=e.faq_id)
        ans = self._answer(text, lang, "faq", e.answer, [note], [src])
        ms = (time.perf_counter() - t0) * 1000
        ans.timings_ms = {"faq": ms, "total": ms}
        return ans

    def degraded(self, question: str, history: Sequence[Any], reason: str) -> Any:
        """The best answer available without a worker: cache/FAQ (near match allowed), else the
        staff hand-off."""
        p = self.pipeline
        if hasattr(p, "degraded_answer"):
            return p.degraded_answer(question, history, reason)
        t0 = time.perf_counter()
        hit = self.lookup(question, history)
        if hit is not None:
            hit.notes.append(f"degraded: {reason}")
            return hit
        text, lang = self._prepare(question)
        static = getattr(p, "static_faq", None)
        if static is not None:
            if self._index is None or self._index.faq is not static:
                self._index = _BigramIndex(static)
            e = self._index.match(text, lang)
            if e is not None:
                return self._faq_answer(
                    static, e, text, lang, t0, f"degraded: {reason}; near static FAQ match"
                )
        handoff = getattr(p, "staff_handoff", {}) or {}
        ans = self._answer(
            text,
            lang,
            "fallback",
            handoff.get(lang, next(iter(handoff.values()), "")),
            [f"degraded: {reason}; staff hand-off"],
        )
        ms = (time.perf_counter() - t0) * 1000
        ans.timings_ms = {"total": ms}
        return ans


class _BigramIndex:
    """Near matching of a question against the static FAQ in well under a millisecond.

    The static FAQ's own matcher (difflib over every entry) costs tens of milliseconds: fine
    once per turn in a worker, not on the event loop for every shed request. This scores
    entries by the Dice coefficient of character bigrams of the normalised question keys,
    through an inverted index, with the static FAQ's 0.75 acceptance.
    """

    def __init__(self, faq, min_score: float = 0.75) -> None:
        self.faq = faq
        self.min_score = min_score
        self._grams: list[set[str]] = []
        self._postings: dict[tuple[str, str], list[int]] = {}
        for i, e in enumerate(faq.entries):
            grams = self._bigrams(e.key)
            self._grams.append(grams)
            for g in grams:
                self._postings.setdefault((e.language, g), []).append(i)

    @staticmethod
    def _bigrams(key: str) -> set[str]:
        return {key[i : i + 2] for i in range(len(key) - 1)} or ({key} if key else set())

    def match(self, question: str, language: str):
        from runtime.answer.normalize import question_key

        grams = self._bigrams(question_key(question))
        if not grams:
            return None
        counts: dict[int, int] = {}
        for g in grams:
            for i in self._postings.get((language, g), ()):
                counts[i] = counts.get(i, 0) + 1
        best, best_score = None, 0.0
        for i, shared in counts.items():
            score = 2 * shared / (len(grams) + len(self._grams[i]))
            if score > best_score:
                best, best_score = i, score
        return self.faq.entries[best] if best is not None and best_score >= self.min_score else None


# --- worker pool -------------------------------------------------------------------------


class DeadlineMissed(Exception):
    """The turn was admitted but did not finish by its deadline."""


@dataclass
class AdmissionStats:
    admitted: int = 0
    shed_full: int = 0
    shed_deadline: int = 0
    late: int = 0
    fast: int = 0
    extra: dict[str, int] = field(default_factory=dict)


class Admission:
    """Bounded worker pool with deadline-aware admission (see module docstring).

    ``in_flight`` counts turns running or waiting in the pool, including late ones whose
    visitor already got a degraded answer; only the event loop changes admission
    decisions, worker threads only decrement (under a lock).
    """

    def __init__(
        self,
        *,
        workers: int = 2,
        queue_limit: int = 32,
        initial_turn_s: float = 1.0,
        smoothing: float = 0.2,
        margin_s: float = 0.05,
    ) -> None:
        self.workers = workers
        self.margin_s = (
            margin_s  # the degraded answer must still reach the visitor before the deadline
        )
        self.queue_limit = queue_limit
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kiosk-turn")
        self._lock = threading.Lock()
        self.in_flight = 0
        self.turn_s = initial_turn_s  # moving average of a pipeline turn's duration
        self.smoothing = smoothing
        self.stats = AdmissionStats()

    def estimated_finish_s(self) -> float:
        """Seconds until a turn submitted now would finish: waves of ``workers`` ahead of it,
        plus its own."""
        waves = self.in_flight // self.workers + 1
        return waves * self.turn_s

    def decide(self, deadline: Deadline) -> str | None:
        """None to admit, or the reason to shed ("queue_full", "deadline")."""
        if self.in_flight >= self.workers + self.queue_limit:
            return "queue_full"
        if self.in_flight < self.workers:
            return (
                None  # a worker is idle: start now (this is also how the turn-time estimate learns)
            )
        if self.estimated_finish_s() > deadline.remaining_s() - self.margin_s:
            return "deadline"
        return None

    def _enter(self) -> None:
        with self._lock:
            self.in_flight += 1

    def _leave(self, took_s: float | None) -> None:
        with self._lock:
            self.in_flight -= 1
            if took_s is not None:
                self.turn_s += self.smoothing * (took_s - self.turn_s)

    def _timed(self, fn: Callable[..., Any], *args: Any) -> Any:
        t0 = time.monotonic()
        try:
            return fn(*args)
        finally:
            self._leave(time.monotonic() - t0)

    async def run(self, deadline: Deadline, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` in the pool; raise :class:`DeadlineMissed` if not done by the
        deadline."""
        self._enter()
        self.stats.admitted += 1
        try:
            cfut = self._pool.submit(self._timed, fn, *args)
        except RuntimeError:
            self._leave(None)
            raise
        fut = asyncio.wrap_future(cfut)
        try:
            return await asyncio.wait_for(
                asyncio.shield(fut), timeout=max(deadline.remaining_s() - self.margin_s, 0.0)
            )
        except TimeoutError:
            self.stats.late += 1
            cfut.cancel()  # still queued: never runs (and _timed never decrements): fix the count
            if cfut.cancelled():
                self._leave(None)
            raise DeadlineMissed from None

    async def stream(
        self, deadline: Deadline, make_iter: Callable[[], Iterator[Any]]
    ) -> AsyncIterator[Any]:
        """Iterate a synchronous generator in the pool, yielding its items on the event loop.

        Raises :class:`DeadlineMissed` when the first item has not arrived by the deadline; later
        items may come after it (the visitor already sees text). Stops the generator when the
        consumer goes away.
        """
        loop = asyncio.get_running_loop()
        q: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        stop = threading.Event()

        def work() -> None:
            try:
                it = make_iter()
                try:
                    for item in it:
                        loop.call_soon_threadsafe(q.put_nowait, ("item", item))
                        if stop.is_set():
                            break
                finally:
                    close = getattr(it, "close", None)
                    if close is not None:
                        close()
                loop.call_soon_threadsafe(q.put_nowait, ("end", None))
            except BaseException as exc:  # noqa: BLE001 - re-raised on the loop side
                loop.call_soon_threadsafe(q.put_nowait, ("error", exc))

        self._enter()
        self.stats.admitted += 1
        cfut = self._pool.submit(self._timed, work)
        first = True
        try:
            while True:
                try:
                    if first:
                        kind, item = await asyncio.wait_for(
                            q.get(), timeout=max(deadline.remaining_s() - self.margin_s, 0.0)
                        )
                    else:
                        kind, item = await q.get()
                except TimeoutError:
                    self.stats.late += 1
                    raise DeadlineMissed from None
                first = False
                if kind == "end":
                    return
                if kind == "error":
                    raise item
                yield item
        finally:
            stop.set()
            if cfut.cancel():
                self._leave(None)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


# --- rate limiting ----------------------------------------------------------------------------


class RateLimiter:
    """Token bucket per client key: ``rate`` requests/s sustained, ``burst`` at once.

    Bounded memory: at most ``max_clients`` buckets (least recently seen dropped). ``rate`` 0
    disables limiting.
    """

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.max_clients = max_clients
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = (
            OrderedDict()
        )  # key -> (tokens, last)

    def take(self, key: str) -> None:
        """Spend one token or raise :class:`RateLimitedError` with the seconds until one is free."""
        if self.rate <= 0:
            return
        now = self.clock()
        tokens, last = self._buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            self._buckets.move_to_end(key)
            raise RateLimitedError(
                "too many requests from this client",
                hint="slow down and retry after the delay",
                retry_after_s=(1.0 - tokens) / self.rate,
            )
        self._buckets[key] = (tokens - 1.0, now)
        self._buckets.move_to_end(key)
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)


def client_key(scope_client, headers) -> str:
    """Rate-limit key: the bearer token when one is sent (many tablets behind one NAT), else the
    address."""
    from .security import bearer_token

    token = bearer_token(headers)
    if token:
        import hashlib

        return "t:" + hashlib.sha256(token.encode()).hexdigest()[:16]
    return "a:" + (str(scope_client[0]) if scope_client else "local")
