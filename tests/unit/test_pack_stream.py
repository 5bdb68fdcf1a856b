"""Install memory does not grow with pack size: streamed sections, smoke questions via sqlite-vec.

The numbers behind this (RSS at 1k/10k/50k chunks) come from scripts/bench/packs.py; these
tests pin the mechanisms: rows are decoded one at a time from a hashing section reader, a
staged copy changed after verification is caught by that reader, the smoke check never
loads the whole vector matrix, and Python-side peak memory of a 4x larger install grows by
less than one embeddings part.
"""

from __future__ import annotations

import hashlib
import io
import tracemalloc

import msgpack
import numpy as np
import pytest
from fakes import FakeEmbedder

from runtime.errors import PackFormatError, PackIntegrityError
from runtime.knowledge.store import KnowledgeStore
from runtime.packs import format as F
from runtime.packs.install import PackInstaller, build_store, read_pointer
from runtime.packs.sample import PackKit
from runtime.packs.trust import TrustState
from runtime.packs.verify import verify_pack


class HashEmbedder:
    """Random unit vectors keyed by text: cheap at thousands of chunks (search is keyword-led)."""

    backend, device, model_id = "numpy", "CPU", "hash-embedder"

    def __init__(self, dim: int) -> None:
        self.dim = dim

    def embed_batch(self, texts):
        out = np.empty((len(texts), self.dim), np.float32)
        for i, t in enumerate(texts):
            seed = int.from_bytes(hashlib.blake2b(t.encode(), digest_size=8).digest(), "little")
            v = np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32)
            out[i] = v / np.linalg.norm(v)
        return out

    def embed(self, text):
        return self.embed_batch([text])[0]


@pytest.fixture
def kit(tmp_path):
    return PackKit(tmp_path / "pub", FakeEmbedder(32))


def test_iter_rows_checks_the_declared_count_before_parsing_any_row():
    bomb = b"\xdd\xff\xff\xff\xff" + b"\xc0" * 10  # an array declaring 4G entries
    with pytest.raises(PackFormatError, match="expected 0..10"):
        next(F.iter_rows(io.BytesIO(bomb), what="t", max_rows=10))
    with pytest.raises(PackFormatError, match="the manifest says 3"):
        next(F.iter_rows(io.BytesIO(msgpack.packb([1, 2])), what="t", expected=3))


def test_iter_rows_refuses_deep_rows_trailing_data_and_oversized_rows():
    deep = msgpack.packb([[[["x"]]]])
    with pytest.raises(PackFormatError, match="nested deeper"):
        list(F.iter_rows(io.BytesIO(deep), what="t", max_depth=3))
    with pytest.raises(PackFormatError, match="after its last entry"):
        list(F.iter_rows(io.BytesIO(msgpack.packb([1]) + b"\xc0"), what="t"))
    with pytest.raises(PackFormatError, match="invalid or over-limit"):
        list(F.iter_rows(io.BytesIO(msgpack.packb([1, 2])[:-1]), what="t"))  # truncated
    big = msgpack.packb(["x" * (F.ROW_BUFFER + 10)])  # a row larger than the row buffer
    with pytest.raises(PackFormatError, match="invalid or over-limit"):
        list(F.iter_rows(io.BytesIO(big), what="t"))


def test_streamed_decoders_give_what_the_whole_section_decoders_gave(kit):
    path = kit.make(1, n_docs=5, chunks_per_doc=3)
    with F.PackFile(path) as pf:
        pf.bind_manifest(F.manifest_from_bytes(pf.envelope.body))
        whole = F.decode_chunks(pf.read_section("chunks.0000"), 5, "chunks.0000")
        streamed = list(F.iter_chunks(pf.open_section("chunks.0000"), 5, "chunks.0000"))
        assert streamed == whole and len(streamed) == 15
        v = F.decode_vectors(pf.open_section("embeddings.0000"), None, 32, "e")
        assert v.shape == (15, 32)
        with pytest.raises(PackFormatError, match="over-limit|expected 14x32"):
            F.decode_vectors(pf.open_section("embeddings.0000"), 14, 32, "e")


