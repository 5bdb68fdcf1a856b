"""What the pipeline hands out: an :class:`Answer` (final) and :class:`AnswerEvent` (streamed).

Every answer records where it came from (``path``), which sources back it, which
experiment produced it, how long each stage took and a trace id, so the UI can
show the source and an audit can trace any answer back to its settings.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Path_ = Literal["cache", "faq", "rag", "extractive", "fallback", "refusal"]
EventKind = Literal["sources", "partial", "replace", "done"]


@dataclass(frozen=True)
class Turn:
    """One earlier turn of the conversation."""

    role: Literal["user", "assistant"]
    content: str


@dataclass(frozen=True)
class Source:
    """One cited source: a retrieved passage or an FAQ entry."""

    number: int  # [n] as shown to the visitor
    document: str  # document title, or "FAQ"
    section: str
    source_path: str
    pack_id: str
    pack_version: int
    quote: str  # the passage (or FAQ answer) shown beside the answer
    chunk_id: int | None = None
    faq_id: str | None = None

    def label(self) -> str:
        where = f"{self.document} > {self.section}" if self.section else self.document
        if self.pack_id:
            where += f" [{self.pack_id} v{self.pack_version}]"
        return f"[{self.number}] {where}"


@dataclass
class Answer:
    text: str
    language: str
    path: Path_
    sources: list[Source] = field(default_factory=list)
    experiment_id: str = ""
    trace_id: str = ""
    timings_ms: dict[str, float] = field(default_factory=dict)
    question: str = ""
    rewritten: str = ""  # the question actually searched (after history rewrite)
    generated: str = ""  # raw generator output, when one ran (kept for evaluation)
    notes: list[str] = field(default_factory=list)  # why a stage was skipped or degraded

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class AnswerEvent:
    """A streamed step: ``sources`` (best passage, shown at once), ``partial`` text,
    ``replace`` (the generated text failed its check: show this instead), ``done``."""

    kind: EventKind
    text: str = ""
    sources: tuple[Source, ...] = ()
    answer: Answer | None = None
