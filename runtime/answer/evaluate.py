"""`kiosk eval answers`: accuracy, contradictions and refusals of the answer pipeline per variant.

Scoring follows kiosk_config/demo/README.md: an answer to an answerable question
is *correct* when every ``expected`` item (or one of its ``alternatives``)
occurs in the shown answer text (case-insensitive) and no ``must_not`` string
does; a *contradiction* is a shown answer containing a ``must_not`` string; an
uncovered question is *refused* when the answer took the refusal path (staff
handoff). Variants multiply prompt style × context passages × claim check ×
generator, so defaults are chosen by this table, not by taste.
"""

from __future__ import annotations

import itertools
import json
import re
import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from runtime.errors import AnswerError

from .check import answer_polarity
from .pipeline import AnswerPipeline, PipelineSettings
from .types import Answer, Turn

MAX_QUESTIONS_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class EvalQuestion:
    id: str
    lang: str
    type: str
    question: str
    answerable: bool
    expected: tuple[tuple[str, ...], ...]
    must_not: tuple[str, ...]
    source: str | None
    history: tuple[Turn, ...] = ()


def load_questions(path: Path) -> list[EvalQuestion]:
    if path.stat().st_size > MAX_QUESTIONS_BYTES:
        raise AnswerError(
            f"question file {path} is over {MAX_QUESTIONS_BYTES} bytes", hint="split it"
        )
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            alts = d.get("alternatives") or [[e] for e in d["expected"]]
            out.append(
                EvalQuestion(
                    id=d["id"],
                    lang=d["lang"],
                    type=d["type"],
                    question=d["question"],
                    answerable=bool(d["answerable"]),
                    expected=tuple(tuple(a) for a in alts),
                    must_not=tuple(d.get("must_not") or ()),
                    source=d.get("source"),
                    history=tuple(Turn(t["role"], t["content"]) for t in d.get("history") or ()),
                )
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise AnswerError(
                f"{path}:{n}: not a grounded question ({exc})",
                hint="see kiosk_config/demo/README.md for the fields",
            ) from None
    return out


@dataclass
class Scored:
    question: EvalQuestion
    answer: Answer
    correct: bool
    contradiction: bool
    refused: bool
    # The expected facts are shown, leaving out the yes/no word of a yes/no question: a quote
    # holding "Exit C has a lift" without a "Yes." in front (the verdict abstained). Reported
    # beside ``correct``, never instead of it: it says where a miss comes from.
    facts: bool = False


def expected_polarity(q: EvalQuestion) -> str | None:
    """"yes"/"no" when the question's first expected item is a yes or a no, else None."""
    if not q.answerable or not q.expected:
        return None
    votes = {answer_polarity(a) for a in q.expected[0]} - {None}
    return votes.pop() if len(votes) == 1 else None


def score(q: EvalQuestion, ans: Answer) -> Scored:
    text = ans.text.lower()
    refused = ans.path == "refusal"
    # A shown "Yes." where the source says no (or the reverse) contradicts it, whatever follows.
    wanted, said = expected_polarity(q), answer_polarity(ans.text)
    contradiction = any(m.lower() in text for m in q.must_not) or (
        wanted is not None and said is not None and wanted != said
    )
    shown = [any(a.lower() in text for a in alts) for alts in q.expected]
    sound = q.answerable and not refused and not contradiction
    correct = sound and all(shown)
    facts = sound and all(shown[1:] if wanted is not None else shown)
    return Scored(q, ans, correct, contradiction and not refused, refused, facts)


@dataclass
class VariantResult:
    name: str
    scored: list[Scored] = field(default_factory=list)

    def summary(self) -> dict[str, object]:
        ans = [s for s in self.scored if s.question.answerable]
        unc = [s for s in self.scored if not s.question.answerable]
        lat = [s.answer.timings_ms.get("total", 0.0) for s in self.scored]
        return {
            "variant": self.name,
            "questions": len(self.scored),
            "accuracy": round(sum(s.correct for s in ans) / len(ans), 3) if ans else None,
            "correct": sum(s.correct for s in ans),
            "answerable": len(ans),
            "contradictions": sum(s.contradiction for s in self.scored),
            "refusal_rate": round(sum(s.refused for s in unc) / len(unc), 3) if unc else None,
            "false_refusals": sum(s.refused for s in ans),
            "facts_shown": sum(s.facts for s in ans),
            "paths": dict(Counter(s.answer.path for s in self.scored)),
            "by_type": self._breakdown(lambda s: s.question.type),
            "by_language": self._breakdown(lambda s: s.question.lang),
            "latency_p50_ms": round(statistics.median(lat), 1) if lat else None,
            "latency_p95_ms": round(float(np.percentile(lat, 95)), 1) if lat else None,
        }


    def _breakdown(self, key: Callable[[Scored], str]) -> dict[str, dict[str, int]]:
        """Per group: questions, answerable, correct, facts shown, refused (uncovered too)."""
        out: dict[str, dict[str, int]] = {}
        for s in self.scored:
            g = out.setdefault(
                key(s),
                {"questions": 0, "answerable": 0, "correct": 0, "facts_shown": 0, "refused": 0},
            )
            g["questions"] += 1
            g["answerable"] += s.question.answerable
            g["correct"] += s.correct
            g["facts_shown"] += s.facts
            g["refused"] += s.refused
        return dict(sorted(out.items()))


def without_check(ans: Answer) -> Answer:
    """What the visitor would have seen with the claim check off: the generated text where the
    check replaced it (one generation scores both variants; the model is greedy, so a second
    run would produce the same text)."""
    if (
        ans.path == "extractive"
        and ans.generated
        and any("failed its check" in n for n in ans.notes)
    ):
        return replace(ans, text=re.sub(r"\[(\d{1,2})\]", "", ans.generated).strip(), path="rag")
    return ans


def run_variant(
    name: str,
    pipeline: AnswerPipeline,
    questions: Iterable[EvalQuestion],
    progress: Callable[[Scored], None] | None = None,
    nocheck: VariantResult | None = None,
) -> VariantResult:
    """Ask every question (cache cleared each time). With ``nocheck``, also score the same answers
    as if the claim check were off (see :func:`without_check`)."""
    result = VariantResult(name)
    for q in questions:
        pipeline.cache.clear()  # every question measured on its own merits
        ans = pipeline.answer(q.question, q.history)
        s = score(q, ans)
        result.scored.append(s)
        if nocheck is not None:
            nocheck.scored.append(score(q, without_check(ans)))
        if progress is not None:
            progress(s)
    return result


def sample(questions: list[EvalQuestion], n: int | None) -> list[EvalQuestion]:
    """``n`` questions spread evenly over the set (keeps the mix of languages and types)."""
    if n is None or n >= len(questions):
        return questions
    step = len(questions) / n
    return [questions[int(i * step)] for i in range(n)]


def variants(
    base: PipelineSettings,
    *,
    prompts: list[str],
    passages: list[int],
    checks: list[bool],
    generators: list[str],
) -> list[tuple[str, str, PipelineSettings]]:
    """(name, generator, settings) for every combination; "none" (no generator) once."""
    out = []
    for gen in generators:
        if gen == "none":
            out.append(("none (fast paths + quote)", gen, base))
            continue
        for style, n, chk in itertools.product(prompts, passages, checks):
            name = f"{gen}/{style}/p{n}/{'check' if chk else 'nocheck'}"
            out.append(
                (
                    name,
                    gen,
                    replace(
                        base,
                        compose="generate",
                        prompt_style=style,
                        context_passages=n,
                        claim_check=chk,
                    ),
                )
            )
    return out


def faq_pair_thresholds(
    embedder, pairs_tsv: Path, thresholds: list[float], limit: int = 2000
) -> list[dict[str, float]]:
    """How well "cosine ≥ t" separates same-intent question pairs (real WeBank pairs)."""
    q1, q2, labels = [], [], []
    for line in pairs_tsv.read_text(encoding="utf-8").splitlines()[:limit]:
        parts = line.split("\t")
        if len(parts) == 3 and parts[2].strip() in ("0", "1"):
            q1.append(parts[0])
            q2.append(parts[1])
            labels.append(parts[2].strip() == "1")
    a = np.concatenate([embedder.embed_batch(q1[i : i + 64]) for i in range(0, len(q1), 64)])
    b = np.concatenate([embedder.embed_batch(q2[i : i + 64]) for i in range(0, len(q2), 64)])
    cos = (a * b).sum(axis=1)
    y = np.array(labels)
    rows = []
    for t in thresholds:
        pred = cos >= t
        tp = int((pred & y).sum())
        fp = int((pred & ~y).sum())
        rows.append(
            {
                "threshold": t,
                "precision": round(tp / max(1, tp + fp), 3),
                "recall": round(tp / max(1, int(y.sum())), 3),
                "accepted": int(pred.sum()),
                "pairs": len(y),
            }
        )
    return rows


def timed(fn: Callable[[], object]) -> tuple[object, float]:
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t
