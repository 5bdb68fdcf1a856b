"""Retrieval with the real default embedder (USE-multilingual-v3): cross-language, paraphrases."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import require_prepared

from runtime.knowledge.records import ChunkRecord, DocumentRecord, FaqRecord
from runtime.knowledge.store import KnowledgeStore

pytestmark = pytest.mark.real_models

PASSAGES = [
    (
        "en",
        "The service hall is open Monday to Friday from 9 am to 5 pm, and on Saturday mornings.",
    ),
    ("en", "Visitors can park for free for two hours in the underground car park."),
    ("en", "To replace a lost bank card, bring your ID card to counter 3."),
    ("zh", "办理护照需要携带身份证原件和近期两寸照片。"),
    ("zh", "洗手间位于一楼电梯右侧。"),
    ("zh", "残疾人可以使用无障碍通道和轮椅。"),
]


@pytest.fixture(scope="module")
def embedder(model_cache: Path):
    from kiosk_config import load_config
    from runtime.inference.loader import load_embedder

    require_prepared(model_cache, "use-multilingual-v3", "onnx-int8")
    emb = load_embedder(load_config(environ={"KIOSK_MODEL_CACHE": str(model_cache)}))
    yield emb
    emb.close()


@pytest.fixture
def store(tmp_path: Path, embedder):
    with KnowledgeStore.open(
        tmp_path / "k.sqlite", embedding_model=embedder.model_id, dim=embedder.dim
    ) as s:
        for i, (lang, text) in enumerate(PASSAGES):
            s.add_document(
                DocumentRecord(f"{i}.md", f"doc {i}", lang, f"h{i}"),
                [ChunkRecord(text, (f"doc {i}",), 0, len(text), 0, lang)],
                embedder.embed_batch([text]),
            )
        yield s


@pytest.mark.parametrize(
    "question, expected",
    [
        ("洗手间在哪里？", 4),  # zh → zh
        ("Where is the restroom?", 4),  # en → zh passage: cross-language
        ("What documents do I need for a passport?", 3),
        ("服务大厅几点开门？", 0),  # zh → en passage
        ("我的银行卡丢了怎么办", 2),
        ("Is there wheelchair access?", 5),
    ],
)
def test_vector_and_hybrid_find_the_passage(
    store: KnowledgeStore, embedder, question: str, expected: int
) -> None:
    qv = embedder.embed(question)
    vec = store.search(question, qv, k=1, mode="vector")
    assert vec[0].text == PASSAGES[expected][1]
    hyb = store.search(question, qv, k=3, mode="hybrid")
    assert PASSAGES[expected][1] in [h.text for h in hyb]


def test_faq_paraphrase_with_real_vectors(tmp_path: Path, embedder) -> None:
    entries = [
        FaqRecord("hours", ("What are your opening hours?",), "9 to 5", "en"),
        FaqRecord("toilet", ("洗手间在哪里？",), "一楼电梯右侧", "zh"),
        FaqRecord("card", ("How do I replace a lost card?",), "Counter 3", "en"),
    ]
    with KnowledgeStore.open(
        tmp_path / "f.sqlite", embedding_model=embedder.model_id, dim=embedder.dim
    ) as s:
        s.add_faq(entries, [embedder.embed_batch(list(e.questions)) for e in entries])
        for question, expected in (
            ("When do you open?", "hours"),
            ("厕所在哪", "toilet"),
            ("卡丢了怎么补办", "card"),
        ):
            hits = s.match_faq(question, embedder.embed(question), k=3)
            assert hits[0].faq_id == expected and hits[0].method == "vector"
            assert hits[0].score > hits[1].score
