"""The answer pipeline: one question in, one answer out, always, within the turn's deadline.

Order of work (docs/answers.md)::

    clean → language → cache → FAQ → rewrite → retrieve → relevance gate
          → quoted best passage (shown at once) → generate (worker thread, deadline)
          → citation + claim check → answer

Degrade ladder: cache → FAQ → quoted best passage with its citation → static
FAQ text / staff handoff. Generation is an *improvement* over the quoted
passage, never a dependency: it runs in a bounded worker (``queue_size`` slots:
a full queue answers at once from the passage), behind a circuit breaker, and
must produce its first words by ``deadline_ms`` after the question arrived and
finish by ``total_ms``, or the passage is the answer. A hung generator thread
cannot be killed from Python, but it holds one slot only: the breaker opens
after repeated misses and the queue bound stops more work piling up.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, replace

import numpy as np

from runtime.inference.base import Embedder, GenerationRequest, Generator
from runtime.knowledge.records import Hit
from runtime.knowledge.retrieval import EmbedderReranker

from . import faq as faq_mod
from .answer_type import with_floor_heading
from .breaker import CircuitBreaker
from .cache import AnswerCache
from .check import check_answer, split_context
from .days import day_set
from .extractive import best_extract, overlap, support, terms
from .guard import looks_like_injection
from .languages import answer_language, question_language
from .normalize import MAX_QUESTION_CHARS, clean_question, question_key
from .prompt import build_prompt, says_unknown
from .rewrite import decompose, normalize_weekdays, rewrite_with_history
from .static_faq import StaticFaq
from .types import Answer, AnswerEvent, Source, Turn
from .verdict import with_yes_no, yes_no
from .vocabulary import situation_terms, unknown_content_terms, unknown_focus
from .vocabulary import warm as warm_vocabulary

log = logging.getLogger(__name__)

ASK_PROMPT = {
    "en": 'Please type or say your question, for example: "When are you open on Saturday?"',
    "zh": "请输入或说出您的问题，例如：“周六几点开门？”",
}
MAX_HISTORY_TURNS = 6
_CITE = re.compile(r"\[(\d{1,2})\]")
_DONE = object()


@dataclass
class PipelineSettings:
    """Knobs of the pipeline (from [answer] in the config and the experiment file)."""

    deadline_ms: int = 1000  # the first words (generated or quoted) must be ready by then
    total_ms: int = 8000  # the whole turn, generation included
    top_k: int = 5
    mode: str = "hybrid"
    rrf_k: int = 60
    rerank: str = "none"  # "embedder": reorder the fused candidates by sentence cosine
    compose: str = "generate"  # "quote": the quoted sentences are the answer, no generation
    context_passages: int = 0  # 0: only the quoted sentences; N: the N best passages
    prompt_style: str = "plain"
    max_tokens: int = 128
    temperature: float = 0.0
    rewrite_with_history: bool = True
    hyde: bool = False
    multi_hop: bool = False
    claim_check: bool = True
    faq_threshold: float = faq_mod.DEFAULT_THRESHOLD
    faq_margin: float = faq_mod.DEFAULT_MARGIN
    min_similarity: float = 0.45  # relevance gate: best passage's cosine ...
    min_overlap: float = 0.5  # ... or share of question terms found in its best sentence
    min_combined: float = 0.7  # ... or the two together (measured: docs/answers.md)
    min_combined_unknown: float = 0.85  # ... the two together when a topic word is unknown
    # The generator saying "I don't know" after the relevance gate passed: refuse (True) or show
    # the quoted passage (False). Measured: the 0.5B model says it too often (docs/answers.md).
    unknown_means_refusal: bool = False
    semantic_extract: bool = True  # blend embedding similarity into the quoted-sentence choice
    cache_size: int = 512
    cache_near_threshold: float = 0.95
    queue_size: int = 2
    breaker_failures: int = 3
    breaker_reset_s: float = 30.0
    embed_timeout_ms: int = 300
    max_question_chars: int = MAX_QUESTION_CHARS
    experiment_id: str = "default"

    @classmethod
    def from_config(cls, cfg, experiment=None) -> PipelineSettings:  # cfg: KioskConfig
        a = cfg.answer
        s = cls(deadline_ms=a.deadline_ms)
        for name in (
            "total_ms",
            "claim_check",
            "faq_threshold",
            "faq_margin",
            "min_similarity",
            "min_overlap",
            "min_combined",
            "min_combined_unknown",
            "unknown_means_refusal",
            "cache_size",
            "cache_near_threshold",
            "queue_size",
            "breaker_failures",
            "breaker_reset_s",
            "embed_timeout_ms",
            "max_question_chars",
        ):
            if hasattr(a, name):
                setattr(s, name, getattr(a, name))
        if experiment is not None:
            s.experiment_id = experiment.id
            s.top_k = experiment.retriever.top_k
            s.mode = experiment.retriever.mode
            s.rrf_k = experiment.retriever.rrf_k
            s.rerank = experiment.retriever.rerank
            s.rewrite_with_history = experiment.query_expansion.rewrite_with_history
            s.hyde = experiment.query_expansion.hyde
            s.multi_hop = experiment.query_expansion.multi_hop
            s.compose = experiment.generator.compose
            s.context_passages = experiment.generator.context_passages
            s.prompt_style = experiment.generator.prompt
            s.max_tokens = experiment.generator.max_tokens
            s.temperature = experiment.generator.temperature
        return s


class _DaemonWorker:
    """One daemon thread running submitted calls in order (like a 1-worker executor).

    Daemon, unlike ``ThreadPoolExecutor`` workers: a generator or embedder hung inside native
    code must not keep the process from exiting (Python joins executor threads at exit).
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._lock = threading.Lock()

    def submit(self, fn: Callable, *args) -> Future:
        with self._lock:
            if self._closed:
                raise RuntimeError(f"{self.name} worker is stopped")
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
                self._thread.start()
        fut: Future = Future()
        self._jobs.put((fut, fn, args))
        return fut

    def _loop(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            fut, fn, args = job
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn(*args))
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller
                fut.set_exception(exc)

    def shutdown(self) -> None:
        with self._lock:
            self._closed = True
        self._jobs.put(None)


