"""Retrieval: text normalisation, safe FTS5 queries, exact kNN, fusion, filters, FAQ matching."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from fakes import FakeEmbedder

from runtime.knowledge import text
from runtime.knowledge.records import ChunkRecord, DocumentRecord, FaqRecord, SearchFilters
from runtime.knowledge.retrieval import EmbedderReranker, keyword_query, rrf_fuse
from runtime.knowledge.store import KnowledgeStore
from runtime.knowledge.vector_index import VectorIndex

EMB = FakeEmbedder(dim=64)

DOCS = {
    "hours.md": (
        "en",
        "general",
        "",
        [
            "The service hall opens at 9 am and closes at 5 pm on weekdays.",
            "On Saturdays the hall opens at 10 am.",
        ],
    ),
    "parking.md": (
        "en",
        "transport",
        "",
        [
            "Parking is free for two hours with a validated ticket.",
            "Bicycles can be parked at the north entrance.",
        ],
    ),
    "passport.md": (
        "zh",
        "documents",
        "city",
        ["办理护照需要携带身份证原件和两张照片。", "护照加急办理需要额外收费。"],
    ),
    "hours_zh.md": ("zh", "general", "city", ["服务大厅工作日上午九点开门，下午五点关门。"]),
    "fees.md": (
        "en",
        "fees",
        "city",
        ['Card payments (Visa, "UnionPay") are accepted; cash AND cheques are not.'],
    ),
}


@pytest.fixture(params=["jieba", "bigram", "trigram"])
def store(request, tmp_path: Path):
    with KnowledgeStore.open(
        tmp_path / "k.sqlite", embedding_model=EMB.model_id, dim=EMB.dim, fts_scheme=request.param
    ) as s:
        for path, (lang, cat, pack, texts) in DOCS.items():
            doc = DocumentRecord(
                path,
                path,
                lang,
                hashlib.sha256(path.encode()).hexdigest(),
                category=cat,
                pack_id=pack,
                pack_version=2 if pack else 0,
            )
            chunks = [ChunkRecord(t, (path,), 0, len(t), i, lang) for i, t in enumerate(texts)]
            s.add_document(doc, chunks, EMB.embed_batch(texts))
        yield s


def _texts(hits) -> list[str]:
    return [h.text for h in hits]


# -- text ------------------------------------------------------------------------------------
def test_normalize_width_case_script_space() -> None:
    assert text.normalize("  ＡＢＣ\u3000營業　時間 \n Hours ") == "abc 营业 时间 hours"
    assert text.normalize("護照辦理") == text.normalize("护照办理") == "护照办理"


def test_query_terms_per_scheme() -> None:
    assert "护照" in text.query_terms("怎么办理護照？", "jieba")
    assert text.query_terms("办理护照", "bigram") == ["办理", "理护", "护照"]
    assert text.query_terms("办理护照", "trigram") == ["办理护", "理护照"]
    assert text.query_terms("What are the opening hours?", "jieba") == ["opening", "hours"]
    assert text.query_terms("the", "jieba") == [
        "the"
    ]  # only stopwords: keep them rather than search nothing


QUESTIONS_WITH_FTS_SYNTAX = [
    '"',
    '""',
    'a "quoted" question',
    "cash AND cheques",
    "cash OR",
    "NOT cash",
    "NEAR(cash cheques, 2)",
    "card*",
    "*",
    "(visa",
    "visa)",
    "body: visa",
    "^visa",
    "-visa",
    "+visa",
    "{heading}: visa",
    "'; DROP TABLE chunks; --",
    '护照"AND"(',
    "\x00visa",
    "",
]


@pytest.mark.parametrize("scheme", text.FTS_SCHEMES)
def test_fts_syntax_in_questions_is_just_text(tmp_path: Path, scheme: str) -> None:
    with KnowledgeStore.open(
        tmp_path / "k.sqlite", embedding_model=EMB.model_id, dim=EMB.dim, fts_scheme=scheme
    ) as s:
        t = 'Card payments (Visa, "UnionPay") are accepted; cash AND cheques are not. 护照 AND'
        s.add_document(
            DocumentRecord("f.md", "f", "en", "h"),
            [ChunkRecord(t, (), 0, len(t), 0, "en")],
            EMB.embed_batch([t]),
        )
        for question in QUESTIONS_WITH_FTS_SYNTAX:
            hits = s.search(question, None, mode="keyword")
            letters = [
                w for w in text.query_terms(question, scheme) if any(ch.isalnum() for ch in w)
            ]
            expected_match = any(w in text.normalize(t) for w in letters)
            assert bool(hits) == expected_match, (question, keyword_query(question, scheme))
        assert s.search("cash AND cheques", None, mode="keyword")[0].text == t
        assert s.stats()["chunks"] == 1


def test_keyword_search_english_and_chinese(store: KnowledgeStore) -> None:
    assert _texts(store.search("Where is free parking?", None, mode="keyword", k=1)) == [
        "Parking is free for two hours with a validated ticket."
    ]
    # Traditional characters in the question still find the Simplified passage.
    hits = store.search("護照加急", None, mode="keyword", k=2)
    assert hits[0].text == "护照加急办理需要额外收费。"
    assert hits[0].scores["keyword_rank"] == 1.0 and hits[0].scores["keyword_bm25"] < 0
    assert hits[0].citation.pack_id == "city" and hits[0].citation.pack_version == 2


def test_hyphenated_compounds_are_found_written_as_one_word(store: KnowledgeStore) -> None:
    assert text.compounds("free wi-fi and e-mail, windows 401-402, 9-10 am") == ["wifi", "email"]
    passage = "Free Wi-Fi is available in the waiting area."
    doc = DocumentRecord("wifi.md", "wifi.md", "en", hashlib.sha256(b"wifi").hexdigest())
    store.add_document(
        doc,
        [ChunkRecord(passage, ("wifi.md",), 0, len(passage), 0, "en")],
        EMB.embed_batch([passage]),
    )
    assert _texts(store.search("wi-fi", None, mode="keyword", k=1)) == [passage]
    if store.fts_scheme != "trigram":  # trigram indexes the text as written, hyphen and all
        assert _texts(store.search("Is there wifi?", None, mode="keyword", k=1)) == [passage]


def test_english_stemming_unless_trigram(store: KnowledgeStore) -> None:
    hits = store.search("opening", None, mode="keyword")
    if store.fts_scheme == "trigram":
        assert hits == []  # substring "opening" is not in "opens"
    else:
        assert {h.citation.source_path for h in hits} == {
            "hours.md"
        }  # Porter: opening → open ← opens


def test_vector_search_is_exact(store: KnowledgeStore) -> None:
    all_chunks = list(store.iter_chunks())
    ids = np.array([c[0] for c in all_chunks])
    matrix = np.stack([c[3] for c in all_chunks])
    for q in ["when does the hall open", "护照", "parking ticket", "random words entirely"]:
        qv = EMB.embed(q)
        expected = ids[np.argsort(-(matrix @ qv), kind="stable")][:4]
        got = [cid for cid, _ in store.vector_search(qv, k=4)]
        assert got == list(expected)
        store.vector_backend = "sqlite-vec"
        assert [cid for cid, _ in store.vector_search(qv, k=4)] == list(expected)
        store.vector_backend = "numpy"


def test_vector_index_matches_numpy_brute_force_at_scale() -> None:
    rng = np.random.default_rng(7)
    centers = rng.normal(size=(20, 32))
    vecs = (centers[rng.integers(0, 20, 3000)] + 0.3 * rng.normal(size=(3000, 32))).astype(
        np.float32
    )
    ids = rng.permutation(10_000)[:3000] + 1
    langs = rng.choice(["zh", "en"], 3000)
    index = VectorIndex.build(ids, vecs, {"language": langs})
    normed = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
    for _ in range(20):
        q = rng.normal(size=32).astype(np.float32)
        sims = normed @ (q / np.linalg.norm(q))
        got_ids, got_sims = index.search(q, 10)
        assert list(got_ids) == list(ids[np.argsort(-sims, kind="stable")][:10])
        np.testing.assert_allclose(got_sims, np.sort(sims)[::-1][:10], rtol=1e-5)
        mask = index.filter_mask(language=["zh"])
        got_ids, _ = index.search(q, 10, mask)
        zh = langs == "zh"
        assert list(got_ids) == list(ids[zh][np.argsort(-sims[zh], kind="stable")][:10])


def test_hybrid_fuses_both_rankings(store: KnowledgeStore) -> None:
    q = "Is parking free?"
    kw = store.search(q, EMB.embed(q), mode="keyword", k=10)
    vec = store.search(q, EMB.embed(q), mode="vector", k=10)
    hyb = store.search(q, EMB.embed(q), mode="hybrid", k=10, rrf_k=60)
    kw_rank = {h.chunk_id: r for r, h in enumerate(kw, 1)}
    vec_rank = {h.chunk_id: r for r, h in enumerate(vec, 1)}
    for h in hyb:
        expected = sum(
            1 / (60 + ranks[h.chunk_id]) for ranks in (kw_rank, vec_rank) if h.chunk_id in ranks
        )
        assert h.score == pytest.approx(expected)
    assert [h.score for h in hyb] == sorted((h.score for h in hyb), reverse=True)
    assert hyb[0].text.startswith("Parking is free")
    # No vector (embedder down): hybrid degrades to keyword order.
    assert _texts(store.search(q, None, mode="hybrid", k=10)) == _texts(kw)


def test_rrf_fuse() -> None:
    fused = rrf_fuse([[1, 2, 3], [3, 1, 4]], rrf_k=10)
    scores = dict(fused)
    assert [i for i, _ in fused] == [1, 3, 2, 4]
    assert scores[1] == pytest.approx(1 / 11 + 1 / 12) and scores[4] == pytest.approx(1 / 13)
    assert rrf_fuse([]) == []


def test_filters(store: KnowledgeStore) -> None:
    qv = EMB.embed("hall opens")
    for mode in ("keyword", "vector", "hybrid"):
        zh = store.search(
            "hall opens 工作日上午 办理护照",
            qv,
            mode=mode,
            k=10,
            filters=SearchFilters(languages=("zh",)),
        )
        assert zh and {h.citation.source_path for h in zh} <= {"passport.md", "hours_zh.md"}
        city = store.search(
            "hall opens 工作日上午 办理护照 payments",
            qv,
            mode=mode,
            k=10,
            filters=SearchFilters(pack_ids=("city",)),
        )
        assert city and all(h.citation.pack_id == "city" for h in city)
        cat = store.search(
            "hall opens 开门",
            qv,
            mode=mode,
            k=10,
            filters=SearchFilters(categories=("general",), languages=("en",)),
        )
        assert cat and {h.citation.source_path for h in cat} == {"hours.md"}
        assert store.search("hall", qv, mode=mode, filters=SearchFilters(pack_ids=("nope",))) == []


def test_citations_carry_everything(store: KnowledgeStore) -> None:
    hit = store.search("validated ticket", None, mode="keyword", k=1)[0]
    c = hit.citation
    assert (c.document_title, c.source_path, c.section, c.char_start, c.char_end) == (
        "parking.md",
        "parking.md",
        "parking.md",
        0,
        len(hit.text),
    )
    assert c.label() == "parking.md > parking.md"


class _SentenceEmbedder(FakeEmbedder):
    """Embeds each text as itself: lets the reranker test see which sentences were scored."""

    def __init__(self) -> None:
        super().__init__(dim=64)
        self.seen: list[str] = []

    def embed_batch(self, texts):
        self.seen.extend(texts)
        return super().embed_batch(texts)


def test_embedder_reranker_prefers_the_best_sentence(tmp_path: Path) -> None:
    emb = _SentenceEmbedder()
    long_text = (
        "The museum has a large collection of modern art. It also hosts concerts. "
        "Lost property is kept at the information desk."
    )
    other = "Property tax questions are handled by the tax office on floor 2."
    with KnowledgeStore.open(tmp_path / "k.sqlite", embedding_model=emb.model_id, dim=emb.dim) as s:
        for i, t in enumerate([other, long_text]):
            s.add_document(
                DocumentRecord(f"{i}.md", "t", "en", str(i)),
                [ChunkRecord(t, (), 0, len(t), 0, "en")],
                emb.embed_batch([t]),
            )
        q = "Lost property is kept where?"
        plain = s.search(q, emb.embed(q), k=2, mode="vector")
        reranked = s.search(
            q, emb.embed(q), k=2, mode="vector", rerank=EmbedderReranker(emb, weight=0.9)
        )
        assert "Lost property is kept at the information desk." in emb.seen
        assert reranked[0].text == long_text
        assert (
            reranked[0].scores["rerank_sentence_cosine"]
            > plain[0].scores["vector_similarity"] - 1.0
        )
        best_sentence = float(
            emb.embed("Lost property is kept at the information desk.") @ emb.embed(q)
        )
        assert reranked[0].scores["rerank_sentence_cosine"] == pytest.approx(
            best_sentence, abs=1e-5
        )


# -- FAQ -------------------------------------------------------------------------------------
@pytest.fixture
def faq_store(tmp_path: Path):
    entries = [
        FaqRecord(
            "hours",
            ("What are your opening hours?", "When are you open?"),
            "9 to 5",
            "en",
            source="faq.csv:2",
        ),
        FaqRecord(
            "hours-zh",
            ("营业时间是几点？", "你们几点开门"),
            "九点到五点",
            "zh",
            pack_id="city",
            pack_version=4,
        ),
        FaqRecord("card", ("How do I replace a lost card?", "I lost my bank card"), "Desk 3", "en"),
    ]
    with KnowledgeStore.open(tmp_path / "k.sqlite", embedding_model=EMB.model_id, dim=EMB.dim) as s:
        s.add_faq(entries, [EMB.embed_batch(list(e.questions)) for e in entries])
        yield s


def test_faq_exact_normalized_match(faq_store: KnowledgeStore) -> None:
    hits = faq_store.match_faq("  WHAT are your opening   hours? ", EMB.embed("unrelated"), k=3)
    assert hits[0].faq_id == "hours" and hits[0].method == "exact" and hits[0].score == 1.0
    assert (
        hits[0].matched_question == "What are your opening hours?" and hits[0].source == "faq.csv:2"
    )
    assert len({h.faq_id for h in hits}) == len(hits)  # each entry once
    zh = faq_store.match_faq("營業時間是幾點？", None, k=1)  # Traditional → Simplified
    assert zh[0].faq_id == "hours-zh" and zh[0].method == "exact" and zh[0].pack_version == 4


def test_faq_paraphrase_by_vector(faq_store: KnowledgeStore) -> None:
    q = "I lost my card, how to replace it"
    hits = faq_store.match_faq(q, EMB.embed(q), k=2)
    assert hits[0].faq_id == "card" and hits[0].method == "vector"
    best = max(
        float(EMB.embed(p) @ EMB.embed(q))
        for p in ("How do I replace a lost card?", "I lost my bank card")
    )
    assert hits[0].score == pytest.approx(best, abs=1e-5)
    assert hits[0].score > hits[1].score


def test_faq_language_filter_and_keyword_modes(faq_store: KnowledgeStore) -> None:
    q = "opening hours 营业时间"
    assert {h.language for h in faq_store.match_faq(q, EMB.embed(q), k=3, languages=("zh",))} == {
        "zh"
    }
    kw = faq_store.match_faq("lost card", None, k=1)
    assert kw[0].faq_id == "card" and kw[0].method == "keyword" and 0 < kw[0].score < 1
    hyb = faq_store.match_faq("lost card", EMB.embed("lost card"), k=3, mode="hybrid")
    assert hyb[0].faq_id == "card"
    assert faq_store.match_faq("", None) == []


def test_keyword_budget_prunes_common_terms(tmp_path: Path) -> None:
    from runtime.knowledge.retrieval import budgeted_match

    texts = [
        f"common filler text number {i}"
        + (" rare" if i in (3, 7) else "")
        + (" other" if i % 2 else "")
        for i in range(40)
    ]
    with KnowledgeStore.open(tmp_path / "k.sqlite", embedding_model=EMB.model_id, dim=EMB.dim) as s:
        s.add_document(
            DocumentRecord("a.md", "a", "en", "h"),
            [ChunkRecord(t, (), 0, len(t), i, "en") for i, t in enumerate(texts)],
            EMB.embed_batch(texts),
        )
        conn = s.connection
        assert budgeted_match(conn, ["common", "rare"], 10) == ('"rare"', "or-pruned")
        assert budgeted_match(conn, ["common", "rare"], 100) == (
            '"rare" OR "common"',
            "or",
        )  # rarest first
        assert budgeted_match(conn, ["common", "other"], 10) == ('"common" AND "other"', "and")
        assert budgeted_match(conn, ["common", "missing"], 10) == ('"common"', "or-full")
        assert budgeted_match(conn, ["missing"], 10) == ("", "none")

        s.keyword_budget = 10
        hits = s.search("common rare", None, mode="keyword", k=10)
        assert sorted(h.text for h in hits) == sorted(texts[i] for i in (3, 7))
        # only over-budget terms, no row has all: keyword-only ranks them all; hybrid leaves it
        # to the vector half
        assert len(s.keyword_search("common missing", k=50)) == 40
        assert s.keyword_search("common missing", k=50, complete=False) == []
        hyb = s.search("common missing", EMB.embed("common missing"), mode="hybrid", k=5)
        assert hyb and all("keyword_rank" not in h.scores for h in hyb)
        s.keyword_budget = None  # unlimited: every chunk matches "common"
        assert len(s.search("common rare", None, mode="keyword", k=50)) == 40
        s.keyword_budget = 1000  # budget above the store size: no pruning, no counting queries
        assert len(s.search("common rare", None, mode="keyword", k=50)) == 40
