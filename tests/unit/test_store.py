"""KnowledgeStore: open, migrations, model binding, writes, bad input, reading back, integrity."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from fakes import FakeEmbedder

from runtime.errors import (
    KnowledgeError,
    StoreCorruptError,
    StoreMismatchError,
    StoreOpenError,
    StoreReadOnlyError,
    StoreVersionError,
    VectorError,
)
from runtime.knowledge.connection import open_connection
from runtime.knowledge.migrations import SCHEMA_VERSION
from runtime.knowledge.records import ChunkRecord, DocumentRecord, FaqRecord
from runtime.knowledge.store import KnowledgeStore

EMB = FakeEmbedder(dim=48)


def _doc(
    path: str,
    texts: list[str],
    *,
    lang: str = "en",
    category: str = "",
    pack: str = "",
    version: int = 0,
):
    h = hashlib.sha256("\n".join(texts).encode()).hexdigest()
    doc = DocumentRecord(
        path,
        f"Title of {path}",
        lang,
        h,
        category=category,
        pack_id=pack,
        pack_version=version,
        meta={"pages": 1},
    )
    chunks, pos = [], 0
    for i, t in enumerate(texts):
        chunks.append(
            ChunkRecord(
                t, (f"Title of {path}", f"Part {i}"), pos, pos + len(t), i, lang, page=i + 1
            )
        )
        pos += len(t) + 1
    return doc, chunks, EMB.embed_batch(texts)


def _open(path: Path, **kw) -> KnowledgeStore:
    return KnowledgeStore.open(path, embedding_model=EMB.model_id, dim=EMB.dim, **kw)


def _snapshot(store: KnowledgeStore) -> tuple:
    docs = list(store.iter_documents())
    chunks = [(cid, did, c, v.tobytes()) for cid, did, c, v in store.iter_chunks()]
    faq = [(r, v.tobytes()) for r, v in store.iter_faq()]
    return docs, chunks, faq, store.stats()["chunks"]


def test_open_creates_migrates_and_reopens(tmp_path: Path) -> None:
    db = tmp_path / "sub" / "k.sqlite"
    with _open(db) as store:
        assert store.schema_version == SCHEMA_VERSION
        store.add_document(*_doc("a.md", ["alpha text", "beta text"]))
        assert store.path == db
    with _open(db) as again:
        stats = again.stats()
        assert (stats["documents"], stats["chunks"], stats["schema_version"]) == (
            1,
            2,
            SCHEMA_VERSION,
        )
        assert stats["embedding_model"] == EMB.model_id and stats["dim"] == EMB.dim
    conn = open_connection(db)
    try:
        rows = conn.execute("SELECT version, name FROM schema_migrations ORDER BY version")
        assert [r[0] for r in rows] == list(range(1, SCHEMA_VERSION + 1))
        assert conn.scalar("PRAGMA journal_mode") == "wal"
        assert conn.scalar("PRAGMA foreign_keys") == 1
        assert conn.scalar("SELECT vec_version()").startswith("v")
    finally:
        conn.close()


def test_refuses_other_model_or_dim(tmp_path: Path) -> None:
    db = tmp_path / "k.sqlite"
    _open(db).close()
    with pytest.raises(StoreMismatchError, match="other-model"):
        KnowledgeStore.open(db, embedding_model="other-model", dim=EMB.dim)
    with pytest.raises(StoreMismatchError, match="49-d"):
        KnowledgeStore.open(db, embedding_model=EMB.model_id, dim=49)


def test_missing_file_without_create_and_readonly(tmp_path: Path) -> None:
    with pytest.raises(StoreOpenError, match="does not exist"):
        _open(tmp_path / "none.sqlite", create=False)
    db = tmp_path / "k.sqlite"
    with _open(db) as store:
        store.add_document(*_doc("a.md", ["alpha"]))
    with _open(db, readonly=True) as ro:
        assert ro.stats()["chunks"] == 1
        with pytest.raises(StoreReadOnlyError):
            ro.add_document(*_doc("b.md", ["beta"]))


def test_corrupt_and_foreign_files_are_typed_errors(tmp_path: Path) -> None:
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not sqlite at all" * 200)
    with pytest.raises(StoreCorruptError, match="junk.sqlite"):
        _open(junk)
    assert junk.read_bytes() == b"this is not sqlite at all" * 200  # untouched

    foreign = tmp_path / "foreign.sqlite"
    conn = open_connection(foreign)
    conn.execute("CREATE TABLE other (x)")
    conn.close()
    with pytest.raises(StoreOpenError, match="not a knowledge store"):
        _open(foreign)


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "k.sqlite"
    _open(db).close()
    conn = open_connection(db)
    conn.execute(
        "INSERT INTO schema_migrations VALUES (?, 'from the future', 'now')", (SCHEMA_VERSION + 1,)
    )
    conn.close()
    with pytest.raises(StoreVersionError, match="schema version"):
        _open(db)


def test_add_noop_replace_and_delete_by_hash(tmp_path: Path) -> None:
    with _open(tmp_path / "k.sqlite") as store:
        doc, chunks, vecs = _doc("guide.md", ["one", "two", "three"])
        doc_id = store.add_document(doc, chunks, vecs)
        assert store.has_document(doc.content_hash)
        gen = store.stats()["generation"]
        assert store.add_document(doc, chunks, vecs) == doc_id  # same path + hash: no-op
        assert store.stats()["generation"] == gen and store.stats()["chunks"] == 3

        new_doc, new_chunks, new_vecs = _doc("guide.md", ["uno", "dos"])
        new_id = store.add_document(new_doc, new_chunks, new_vecs)
        assert not store.has_document(doc.content_hash) and store.has_document(new_doc.content_hash)
        stats = store.stats()
        assert (stats["documents"], stats["chunks"]) == (1, 2)
        assert [c.text for _, did, c, _ in store.iter_chunks() if did == new_id] == ["uno", "dos"]
        assert store.search("three", None, mode="keyword") == []  # old chunk gone from FTS too
        store.integrity_check()

        assert store.delete_document("guide.md") and not store.delete_document("guide.md")
        assert store.stats()["chunks"] == 0
        store.integrity_check()


@pytest.mark.parametrize(
    "make_vectors, match",
    [
        (lambda v: v[:, :-1], "47 dims"),
        (lambda v: v[:1], "expected 2 vectors"),
        (lambda v: np.where(np.arange(v.size).reshape(v.shape) == 3, np.nan, v), "NaN"),
        (lambda v: np.full_like(v, np.inf), "NaN or infinity"),
        (lambda v: np.zeros_like(v), "all zeros"),
        (lambda v: [["a"] * v.shape[1]] * 2, "not numeric"),
    ],
)
def test_bad_vectors_change_nothing(tmp_path: Path, make_vectors, match: str) -> None:
    with _open(tmp_path / "k.sqlite") as store:
        store.add_document(*_doc("keep.md", ["kept text"]))
        store.add_faq([FaqRecord("f1", ("q?",), "a", "en")], [EMB.embed_batch(["q?"])])
        before = _snapshot(store)
        doc, chunks, vecs = _doc("bad.md", ["first", "second"])
        with pytest.raises(VectorError, match=match):
            store.add_document(doc, chunks, make_vectors(vecs))
        faq = FaqRecord("f2", ("x?", "y?"), "b", "en")
        with pytest.raises(VectorError):
            store.add_faq([faq], [make_vectors(EMB.embed_batch(["x?", "y?"]))])
        # a replacing write that fails must not remove the document it would replace
        doc2, chunks2, vecs2 = _doc("keep.md", ["changed a", "changed b"])
        with pytest.raises(VectorError):
            store.add_document(doc2, chunks2, make_vectors(vecs2))
        assert _snapshot(store) == before


def test_query_vector_checks(tmp_path: Path) -> None:
    with _open(tmp_path / "k.sqlite") as store:
        store.add_document(*_doc("a.md", ["alpha"]))
        with pytest.raises(VectorError, match="dims"):
            store.search("alpha", np.ones(EMB.dim + 1, np.float32))
        with pytest.raises(VectorError, match="NaN"):
            store.search("alpha", np.full(EMB.dim, np.nan, np.float32))
        with pytest.raises(VectorError, match="needs a query vector"):
            store.search("alpha", None, mode="vector")
        with pytest.raises(KnowledgeError, match="unknown search mode"):
            store.search("alpha", None, mode="fuzzy")  # type: ignore[arg-type]


def test_bad_chunk_offsets_rejected(tmp_path: Path) -> None:
    with _open(tmp_path / "k.sqlite") as store:
        doc, chunks, vecs = _doc("a.md", ["alpha"])
        bad = ChunkRecord("alpha", (), 10, 5, 0, "en")
        with pytest.raises(KnowledgeError, match="offsets"):
            store.add_document(doc, [bad], vecs)
        assert store.stats()["documents"] == 0


def test_iter_round_trip_into_a_second_store(tmp_path: Path) -> None:
    """What the pack builder does: read everything back and rebuild an identical store."""
    with _open(tmp_path / "a.sqlite") as src:
        src.add_document(
            *_doc(
                "en.md",
                ["opening hours are 9 to 5", "closed on sundays"],
                category="hours",
                pack="city",
                version=3,
            )
        )
        src.add_document(
            *_doc("zh.md", ["营业时间为九点到五点"], lang="zh", pack="city", version=3)
        )
        questions = ("When do you open?", "opening hours")
        src.add_faq(
            [
                FaqRecord(
                    "hours",
                    questions,
                    "9 to 5",
                    "en",
                    category="hours",
                    source="faq.csv:2",
                    pack_id="city",
                    pack_version=3,
                )
            ],
            [EMB.embed_batch(list(questions))],
        )
        docs = list(src.iter_documents())
        chunks = list(src.iter_chunks())
        faq = list(src.iter_faq())
    assert docs[0][1].meta == {"pages": 1} and docs[0][1].pack_version == 3
    assert chunks[0][2].page == 1 and chunks[0][2].section_path == ("Title of en.md", "Part 0")
    np.testing.assert_array_equal(chunks[0][3], EMB.embed("opening hours are 9 to 5"))
    assert faq[0][0].questions == questions and faq[0][1].shape == (2, EMB.dim)

    with _open(tmp_path / "b.sqlite") as dst:
        for doc_id, doc in docs:
            mine = [(c, v) for _, did, c, v in chunks if did == doc_id]
            dst.add_document(doc, [c for c, _ in mine], np.stack([v for _, v in mine]))
        dst.add_faq([r for r, _ in faq], [v for _, v in faq])
        assert [d for _, d in dst.iter_documents()] == [d for _, d in docs]
        assert [(c, v.tobytes()) for _, _, c, v in dst.iter_chunks()] == [
            (c, v.tobytes()) for _, _, c, v in chunks
        ]
        assert [(r, v.tobytes()) for r, v in dst.iter_faq()] == [(r, v.tobytes()) for r, v in faq]
        dst.integrity_check()


def test_faq_replace_by_id(tmp_path: Path) -> None:
    with _open(tmp_path / "k.sqlite") as store:
        store.add_faq(
            [FaqRecord("f", ("old question",), "old", "en")], [EMB.embed_batch(["old question"])]
        )
        store.add_faq(
            [FaqRecord("f", ("new question", "newer"), "new", "en")],
            [EMB.embed_batch(["new question", "newer"])],
        )
        faq = list(store.iter_faq())
        assert (
            len(faq) == 1
            and faq[0][0].answer == "new"
            and faq[0][0].questions == ("new question", "newer")
        )
        assert store.match_faq("old", None) == []  # the old paraphrase's words are gone from FTS
        assert [h.method for h in store.match_faq("new question", None)] == ["exact"]
        store.integrity_check()
        with pytest.raises(VectorError, match="2 entries but 1"):
            store.add_faq([faq[0][0], faq[0][0]], [faq[0][1]])


def test_integrity_check_detects_tampering(tmp_path: Path) -> None:
    db = tmp_path / "k.sqlite"
    with _open(db) as store:
        store.add_document(*_doc("a.md", ["alpha", "beta"]))
        store.integrity_check()
        store.connection.execute("DELETE FROM chunk_vectors WHERE rowid = 1")
        with pytest.raises(StoreCorruptError, match="1 chunks without a vector"):
            store.integrity_check()
        store.connection.execute(
            "UPDATE chunks SET embedding = ? WHERE id = 2", (EMB.embed("other").tobytes(),)
        )
        with pytest.raises(
            StoreCorruptError, match="1 chunk vectors that differ from their vec0 copy"
        ):
            store.integrity_check()


def test_integrity_check_on_damaged_pages(tmp_path: Path) -> None:
    db = tmp_path / "k.sqlite"
    with _open(db) as store:
        store.add_document(*_doc("a.md", [f"passage number {i} " * 20 for i in range(200)]))
        store.connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(db.read_bytes())
    page = 4096
    for offset in range(
        page * 3, len(data) - page, page * 2
    ):  # scribble over many pages past the schema
        data[offset + 100 : offset + 400] = b"\xff" * 300
    db.write_bytes(bytes(data))
    with pytest.raises(StoreCorruptError):
        with _open(db) as damaged:
            damaged.integrity_check()


def test_other_process_writes_are_seen(tmp_path: Path) -> None:
    """A reader's in-memory vector index follows writes made through another connection."""
    db = tmp_path / "k.sqlite"
    with _open(db) as writer, _open(db) as reader:
        writer.add_document(*_doc("a.md", ["apples and pears"]))
        q = EMB.embed("bananas")
        assert [t for t in (h.text for h in reader.search("bananas", q, mode="vector"))] == [
            "apples and pears"
        ]
        writer.add_document(*_doc("b.md", ["bananas"]))
        assert reader.search("bananas", q, mode="vector", k=1)[0].text == "bananas"