class _Timer:
    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self._last = self.t0
        self.stages: dict[str, float] = {}

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.stages[stage] = round((now - self._last) * 1000, 2)
        self._last = now

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.t0) * 1000

    def done(self) -> dict[str, float]:
        self.stages["total"] = round(self.elapsed_ms(), 2)
        return dict(self.stages)


WARM_VOCABULARY_AFTER_S = 10.0


def _source_from_hit(n: int, hit: Hit, quote: str | None = None) -> Source:
    c = hit.citation
    return Source(
        number=n,
        document=c.document_title,
        section=c.section,
        source_path=c.source_path,
        pack_id=c.pack_id,
        pack_version=c.pack_version,
        quote=quote if quote is not None else hit.text,
        chunk_id=hit.chunk_id,
    )


class AnswerPipeline:
    """Answers questions from one knowledge store; thread-safe; ``close()`` stops the worker."""

    def __init__(
        self,
        store,  # KnowledgeStore, or an object with .acquire() (packs.active.ActiveKnowledge)
        embedder: Embedder | None,
        generator: Generator | None,
        *,
        settings: PipelineSettings | None = None,
        languages: Sequence[str] = ("zh", "en"),
        staff_handoff: dict[str, str] | None = None,
        kiosk_name: str = "the service hall",
        knowledge_version: Callable[[], str] | None = None,
        static_faq: StaticFaq | None = None,
    ) -> None:
        self.static_faq = static_faq
        self.store = store
        self.embedder = embedder
        self.generator = generator
        self.settings = settings or PipelineSettings()
        self.languages = list(languages)
        self.staff_handoff = staff_handoff or {
            "en": "I don't know the answer to that. Please ask the staff at the help desk.",
            "zh": "这个问题我无法确定答案。请到服务台咨询工作人员。",
        }
        self.kiosk_name = kiosk_name
        self._knowledge_version = knowledge_version or self._store_version
        s = self.settings
        self.cache = AnswerCache(s.cache_size, s.cache_near_threshold)
        self.breakers = {
            "generator": CircuitBreaker(
                "generator", failure_threshold=s.breaker_failures, reset_after_s=s.breaker_reset_s
            ),
            "embedder": CircuitBreaker(
                "embedder", failure_threshold=s.breaker_failures, reset_after_s=s.breaker_reset_s
            ),
        }
        self._slots = threading.BoundedSemaphore(s.queue_size)
        self._gen_pool = _DaemonWorker("kiosk-generate")
        self._embed_pool = _DaemonWorker("kiosk-embed")
        self._store_lock = threading.Lock()  # one SQLite connection: serialise its use
        self.counters: dict[str, int] = {}
        self._reranker = None if embedder is None else EmbedderReranker(embedder)

    # -- public -----------------------------------------------------------------------
    def answer(self, question: str, history: Sequence[Turn] = ()) -> Answer:
        final: Answer | None = None
        for event in self.stream(question, history):
            if event.kind == "done":
                final = event.answer
        assert final is not None
        return final

    def stream(self, question: str, history: Sequence[Turn] = ()) -> Iterator[AnswerEvent]:
        """Events: ``sources`` (best passage, at once), ``partial``, ``replace``, ``done``."""
        timer = _Timer()
        trace = uuid.uuid4().hex[:16]
        try:
            # Earlier turns are bounded like the question: the rewrite segments the last one.
            limit = self.settings.max_question_chars
            turns = [
                replace(t, content=t.content[:limit]) for t in list(history)[-MAX_HISTORY_TURNS:]
            ]
            with self._acquire() as store:
                yield from self._run(store, question, turns, timer, trace)
        except Exception as exc:  # noqa: BLE001 - last rung of the ladder: never fail a visitor
            log.exception("answer pipeline failed (trace %s)", trace)
            lang = self.languages[0]
            ans = Answer(
                text=self.staff_handoff.get(lang, ""),
                language=lang,
                path="fallback",
                experiment_id=self.settings.experiment_id,
                trace_id=trace,
                question=str(question)[:200],
                notes=[f"pipeline error: {type(exc).__name__}: {exc}"],
            )
            ans.timings_ms = timer.done()
            self._count(ans.path)
            yield AnswerEvent("done", ans.text, answer=ans)

    @property
    def store_lock(self) -> threading.Lock:
        """Held around every use of the store's one SQLite connection."""
        return self._store_lock

    def knowledge_version(self) -> str:
        """What the answers come from now (pack id and version, or the store's content)."""
        return str(self._knowledge_version())

    def warm_up(self) -> None:
        """Load lazy tables (jieba, vector indexes) and the embedder's first-call costs before the
        first visitor waits for them. No generation: a warm-up question would spend the turn
        deadline at start-up and count as a generator failure on its breaker."""
        from runtime.knowledge.text import query_terms

        query_terms("周六几点开门 opening hours", "jieba")
        # The relevance gate's part-of-speech tables (0.3 s): loaded once start-up is over
        # (loading them during it added 0.7 s to `kiosk serve` → /healthz 200), not on the
        # first visitor's question.
        timer = threading.Timer(WARM_VOCABULARY_AFTER_S, warm_vocabulary)
        timer.daemon = True
        timer.start()
        try:
            vectors = self._embed(["周六几点开门？", "When do you open on Saturday?"], [])
            if self.store is not None:
                with self._store_lock:
                    self.store.warm()
                    qv = None if vectors is None else vectors[1]
                    self.store.search("When do you open on Saturday?", qv, k=1)
        except Exception:  # noqa: BLE001 - warming is best effort
            log.debug("warm-up failed", exc_info=True)

    def health(self) -> dict[str, object]:
        return {
            "breakers": {n: b.snapshot() for n, b in self.breakers.items()},
            "cache": {
                "entries": len(self.cache),
                "hits": self.cache.hits,
                "misses": self.cache.misses,
            },
            "answers": dict(self.counters),
            "generator": self.generator.describe() if self.generator is not None else None,
            "embedder": self.embedder.describe() if self.embedder is not None else None,
        }

    def close(self) -> None:
        self._gen_pool.shutdown()
        self._embed_pool.shutdown()

    # -- stages -------------------------------------------------------------------------
    @contextlib.contextmanager
    def _acquire(self):
        """The store to answer this question from (None: no knowledge works; static fallback)."""
        if hasattr(self.store, "acquire"):
            with self.store.acquire() as store:
                yield store
        else:
            yield self.store

    def _store_version(self) -> str:
        if hasattr(self.store, "describe"):
            d = self.store.describe()
            return f"{d.get('pack_id')}@{d.get('version')}"
        with self._store_lock:
            st = self.store.stats()
        return f"{st.get('path')}#{st.get('generation')}"

    def _count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    def _finish(self, ans: Answer, timer: _Timer) -> AnswerEvent:
        ans.timings_ms = timer.done()
        self._count(ans.path)
        log.info(
            "answer trace=%s path=%s lang=%s total=%.0fms sources=%d",
            ans.trace_id,
            ans.path,
            ans.language,
            ans.timings_ms["total"],
            len(ans.sources),
        )
        return AnswerEvent("done", ans.text, tuple(ans.sources), answer=ans)

    def _embed(self, texts: list[str], notes: list[str]) -> np.ndarray | None:
        if self.embedder is None:
            return None
        breaker = self.breakers["embedder"]
        if not breaker.allow():
            notes.append("embedder breaker open: keyword search only")
            return None
        try:
            fut = self._embed_pool.submit(self.embedder.embed_batch, texts)
            vectors = fut.result(timeout=self.settings.embed_timeout_ms / 1000)
            vectors = np.asarray(vectors, dtype=np.float32)
            if vectors.shape[0] != len(texts) or not np.all(np.isfinite(vectors)):
                raise ValueError(f"embedder returned shape {vectors.shape}")
        except FutureTimeout:
            breaker.record_failure()
            notes.append("embedder over its time limit: keyword search only")
            return None
        except Exception as exc:  # noqa: BLE001
            breaker.record_failure()
            notes.append(f"embedder failed ({type(exc).__name__}): keyword search only")
            return None
        breaker.record_success()
        return vectors

    def _run(
        self, store, question: str, history: list[Turn], timer: _Timer, trace: str
    ) -> Iterator[AnswerEvent]:
        s = self.settings
        text, notes = clean_question(question, s.max_question_chars)
        qlang = question_language(text, default=self.languages[0])
        lang = answer_language(qlang, self.languages)
        base = Answer(
            text="",
            language=lang,
            path="refusal",
            experiment_id=s.experiment_id,
            trace_id=trace,
            question=text,
            rewritten=text,
            notes=notes,
        )
        timer.lap("clean")
        if not text or not terms(text) and not re.search(r"\w", text):
            base.text = ASK_PROMPT.get(lang, ASK_PROMPT["en"])
            base.notes.append("empty question")
            yield self._finish(base, timer)
            return
        if qlang not in self.languages:
            base.text = self.staff_handoff.get(lang, "")
            base.notes.append(f"question language {qlang!r} is not served")
            yield self._finish(base, timer)
            return

        # Cache (exact, then near-duplicate) and FAQ, keyed on the question as asked.
        try:
            self.cache.set_version(self._knowledge_version())
        except Exception as exc:  # noqa: BLE001 - an unreadable store: serve nothing old from the cache
            self.cache.set_version(f"unknown:{trace}")
            base.notes.append(f"knowledge version unknown ({type(exc).__name__})")
        key = question_key(text)
        use_cache = not history  # a follow-up means something else in another conversation
        cached = (
            self.cache.get(key, None, lang) if use_cache else None
        )  # exact: before paying for a vector
        vec = self._embed([text], base.notes) if cached is None else None
        qv = None if vec is None else vec[0]
        timer.lap("embed")
        if use_cache:
            if cached is None:
                cached = self.cache.get(key, qv, lang)
            timer.lap("cache")
            if cached is not None:
                prev, how = cached
                ans = replace(
                    prev,
                    path="cache",
                    trace_id=trace,
                    question=text,
                    notes=[*notes, f"cache hit ({how}); was {prev.path}"],
                )
                yield self._finish(ans, timer)
                return
        rewritten = (
            rewrite_with_history(text, history, lang)
            if s.rewrite_with_history
            else (normalize_weekdays(text) if lang == "zh" else text)
        )
        base.rewritten = rewritten
        if rewritten != text:
            # The encoder reads the follow-up with the whole last question, not a bracketed word.
            vec = self._embed([rewrite_with_history(text, history, lang, joined=True)], base.notes)
            qv = None if vec is None else vec[0]
        timer.lap("rewrite")
        try:
            if store is None:
                raise RuntimeError("no knowledge store is available")
            with self._store_lock:
                decision = faq_mod.match(
                    store, rewritten, qv, lang, threshold=s.faq_threshold, margin=s.faq_margin
                )
        except Exception as exc:  # noqa: BLE001 - a broken store must not stop the answer
            base.notes.append(f"FAQ lookup failed: {type(exc).__name__}")
            decision = faq_mod.FaqDecision(None, None)
        timer.lap("faq")
        if decision.hit is not None and rewritten != text:
            # A follow-up's own words must be in the FAQ entry, else it matched the last question;
            # so must the day it asks about ("周日可以停吗？" after a question on parking fees).
            h = decision.hit
            entry = f"{h.matched_question} {h.answer}"
            days = day_set(text)
            if overlap(terms(text), entry) < 0.5 or (days and not days & day_set(entry)):
                decision = faq_mod.FaqDecision(None, h)
        if decision.hit is not None:
            h = decision.hit
            ans = replace(
                base,
                text=with_yes_no(rewritten, h.answer, lang),
                path="faq",
                sources=[
                    Source(
                        1,
                        "FAQ",
                        h.matched_question,
                        h.source,
                        h.pack_id,
                        h.pack_version,
                        h.answer,
                        faq_id=h.faq_id,
                    )
                ],
            )
            if use_cache:
                self.cache.put(key, qv, lang, ans)
            yield self._finish(ans, timer)
            return

        if s.hyde and qv is not None:
            qv = self._hyde_vector(rewritten, lang, qv, base.notes)
            timer.lap("hyde")

        # Retrieval.
        try:
            if store is None:
                raise RuntimeError("no knowledge store is available")
            hits = self._retrieve(store, rewritten, qv, lang, base.notes)
        except Exception as exc:  # noqa: BLE001
            base.notes.append(f"retrieval failed: {type(exc).__name__}: {exc}")
            yield self._finish(self._static_fallback(base, decision), timer)
            return
        timer.lap("retrieve")
        planted = [h for h in hits if looks_like_injection(h.text)]
        if planted:
            hits = [h for h in hits if h not in planted]
            self._count("planted_instructions_dropped", len(planted))
            base.notes.append(
                f"dropped {len(planted)} retrieved passage(s) holding instructions to the assistant"
            )
        passages = [h.text for h in hits]
        similarity = None
        if qv is not None and s.semantic_extract:

            def similarity(sentences: list[str], qv=qv) -> list[float]:
                vecs = self._embed(sentences[:64], base.notes)
                if vecs is None:
                    raise RuntimeError("no sentence vectors")
                sims = (vecs @ qv).tolist()
                return sims + [0.0] * (len(sentences) - len(sims))

        extract = (
            best_extract(
                rewritten, passages, focus=text if rewritten != text else "", similarity=similarity
            )
            if hits
            else None
        )
        if (
            not hits
            or extract is None
            or not self._relevant(store, rewritten, hits, extract, base.notes)
        ):
            base.text = self.staff_handoff.get(lang, "")
            base.notes.append("nothing relevant found")
            if use_cache:
                self.cache.put(key, qv, lang, base)
            yield self._finish(base, timer)
            return
        # Context: the passage the quote came from, then the next best, up to context_passages;
        # 0 = only the quoted sentences (a short prompt: the first token comes sooner).
        order = [extract.passage_index] + [
            i for i in range(len(hits)) if i != extract.passage_index
        ]
        context_hits = [hits[i] for i in order[: max(1, s.context_passages)]]
        sources = [_source_from_hit(1, context_hits[0], extract.text)] + [
            _source_from_hit(n, h) for n, h in enumerate(context_hits[1:], start=2)
        ]
        heading = context_hits[0].citation.section.split(" > ")[-1]
        shown = with_floor_heading(rewritten, extract.text, heading)
        quoted = replace(base, text=shown, path="extractive", sources=sources)
        verdict = yes_no(rewritten, extract.sentences, lang)
        if verdict is not None:
            quoted.text = f"{verdict.lead} {shown}"
            quoted.notes.append(f"yes/no decided by the quote: {verdict.answer}")
        yield AnswerEvent("sources", extract.text, tuple(sources))
        timer.lap("extract")

        # Generation (optional) under the deadline.
        if self.generator is None or s.compose == "quote":
            quoted.notes.append(
                "the experiment answers with the quoted passage"
                if s.compose == "quote"
                else "no generator loaded: quoted passage"
            )
            if use_cache:
                self.cache.put(key, qv, lang, quoted)
            yield self._finish(quoted, timer)
            return
        yield from self._generate(
            text, rewritten, lang, context_hits, quoted, key, qv, use_cache, timer
        )

    def _retrieve(
        self, store, query: str, qv: np.ndarray | None, lang: str, notes: list[str]
    ) -> list[Hit]:
        s = self.settings
        queries = decompose(query, lang) if s.multi_hop else [query]
        vectors: list[np.ndarray | None] = [qv]
        if len(queries) > 1:
            vec = self._embed(queries, notes)
            vectors = [None] * len(queries) if vec is None else list(vec)
        merged: dict[int, Hit] = {}
        for q, v in zip(queries, vectors, strict=True):
            mode = s.mode if (v is not None or s.mode == "keyword") else "keyword"
            # Reranking embeds the candidates' sentences: only with a working embedder.
            rerank = self._reranker if s.rerank == "embedder" and v is not None else None
            with self._store_lock:
                try:
                    found = store.search(q, v, k=s.top_k, mode=mode, rrf_k=s.rrf_k, rerank=rerank)
                except Exception as exc:  # noqa: BLE001 - the fused order still answers
                    if rerank is None:
                        raise
                    notes.append(f"rerank failed ({type(exc).__name__}): fused order")
                    found = store.search(q, v, k=s.top_k, mode=mode, rrf_k=s.rrf_k)
            for h in found:
                if h.chunk_id not in merged or merged[h.chunk_id].score < h.score:
                    merged[h.chunk_id] = h
        hits = (
            sorted(merged.values(), key=lambda h: -h.score)
            if len(queries) > 1
            else list(merged.values())
        )
        return hits[: s.top_k]

    def _hyde_vector(
        self, question: str, lang: str, qv: np.ndarray, notes: list[str]
    ) -> np.ndarray:
        """HyDE: embed a short hypothetical answer with the question (for vector search only).

        Runs under half the turn's deadline through the same slot and breaker as answers; any
        failure keeps the question's own vector.
        """
        if self.generator is None or not self._slots.acquire(blocking=False):
            return qv
        breaker = self.breakers["generator"]
        if not breaker.allow():
            self._slots.release()
            return qv
        budget = self.settings.deadline_ms / 2000
        system = {
            "zh": "用一句话回答，像服务大厅的说明文字。",
            "en": "Answer in one sentence, like a service hall's notice.",
        }
        request = GenerationRequest(
            prompt=question, system=system.get(lang, system["en"]), max_tokens=48, max_time_s=budget
        )

        def work() -> str:
            try:
                return "".join(self.generator.stream(request))  # type: ignore[union-attr]
            finally:
                self._slots.release()

        try:
            hypo = self._gen_pool.submit(work).result(timeout=budget + 0.05)
        except Exception as exc:  # noqa: BLE001 - HyDE is optional
            breaker.record_failure()
            notes.append(f"HyDE skipped ({type(exc).__name__})")
            return qv
        breaker.record_success()
        vec = self._embed([hypo], notes) if hypo.strip() else None
        if vec is None:
            return qv
        mixed = qv + vec[0]
        notes.append("HyDE: searched with a hypothetical answer")
        return (mixed / (np.linalg.norm(mixed) or 1.0)).astype(np.float32)

    def _relevant(self, store, question: str, hits: list[Hit], extract, notes: list[str]) -> bool:
        s = self.settings
        best_sim = max((h.scores.get("vector_similarity", -1.0) for h in hits), default=-1.0)
        # Unknown words of the visitor's situation ("I'm opening a small noodle shop.") neither
        # raise the bar nor count against the quote's coverage; in the question they still do.
        try:
            with self._store_lock:
                unknown = unknown_content_terms(store, question)
                situation = situation_terms(store, question, unknown)
        except Exception as exc:  # noqa: BLE001 - the gate still works on similarity and overlap
            notes.append(f"vocabulary check failed: {type(exc).__name__}")
            unknown, situation = [], []
        if situation:
            unknown = [t for t in unknown if t not in situation]
            notes.append(f"situation words the knowledge does not use: {', '.join(situation[:5])}")
        cite = hits[extract.passage_index].citation
        coverage = support(question, extract.text, cite.section, ignore=situation)
        try:
            with self._store_lock:
                focus = unknown_focus(store, split_context(question)[1])
        except Exception:  # noqa: BLE001 - as above
            focus = None
        if focus is not None:
            notes.append(f"the question asks about {focus!r}, which the knowledge never names")
            return False
        if unknown:
            # A topic word the knowledge never uses: only strong evidence together will do.
            notes.append(f"words the knowledge does not use: {', '.join(unknown[:5])}")
            return best_sim + coverage >= s.min_combined_unknown
        if best_sim >= s.min_similarity or coverage >= s.min_overlap:
            return True
        return best_sim + coverage >= s.min_combined

    def _static_fallback(self, base: Answer, decision: faq_mod.FaqDecision) -> Answer:
        """Last rungs: the best FAQ candidate's static text, else the staff handoff."""
        best = decision.best
        if best is not None and best.score >= self.settings.faq_threshold - 0.15:
            return replace(
                base,
                text=best.answer,
                path="fallback",
                sources=[
                    Source(
                        1,
                        "FAQ",
                        best.matched_question,
                        best.source,
                        best.pack_id,
                        best.pack_version,
                        best.answer,
                        faq_id=best.faq_id,
                    )
                ],
            )
        if self.static_faq is not None:
            entry = self.static_faq.match(base.question, base.language)
            if entry is not None:
                return replace(
                    base,
                    text=entry.answer,
                    path="fallback",
                    sources=[
                        Source(
                            1,
                            "FAQ",
                            entry.question,
                            self.static_faq.source,
                            "",
                            0,
                            entry.answer,
                            faq_id=entry.faq_id,
                        )
                    ],
                )
        return replace(base, text=self.staff_handoff.get(base.language, ""), path="fallback")

    def _generate(
        self,
        text: str,
        rewritten: str,
        lang: str,
        context_hits: list[Hit],
        quoted: Answer,
        key: str,
        qv: np.ndarray | None,
        use_cache: bool,
        timer: _Timer,
    ) -> Iterator[AnswerEvent]:
        s = self.settings
        breaker = self.breakers["generator"]
        if not self._slots.acquire(blocking=False):
            quoted.notes.append("generation queue full: quoted passage")
            yield self._finish(quoted, timer)
            return
        if not breaker.allow():
            self._slots.release()
            quoted.notes.append("generator breaker open: quoted passage")
            yield self._finish(quoted, timer)
            return
        question_for_model = rewritten
        passages = (
            [" ".join(quoted.sources[0].quote.split())]
            if s.context_passages == 0 and quoted.sources and quoted.sources[0].quote
            else [h.text for h in context_hits]
        )
        prompt = build_prompt(
            question_for_model,
            passages,
            lang,
            kiosk_name=self.kiosk_name,
            style=s.prompt_style,
        )
        budget_s = max(0.05, (s.total_ms - timer.elapsed_ms()) / 1000)
        request = GenerationRequest(
            prompt=prompt.user,
            system=prompt.system,
            max_tokens=s.max_tokens,
            max_time_s=budget_s,
            temperature=s.temperature,
            stop=("\n\n",),
        )
        pieces: queue.Queue = queue.Queue()
        cancel = threading.Event()

        def work() -> None:
            try:
                for piece in self.generator.stream(request):  # type: ignore[union-attr]
                    if cancel.is_set():
                        break
                    pieces.put(piece)
                pieces.put(_DONE)
            except BaseException as exc:  # noqa: BLE001 - reported to the reader
                pieces.put(exc)
            finally:
                self._slots.release()

        try:
            self._gen_pool.submit(work)
        except RuntimeError:  # pool shut down
            self._slots.release()
            quoted.notes.append("generator worker stopped: quoted passage")
            yield self._finish(quoted, timer)
            return
        out: list[str] = []
        failure: str | None = None
        first = True
        while True:
            limit_ms = (s.deadline_ms if first else s.total_ms) - timer.elapsed_ms()
            if limit_ms <= 0:
                failure = (
                    "first words not ready by the deadline"
                    if first
                    else "generation over the turn's time limit"
                )
                break
            try:
                item = pieces.get(timeout=limit_ms / 1000)
            except queue.Empty:
                continue
            if item is _DONE:
                break
            if isinstance(item, BaseException):
                failure = f"generator failed: {type(item).__name__}: {item}"
                break
            if not isinstance(item, str):
                failure = f"generator yielded {type(item).__name__}, not text"
                break
            if first:
                timer.lap("first_token")
                first = False
            out.append(item)
            yield AnswerEvent("partial", item)
        cancel.set()
        generated = "".join(out).strip()
        timer.lap("generate")
        quoted.generated = generated
        if failure is not None and (first or not generated):
            breaker.record_failure()
            quoted.notes.append(f"{failure}: quoted passage")
            yield self._finish(quoted, timer)
            return
        if failure is not None:  # cut off mid-answer: check what we have, but count the slowness
            breaker.record_failure()
            quoted.notes.append(failure)
        else:
            breaker.record_success()
        if says_unknown(generated, lang):
            if not s.unknown_means_refusal:
                quoted.notes.append("generator found no answer in the passages: quoted passage")
                yield AnswerEvent("replace", quoted.text, tuple(quoted.sources))
                yield self._finish(quoted, timer)
            else:
                ans = replace(
                    quoted,
                    text=self.staff_handoff.get(lang, ""),
                    path="refusal",
                    sources=[],
                    notes=[*quoted.notes, "generator found no answer in the passages"],
                )
                yield AnswerEvent("replace", ans.text)
                yield self._finish(ans, timer)
            return
        ok, problems, cited = self._check(text, rewritten, generated, context_hits, lang)
        timer.lap("check")
        if not ok:
            quoted.notes.append("generated answer failed its check: " + "; ".join(problems))
            yield AnswerEvent("replace", quoted.text, tuple(quoted.sources))
            if use_cache and failure is None:
                self.cache.put(key, qv, lang, quoted)
            yield self._finish(quoted, timer)
            return
        shown = _CITE.sub("", generated).strip()
        ans = replace(
            quoted,
            text=shown,
            path="rag",
            sources=[quoted.sources[i - 1] for i in cited] or quoted.sources,
        )
        if use_cache and failure is None:
            self.cache.put(key, qv, lang, ans)
        yield self._finish(ans, timer)

    def _check(
        self, text: str, rewritten: str, generated: str, context_hits: list[Hit], lang: str
    ) -> tuple[bool, list[str], list[int]]:
        """Citations ⊆ context, then the claim check. Returns (ok, problems, cited numbers)."""
        problems: list[str] = []
        cited = sorted({int(n) for n in _CITE.findall(generated)})
        bad = [n for n in cited if not 1 <= n <= len(context_hits)]
        if bad:
            problems.append(f"cites sources that were not retrieved: {bad}")
        cited = [n for n in cited if n not in bad]
        if self.settings.claim_check:
            emb = None
            if self.embedder is not None and self.breakers["embedder"].state == "closed":
                emb = self.embedder.embed_batch
            result = check_answer(
                rewritten, _CITE.sub("", generated), [h.text for h in context_hits], lang, embed=emb
            )
            problems.extend(result.problems)
        return not problems, problems, cited


def quick_overlap(question: str, passage: str) -> float:
    """Share of the question's content terms found in ``passage`` (used by evaluation)."""
    return overlap(terms(question), passage)
