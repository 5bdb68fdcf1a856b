"""The RGB Chinese RAG benchmark as an answer evaluation: real questions, someone else's text.

Every other question set of ``kiosk eval answers`` was written by this project over its own
demo documents. RGB (``rag_zh_rgb/zh_refine_dev.jsonl`` in the shared data: news questions
with short answers, passages that hold the answer and related passages that do not) tests
the same pipeline on text nobody here wrote or tuned on.

The knowledge is one store of passages, each passage one chunk:

- **answerable** (even rows): the row's passages that hold the answer and the ones that do
  not are all in the store; the answer is right when it contains every answer item (one of
  an item's alternatives), as RGB scores it.
- **uncovered** (odd rows): the row's answer passages are left out, its related passages
  stay as near-topic distractors ("the 2022 final" without "who won"); the kiosk should
  refuse. A row is dropped when some passage left in the store still holds its answer
  (another row's passages can), so an uncovered question has no answer in the store.

Rows whose answer is a yes or a no are left out: the polarity scoring of the demo sets does
not apply to news answers. The data is research-licensed (CC BY-NC-SA): evaluation only.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .check import answer_polarity
from .evaluate import EvalQuestion

RGB_FILE = Path("rag_zh_rgb") / "zh_refine_dev.jsonl"
MAX_ROWS = 1000
MAX_PASSAGE_CHARS = 4000  # longer passages are cut: one chunk, one embedding


@dataclass
class RgbSet:
    questions: list[EvalQuestion]
    passages: list[str]
    dropped: dict[str, int]  # reason -> rows left out


def _items(answer: object) -> tuple[tuple[str, ...], ...] | None:
    """RGB's answer: a list whose items are a string or a list of alternative strings."""
    if not isinstance(answer, list) or not answer:
        return None
    out = []
    for item in answer:
        alts = item if isinstance(item, list) else [item]
        alts = [a.strip() for a in alts if isinstance(a, str) and a.strip()]
        if not alts:
            return None
        out.append(tuple(alts))
    return tuple(out)


def _holds(passage: str, expected: tuple[tuple[str, ...], ...]) -> bool:
    low = passage.lower()
    return all(any(a.lower() in low for a in alts) for alts in expected)


def load_rgb(data_dir: Path, limit: int | None = None) -> RgbSet:
    """Questions and the passages of the store (see the module docstring for the split)."""
    from runtime.commands.shared_data import EvaluationDataError, read_data_text

    path = data_dir / RGB_FILE
    rows = []
    dropped = {"malformed": 0, "yes/no answer": 0, "answer still in the store": 0}
    for n, line in enumerate(read_data_text(path).splitlines()[:MAX_ROWS]):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            query = str(row["query"]).strip()
            positives = [p for p in row["positive"] if isinstance(p, str) and p.strip()]
            negatives = [p for p in row["negative"] if isinstance(p, str) and p.strip()]
            expected = _items(row["answer"])
        except (ValueError, KeyError, TypeError) as exc:
            raise EvaluationDataError(
                f"{path} line {n + 1} is not an RGB row ({exc})", hint="check the file"
            ) from None
        if not query or expected is None or not positives:
            dropped["malformed"] += 1
            continue
        if any(answer_polarity(a) for alts in expected for a in alts):
            dropped["yes/no answer"] += 1
            continue
        rows.append((str(row.get("id", n)), query, positives, negatives, expected))
    rows = rows[:limit] if limit else rows

    pool: dict[str, None] = {}
    for i, (_, _, positives, negatives, _) in enumerate(rows):
        for p in (positives if i % 2 == 0 else []) + negatives:
            pool.setdefault(p[:MAX_PASSAGE_CHARS])
    passages = list(pool)
    questions = []
    for i, (rid, query, _, _, expected) in enumerate(rows):
        answerable = i % 2 == 0
        if not answerable and any(_holds(p, expected) for p in passages):
            dropped["answer still in the store"] += 1
            continue
        questions.append(
            EvalQuestion(
                id=f"rgb{rid}",
                lang="zh",
                type="rgb" if answerable else "uncovered",
                question=query,
                answerable=answerable,
                expected=expected if answerable else (),
                must_not=(),
                source=None,
            )
        )
    return RgbSet(questions, passages, {k: v for k, v in dropped.items() if v})


def build_rgb_store(
    rgb: RgbSet, embedder, folder: Path | None = None, say: Callable[[str], None] = print
):
    """A knowledge store of the RGB passages (one chunk each), in ``folder`` or a temp dir."""
    from runtime.commands.evaluate import Task, build_store, embed_all
    from runtime.knowledge.store import DEFAULT_FTS_SCHEME

    folder = folder or Path(tempfile.mkdtemp(prefix="kiosk-rgb-"))
    task = Task("zh-rgb", "chunks", rgb.passages, "zh", [""] * len(rgb.passages), [], [])
    say(f"zh-rgb: embedding {len(rgb.passages)} passages (one chunk each)")
    vectors = embed_all(embedder, rgb.passages)
    return build_store(folder / "rgb.sqlite", task, vectors, embedder.model_id, DEFAULT_FTS_SCHEME)
