"""ingest_paths against a real KnowledgeStore (SQLite + FTS5 + vectors) with the fake embedder."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fakes import FakeEmbedder  # noqa: E402

from runtime.errors import KnowledgeError  # noqa: E402
from runtime.knowledge.ingest import IngestLimits, ingest_paths, iter_input_files  # noqa: E402
from runtime.knowledge.parsers import parse_bytes  # noqa: E402
from runtime.knowledge.parsers.worker import ParseWorker  # noqa: E402
from runtime.knowledge.store import KnowledgeStore  # noqa: E402

DATA = Path(__file__).resolve().parent.parent / "data" / "ingest"
INLINE = IngestLimits(isolate=False)


@pytest.fixture
def embedder() -> FakeEmbedder:
    return FakeEmbedder(dim=64)


@pytest.fixture
def store(tmp_path: Path, embedder: FakeEmbedder):
    with KnowledgeStore.open(
        tmp_path / "k.sqlite", embedding_model=embedder.model_id, dim=embedder.dim
    ) as s:
        yield s


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "corpus"
    shutil.copytree(DATA, root, ignore=shutil.ignore_patterns("*.py"))
    return root


def snapshot(store: KnowledgeStore) -> tuple:
    docs = sorted((d.source_path, d.content_hash) for _, d in store.iter_documents())
    chunks = sorted((c.text, c.char_start) for _, _, c, _ in store.iter_chunks())
    faq = sorted((f.faq_id, f.questions, f.answer) for f, _ in store.iter_faq())
    return docs, chunks, faq


def test_mixed_folder_is_ingested_with_citations(store, embedder, corpus):
    report = ingest_paths(store, [corpus], embedder, limits=INLINE)
    by_name = {Path(r.path).name: r for r in report.results}
    assert {n: r.status for n, r in by_name.items()} == {
        "branch.pdf": "added",
        "faq_en.csv": "added",
        "faq_zh.csv": "added",
        "guide_en.md": "added",
        "guide_zh.md": "added",
        "notice.txt": "added",
        "services.html": "added",
    }
    assert report.ok and not report.all_failed
    assert by_name["guide_zh.md"].language == "zh" and by_name["faq_en.csv"].faq_entries == 3
    stats = store.stats()
    assert stats["documents"] == 7 and stats["faq_entries"] == 5
    assert stats["chunks"] == sum(r.chunks for r in report.results) > 5
    # Every stored chunk is an exact span of its document's re-parsed text.
    docs = {doc_id: d for doc_id, d in store.iter_documents()}
    for _, doc_id, chunk, vector in store.iter_chunks():
        parsed = parse_bytes(Path(docs[doc_id].source_path).read_bytes(), docs[doc_id].source_path)
        assert parsed.text[chunk.char_start : chunk.char_end] == chunk.text
        assert vector.shape == (embedder.dim,)
    pdf_pages = {
        c.page
        for _, doc_id, c, _ in store.iter_chunks()
        if docs[doc_id].source_path.endswith(".pdf")
    }
    assert pdf_pages == {1, 2}
    hits = store.search("replacement card fee", embedder.embed("replacement card fee"), k=3)
    assert hits and hits[0].citation.document_title in {
        "Branch Guide",
        "Branch Handbook",
        "Counter Services",
    }
    zh_hits = store.search("营业时间", embedder.embed("营业时间"), k=3, mode="keyword")
    assert zh_hits[0].citation.source_path.endswith("guide_zh.md")
    assert zh_hits[0].citation.section == "营业时间"
    faq = store.match_faq("银行卡丢了怎么办", embedder.embed("银行卡丢了怎么办"), k=1)
    assert faq[0].method == "exact" and faq[0].answer.startswith("请拨打客服热线")


def test_reingest_is_a_noop_and_a_changed_file_replaces_the_old(store, embedder, corpus):
    ingest_paths(store, [corpus], embedder, limits=INLINE)
    before = snapshot(store)
    again = ingest_paths(store, [corpus], embedder, limits=INLINE)
    assert {r.status for r in again.results} == {"unchanged"}
    assert snapshot(store) == before
    guide = corpus / "guide_en.md"
    guide.write_text(guide.read_text().replace("09:00", "08:30"), encoding="utf-8")
    changed = ingest_paths(store, [corpus], embedder, limits=INLINE)
    assert [Path(r.path).name for r in changed.added] == ["guide_en.md"]
    texts = [c.text for _, _, c, _ in store.iter_chunks()]
    assert any("08:30 and closes" in t for t in texts) and not any(
        "opens at 09:00 and" in t for t in texts
    )
    assert store.stats()["documents"] == 7


def test_bad_files_are_skipped_with_reasons_and_change_nothing(store, embedder, tmp_path):
    good = tmp_path / "good"
    good.mkdir()
    shutil.copy(DATA / "guide_en.md", good)
    ingest_paths(store, [good], embedder, limits=INLINE)
    before = snapshot(store)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "corrupt.pdf").write_bytes(b"%PDF-1.7\n1 0 obj <<\n garbage")
    (bad / "binary.md").write_bytes(bytes(range(256)) * 8)
    (bad / "latin1.txt").write_bytes("Café crème, déjà vu".encode("latin-1"))
    (bad / "empty.md").write_text("\n\n", encoding="utf-8")
    (bad / "people.csv").write_text("name,phone\nAlice,1\n", encoding="utf-8")
    (bad / "rows.jsonl").write_text("{}\n", encoding="utf-8")
    with open(bad / "huge.txt", "wb") as fh:  # sparse: 200 MB on paper, nothing on disk
        fh.truncate(200 * 1024 * 1024)
    (bad / ".hidden.md").write_text("# hidden\n\nnot to be read", encoding="utf-8")
    (bad / "link.md").symlink_to(good / "guide_en.md")
    report = ingest_paths(
        store, [bad], embedder, limits=IngestLimits(max_file_bytes=10 * 1024 * 1024, isolate=False)
    )
    reasons = {Path(r.path).name: r.reason for r in report.results}
    assert set(reasons) == {
        "corrupt.pdf",
        "binary.md",
        "latin1.txt",
        "empty.md",
        "people.csv",
        "rows.jsonl",
        "huge.txt",
        "link.md",
    }
    assert all(r.status == "skipped" for r in report.results)
    assert "corrupt PDF" in reasons["corrupt.pdf"]
    assert "binary" in reasons["binary.md"]
    assert "neither UTF-8 nor GB18030" in reasons["latin1.txt"]
    assert "empty document" in reasons["empty.md"]
    assert "no question/answer columns" in reasons["people.csv"]
    assert "not a supported format" in reasons["rows.jsonl"]
    assert "209715200 bytes; the limit is 10485760" in reasons["huge.txt"]
    assert "symbolic link" in reasons["link.md"]
    assert report.all_failed and not report.ok
    assert snapshot(store) == before


def test_walk_skips_hidden_folders_and_reports_missing_paths(tmp_path):
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "notes.md").write_text("x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.md").write_text("x")
    (tmp_path / "b.txt").write_text("x")
    found = list(iter_input_files([tmp_path, tmp_path / "missing.md"]))
    assert [(p.relative_to(tmp_path).as_posix(), bool(r)) for p, r in found] == [
        ("b.txt", False),
        ("sub/a.md", False),
        ("missing.md", True),
    ]


def test_all_failed_only_when_nothing_was_ingested(store, embedder, tmp_path):
    (tmp_path / "ok.md").write_text("# Ok\n\nSome text.", encoding="utf-8")
    (tmp_path / "bad.pdf").write_bytes(b"not a pdf")
    report = ingest_paths(store, [tmp_path], embedder, limits=INLINE)
    assert not report.all_failed and not report.ok
    nothing = ingest_paths(store, [tmp_path / "nope"], embedder, limits=INLINE)
    assert nothing.all_failed


def test_faq_category_option_and_pack_fields(store, embedder):
    ingest_paths(
        store,
        [DATA / "faq_zh.csv", DATA / "guide_en.md"],
        embedder,
        limits=INLINE,
        category="bank",
        pack_id="demo",
        pack_version=3,
    )
    faq = {f.faq_id: f for f, _ in store.iter_faq()}
    card = "faq_zh.csv#1"
    assert set(faq) == {card, "faq_zh.csv#2"}
    assert (
        faq[card].category == "卡片"
        and faq[card].pack_version == 3
        and len(faq[card].questions) == 2
    )
    assert faq[card].source == f"{DATA / 'faq_zh.csv'}#row1"
    docs = [d for _, d in store.iter_documents()]
    assert {d.category for d in docs} == {"bank"} and {d.pack_id for d in docs} == {"demo"}


def test_embedder_that_does_not_match_the_store_is_refused(store):
    with pytest.raises(KnowledgeError, match="does not match store"):
        ingest_paths(store, [DATA], FakeEmbedder(dim=32), limits=INLINE)


def test_ingest_through_the_worker_reports_timeouts_per_file(
    store, embedder, tmp_path, monkeypatch
):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a-hang.md").write_text("# Hang\n\nnever returns", encoding="utf-8")
    shutil.copy(DATA / "guide_zh.md", folder / "b.md")
    import runtime.knowledge.ingest as ingest_module

    class SlowWorker(ParseWorker):
        def __init__(self, limits):
            super().__init__(limits, parse_fn="test_ingest_worker:slow_parse")

    monkeypatch.setattr(ingest_module, "ParseWorker", SlowWorker)
    report = ingest_paths(store, [folder], embedder, limits=IngestLimits(timeout_s=2.0))
    assert [(Path(r.path).name, r.status) for r in report.results] == [
        ("a-hang.md", "skipped"),
        ("b.md", "added"),
    ]
    assert "longer than 2 s" in report.results[0].reason