def test_section_reader_catches_a_staged_copy_changed_after_verification(kit, tmp_path):
    """Streaming hands out rows before the section's end; its hash is still checked there."""
    path = kit.make(1, n_docs=6, chunks_per_doc=3)
    m = verify_pack(path, kit.settings().policy(TrustState()), TrustState()).manifest
    with F.PackFile(path) as pf:
        pf.bind_manifest(m)
        offset, entry = pf._offsets["chunks.0000"]
    data = bytearray(path.read_bytes())
    # Change one letter of the last chunk's text: still valid msgpack, so only the hash can tell.
    pos = data.rindex(b"payment", offset, offset + entry.length)
    data[pos] ^= 0x20
    path.write_bytes(bytes(data))
    with F.PackFile(path) as pf:
        pf.bind_manifest(m)
        rows = F.iter_chunks(pf.open_section("chunks.0000"), 6, "chunks.0000")
        with pytest.raises(PackIntegrityError, match="changed after verification"):
            list(rows)
    with F.PackFile(path) as pf:  # the installer's unpack step stops there too
        pf.bind_manifest(m)
        with pytest.raises(PackIntegrityError, match="section chunks.0000 changed"):
            build_store(pf, m, tmp_path / "new.sqlite")


def test_smoke_check_never_loads_the_vector_matrix(kit, tmp_path, monkeypatch):
    def boom(self):
        raise AssertionError("the install loaded the whole vector index into memory")

    monkeypatch.setattr(KnowledgeStore, "chunk_index", boom)
    monkeypatch.setattr(KnowledgeStore, "faq_index", boom)
    inst = PackInstaller(tmp_path / "packs", kit.settings(embedder=kit.embedder))
    r = inst.install_file(kit.make(1, n_docs=8, chunks_per_doc=3))
    assert r.smoke_passed == 4
    assert read_pointer(tmp_path / "packs")["current"]["version"] == 1


def _install_peak(tmp_path, n_docs: int, dim: int, per_doc: int = 40) -> float:
    kit = PackKit(tmp_path / f"pub{n_docs}", HashEmbedder(dim))
    path = kit.make(1, n_docs=n_docs, chunks_per_doc=per_doc)
    inst = PackInstaller(tmp_path / f"packs{n_docs}", kit.settings())
    tracemalloc.start()
    try:
        r = inst.install_file(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert r.chunks == n_docs * per_doc
    return peak


def test_install_memory_grows_less_than_one_section_for_a_4x_larger_pack(tmp_path):
    """1120 vs 4480 chunks (2 vs 5 parts, both with a full part): the old install held every
    vector at once (~3 copies, 6+ MB here); now only the document list grows (<1 KB each)."""
    dim = 128
    _install_peak(tmp_path / "warm", 4, dim)  # first use fills caches (jieba, imports)
    small = _install_peak(tmp_path, 28, dim)
    large = _install_peak(tmp_path, 112, dim)
    one_part = F.CHUNKS_PER_PART * dim * 4
    assert large - small < one_part, (small, large)


@pytest.mark.parametrize(
    "question,languages",
    [
        ("where do I park my car", ()),
        ("car park entrance", ("en",)),
        ("停车场在哪里", ()),
        ("停车场在哪里", ("en",)),  # the language filter leaves only the English entry
        ("Is there a car park?", ()),  # exact match first
    ],
)
def test_faq_match_through_sqlite_vec_equals_the_in_memory_index(tmp_path, question, languages):
    """The smoke check's no-matrix FAQ path ranks and scores like the serving (numpy) path."""
    from fakes import build_answer_store

    emb = FakeEmbedder()
    store = build_answer_store(tmp_path / "kb.sqlite", emb)
    try:
        qv = emb.embed(question)
        want = store.match_faq(question, qv, k=3, languages=languages)
        store.vector_backend = "sqlite-vec"
        got = store.match_faq(question, qv, k=3, languages=languages)
        assert [h.faq_id for h in got] == [h.faq_id for h in want]
        assert [h.method for h in got] == [h.method for h in want]
        assert [h.score for h in got] == pytest.approx([h.score for h in want], abs=1e-5)
        assert want, "the question should match an entry"
        if languages:
            assert {h.language for h in got} <= set(languages)
    finally:
        store.close()