def test_batch_is_one_transaction(tmp_path: Path) -> None:
    with _open(tmp_path / "k.sqlite") as store:
        with store.batch():
            store.add_document(*_doc("a.md", ["alpha"]))
            store.add_document(*_doc("b.md", ["beta"]))
        assert store.stats()["documents"] == 2
        with pytest.raises(VectorError):
            with store.batch():
                store.add_document(*_doc("c.md", ["gamma"]))
                doc, chunks, vecs = _doc("d.md", ["delta"])
                store.add_document(doc, chunks, vecs[:, :3])
        assert store.stats()["documents"] == 2  # c.md rolled back with the failing d.md
        assert [h.text for h in store.search("gamma", None, mode="keyword")] == []
        assert store.search("beta", EMB.embed("beta"), mode="vector", k=1)[0].text == "beta"
        store.integrity_check()


def test_document_without_chunks(tmp_path: Path) -> None:
    with _open(tmp_path / "k.sqlite") as store:
        doc_id = store.add_document(DocumentRecord("empty.md", "Empty", "en", "h0"), [], [])
        assert [i for i, _ in store.iter_documents()] == [doc_id]
        assert store.stats()["chunks"] == 0 and store.search("empty", EMB.embed("empty")) == []
        store.integrity_check()


def test_vocabulary_and_unknown_terms(tmp_path: Path) -> None:
    """Names for the speech prompt; words the knowledge never uses, for the relevance gate."""
    with _open(tmp_path / "k.sqlite", create=True) as store:
        store.add_document(*_doc("hours.md", ["The hall opens at 08:30.", "Closed on Sundays."]))
        names = store.vocabulary()
        assert "Title of hours.md" in names and "Part 0" in names and "Part 1" in names
        assert len(names) == len(set(names))
        assert [len(n) for n in names] == sorted(len(n) for n in names)
        assert store.vocabulary(limit=1) == names[:1]
        assert store.unknown_terms(["hall", "sundays", "library"]) == ["library"]
