"""Chunking: exact offsets, budgets, section boundaries, sentence splits, semantic merging."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime.knowledge.chunking import (
    ChunkingSettings,
    chunk_document,
    embedding_text,
    split_sentences,
)
from runtime.knowledge.language import count_tokens, detect_language
from runtime.knowledge.parsers import parse_bytes

DATA = Path(__file__).resolve().parent.parent / "data" / "ingest"


class TopicEmbedder:
    """Vectors by topic word: same topic → same vector, different topics orthogonal."""

    topics = ("cat", "car", "tax")

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), len(self.topics) + 1), dtype=np.float32)
        for i, t in enumerate(texts):
            hits = [j for j, w in enumerate(self.topics) if w in t.lower()]
            out[i, hits[0] if hits else len(self.topics)] = 1.0
        return out


def md(text: str):
    return parse_bytes(text.encode("utf-8"), "doc.md")


def test_sentence_split_chinese_and_english():
    text = "Hello Mr. Smith. This costs 3.5 yuan! 你好。我们走吧！最后一句"
    assert [text[a:b] for a, b in split_sentences(text)] == [
        "Hello Mr. Smith.",
        "This costs 3.5 yuan!",
        "你好。",
        "我们走吧！",
        "最后一句",
    ]


def test_token_estimate_and_language():
    assert count_tokens("营业时间") == 4
    assert count_tokens("opening hours today") == 4  # 3 words * 1.3, rounded up
    assert detect_language("请问洗手间在哪里？") == "zh"
    assert detect_language("Where is the restroom at 滨江中心?") == "en"
    assert detect_language("ATM在哪里") == "zh"
    assert detect_language("12:30", default="zh") == "zh"


def test_chunks_are_exact_spans_and_respect_sections():
    doc = parse_bytes((DATA / "guide_en.md").read_bytes(), "guide_en.md")
    chunks = chunk_document(doc, ChunkingSettings(max_tokens=60, min_tokens=10, semantic=False))
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))
    for c in chunks:
        assert doc.text[c.char_start : c.char_end] == c.text
        assert "Branch Guide" not in c.section_path  # the title is the document's, not a section
    fees = [c for c in chunks if c.section_path == ("Fees",)]
    waived = [c for c in chunks if c.section_path == ("Fees", "Waived fees")]
    assert fees and waived
    assert all("Students pay half price" not in c.text for c in fees)
    # The table stays whole with its header row.
    assert any("Service | Fee" in c.text and "Account statement copy" in c.text for c in fees)


def test_long_paragraph_splits_on_sentences_within_budget():
    sentences = [
        f"Sentence number {i} talks about the opening hours of counter {i}." for i in range(30)
    ]
    zh = "".join(f"第{i}号窗口办理居民身份证业务，工作日九点开门。" for i in range(30))
    doc = md("# T\n\n" + " ".join(sentences) + "\n\n" + zh)
    s = ChunkingSettings(max_tokens=50, min_tokens=10, semantic=False)
    chunks = chunk_document(doc, s)
    assert len(chunks) > 4
    for c in chunks:
        assert count_tokens(c.text) <= s.max_tokens
        assert doc.text[c.char_start : c.char_end] == c.text
    en = [c for c in chunks if c.language == "en"]
    # English chunks end at a sentence end, Chinese ones at 。
    assert all(c.text.endswith(".") for c in en)
    assert all(c.text.endswith("。") for c in chunks if c.language == "zh")


def test_a_sentence_longer_than_the_budget_is_cut():
    doc = md("# T\n\n" + "word " * 400 + "\n\n" + "字" * 300)
    chunks = chunk_document(doc, ChunkingSettings(max_tokens=40, min_tokens=0, semantic=False))
    assert all(count_tokens(c.text) <= 40 for c in chunks)
    assert (
        "".join(c.text for c in chunks).replace(" ", "").replace("\n", "")
        == "T" + ("word" * 400) + "字" * 300
    )


def test_semantic_merge_splits_at_topic_change_only_when_enabled():
    body = "\n\n".join(
        ["The cat sleeps all day on the sofa in the sun."] * 3
        + ["The car needs new tyres before the winter trip."] * 3
    )
    doc = md("# Notes\n\n" + body)
    on = ChunkingSettings(max_tokens=400, min_tokens=5, similarity_threshold=0.5, semantic=True)
    off = ChunkingSettings(max_tokens=400, min_tokens=5, semantic=False)
    merged = chunk_document(doc, off)
    split = chunk_document(doc, on, TopicEmbedder())
    assert len(merged) == 1
    assert len(split) == 2
    assert "car" not in split[0].text and "cat" not in split[1].text


def test_short_units_merge_regardless_of_similarity_below_min_tokens():
    doc = md("# Notes\n\nThe cat.\n\nThe car.\n\nThe tax.")
    chunks = chunk_document(doc, ChunkingSettings(max_tokens=100, min_tokens=50), TopicEmbedder())
    assert len(chunks) == 1


def test_overlap_repeats_the_tail_of_the_previous_chunk():
    paras = [f"Paragraph {i} says something about topic {i} in a few words." for i in range(8)]
    doc = md("# T\n\n" + "\n\n".join(paras))
    plain = chunk_document(doc, ChunkingSettings(max_tokens=40, min_tokens=0, semantic=False))
    over = chunk_document(
        doc, ChunkingSettings(max_tokens=40, min_tokens=0, semantic=False, overlap_tokens=16)
    )
    assert len(over) == len(plain) > 1
    for prev, cur in zip(over, over[1:], strict=False):
        assert cur.char_start < prev.char_end  # shares the previous chunk's last paragraph
        assert doc.text[cur.char_start : cur.char_end] == cur.text


def test_heading_only_sections_are_not_chunks():
    doc = md("# Title\n\n## Empty\n\n### Child\n\nText of the child section.")
    chunks = chunk_document(doc, ChunkingSettings(semantic=False))
    assert [(c.section_path, c.text) for c in chunks] == [
        (("Empty", "Child"), "Child\n\nText of the child section.")
    ]


def test_embedding_text_adds_title_and_path_once():
    doc = md("# Guide\n\n## Hours\n\nOpen at nine.")
    s = ChunkingSettings(semantic=False)
    (chunk,) = chunk_document(doc, s)
    assert embedding_text(doc.title, chunk, s) == "Guide\nHours\n\nOpen at nine."
    assert (
        embedding_text(doc.title, chunk, ChunkingSettings(semantic=False, context_headings=False))
        == chunk.text
    )


def test_settings_validation():
    with pytest.raises(ValueError):
        ChunkingSettings(max_tokens=100, min_tokens=200)
    with pytest.raises(ValueError):
        ChunkingSettings(max_tokens=100, overlap_tokens=100)


_sentence = st.one_of(
    st.lists(
        st.sampled_from(["hall", "opens", "at", "nine", "card", "fee", "10", "yuan", "the"]),
        min_size=1,
        max_size=30,
    ).map(lambda ws: "Note " + " ".join(ws) + st_end()),
    st.text(alphabet="营业时间窗口办理证件收费元的是", min_size=1, max_size=60).map(
        lambda s: s + "。"
    ),
)


def st_end() -> str:
    return "."


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sections=st.lists(
        st.lists(st.lists(_sentence, min_size=1, max_size=6), min_size=1, max_size=4),
        min_size=1,
        max_size=4,
    ),
    max_tokens=st.integers(min_value=12, max_value=120),
    semantic=st.booleans(),
    overlap=st.integers(min_value=0, max_value=10),
)
def test_chunking_properties(sections, max_tokens, semantic, overlap):
    parts = ["# Doc"]
    for n, paras in enumerate(sections):
        parts.append(f"## Section {n}")
        parts.extend(" ".join(p) for p in paras)
    doc = md("\n\n".join(parts))
    s = ChunkingSettings(
        max_tokens=max_tokens,
        min_tokens=min(8, max_tokens),
        semantic=semantic,
        overlap_tokens=min(overlap, max_tokens - 1),
    )
    chunks = chunk_document(doc, s, TopicEmbedder() if semantic else None)
    assert chunks
    covered = np.zeros(len(doc.text), dtype=bool)
    for c in chunks:
        assert doc.text[c.char_start : c.char_end] == c.text
        assert c.text == c.text.strip()
        if overlap == 0:
            assert count_tokens(c.text) <= max_tokens + 2  # only a lone heading unit may exceed
        covered[c.char_start : c.char_end] = True
        section = c.section_path[0]
        assert f"## {section}" not in c.text
        # A chunk never crosses into the next section.
        next_heading = f"Section {int(section.split()[1]) + 1}"
        assert next_heading not in c.text
    # Every non-space character of every non-heading block is inside some chunk.
    for b in doc.blocks:
        if b.kind != "heading":
            assert all(covered[i] for i in range(b.start, b.end) if not doc.text[i].isspace())
