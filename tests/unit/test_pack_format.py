"""Pack layout, manifest schema and bounded msgpack decoding."""

from __future__ import annotations

import hashlib
import struct

import msgpack
import numpy as np
import pytest
from fakes import FakeEmbedder
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime.errors import PackError, PackFormatError, PackIntegrityError, PackSignatureError
from runtime.packs import format as F
from runtime.packs.sample import PackKit
from runtime.packs.signing import verify_envelope
from runtime.packs.trust import TrustState
from runtime.packs.verify import VerifyPolicy, verify_pack


@pytest.fixture
def kit(tmp_path):
    return PackKit(tmp_path / "pub", FakeEmbedder(32))


def _policy(kit, **kw):
    return VerifyPolicy(
        trusted_keys={bytes(kit.key.verify_key)}, max_bytes=1 << 24, binding=kit.binding, **kw
    )


def test_round_trip_sections_and_manifest(kit):
    path = kit.make(3, n_docs=5, chunks_per_doc=4, title="Hall")
    vp = verify_pack(path, _policy(kit, locales=("en",)), TrustState())
    m = vp.manifest
    assert (m.pack_id, m.version, m.title) == ("demo", 3, "Hall")
    assert (m.counts.documents, m.counts.chunks, m.counts.smoke) == (5, 20, 4)
    assert m.embedding.model_id == "fake-ngram-embedder" and m.embedding.dim == 32
    assert hashlib.sha256(vp.manifest_bytes).hexdigest() == vp.manifest_sha256
    with F.PackFile(path) as pf:
        pf.bind_manifest(m)
        docs = F.decode_documents(pf.read_section("documents"), 5)
        chunks = F.decode_chunks(pf.read_section("chunks.0000"), 5, "chunks.0000")
        vecs = F.decode_vectors(pf.read_section("embeddings.0000"), len(chunks), 32, "e")
        smoke = F.decode_smoke(pf.read_section("smoke"), 4, 32)
    assert [d["source_path"] for d in docs][:2] == [
        "docs/permit-00000.md",
        "docs/passport-00001.md",
    ]
    assert len(chunks) == 20 and chunks[0][0] == 0 and chunks[-1][0] == 4
    # vectors are the embedder's, bit for bit
    assert np.array_equal(vecs[0], FakeEmbedder(32).embed(chunks[0][1].text))
    assert smoke[0]["expected_source"] == docs[0]["source_path"]


def test_chunks_split_into_bounded_parts(kit, monkeypatch):
    monkeypatch.setattr(F, "CHUNKS_PER_PART", 7)
    import runtime.packs.build as B

    monkeypatch.setattr(B, "CHUNKS_PER_PART", 7)
    path = kit.make(1, n_docs=4, chunks_per_doc=5)  # 20 chunks → 7 + 7 + 6
    vp = verify_pack(path, _policy(kit), TrustState())
    names = [s.name for s in vp.manifest.sections]
    assert names.count("chunks.0000") == 1 and "chunks.0002" in names and "chunks.0003" not in names
    assert vp.manifest.chunk_parts == 3


def test_file_length_must_match_manifest_exactly(kit, tmp_path):
    path = kit.make(1)
    data = path.read_bytes()
    for bad, exc in (
        (data + b"\0", PackIntegrityError),
        (data[:-1], PackIntegrityError),
        (data[:50], PackFormatError),
        (b"", PackFormatError),
    ):
        p = tmp_path / "bad.kpack"
        p.write_bytes(bad)
        with pytest.raises(exc):
            verify_pack(p, _policy(kit), TrustState())


def test_signature_block_rules(kit, tmp_path):
    path = kit.make(1)
    data = path.read_bytes()
    (mlen,) = struct.unpack(">I", data[8:12])
    sig_at = 12 + mlen
    unsigned = data[:sig_at] + b"\x00" + data[sig_at + 97 :]
    doubled = data[:sig_at] + b"\x02" + data[sig_at + 1 : sig_at + 97] * 2 + data[sig_at + 97 :]
    for bad, text in ((unsigned, "unsigned"), (doubled, "2 signatures")):
        p = tmp_path / "bad.kpack"
        p.write_bytes(bad)
        with pytest.raises(PackSignatureError, match=text):
            verify_pack(p, _policy(kit), TrustState())


def test_manifest_signature_covers_magic_domain(kit):
    """A manifest signature cannot be replayed as an index: the magic is part of the message."""
    with F.PackFile(kit.make(1)) as pf:
        env = pf.envelope
    forged = F.Envelope(F.INDEX_MAGIC, env.body, env.public_key, env.signature, env.end)
    with pytest.raises(PackSignatureError, match="does not match"):
        verify_envelope(forged, {env.public_key}, what="index")


@pytest.mark.parametrize(
    "payload,what",
    [
        (b"\xdd\xff\xff\xff\xff", "array declared with 4G entries"),
        (b"\xdf\xff\xff\xff\xff", "map declared with 4G entries"),
        (b"\xdb\xff\xff\xff\xf0" + b"a" * 10, "string declared with 4 GB"),
        (b"\xc6\x7f\xff\xff\xff", "bin declared with 2 GB"),
        (b"\x91" * 200_000 + b"\xc0", "200k nested arrays"),
        (b"\x91" * 9 + b"\xc0", "nesting just past the depth limit"),
        (b"\xd4\x01\x00", "ext type"),
        (b"\x93\x01\x02", "truncated array"),
        (b"\xc0\xc0", "trailing data"),
    ],
)
def test_msgpack_bombs_fail_typed_before_allocation(payload, what):
    with pytest.raises(PackFormatError):
        F.unpack_limited(payload, what=what, max_bin=16, max_items=1000, max_str=1000)


def test_depth_limit_allows_the_schema_depth():
    assert F.unpack_limited(msgpack.packb([[["x"]]]), what="ok", max_bin=0, max_depth=3) == [
        [["x"]]
    ]
    with pytest.raises(PackFormatError, match="nested deeper"):
        F.unpack_limited(msgpack.packb([[[["x"]]]]), what="deep", max_bin=0, max_depth=3)


@pytest.mark.parametrize(
    "path",
    ["../etc/passwd", "docs/../../x", "/abs/path", "a\x00b", "a\\b", "", "a//b", "./a", "x" * 600],
)
def test_unsafe_paths_refused(path):
    with pytest.raises(PackFormatError):
        F.safe_relpath(path, "doc")


def test_safe_paths_allowed():
    assert F.safe_relpath("docs/zh/开放时间.md", "doc") == "docs/zh/开放时间.md"


def _manifest(**over):
    m = {
        "format": 1,
        "pack_id": "demo",
        "version": 1,
        "created": 1,
        "expires": 2,
        "compat": {"locales": ["en"], "min_runtime": "0.1.0"},
        "embedding": {"model_id": "m", "dim": 4, "hash": "0" * 64},
        "counts": {"documents": 0, "chunks": 0, "faq_entries": 0, "faq_questions": 0, "smoke": 1},
        "sections": [
            {"name": "documents", "length": 1, "sha256": "0" * 64},
            {"name": "smoke", "length": 1, "sha256": "0" * 64},
        ],
    }
    m.update(over)
    return msgpack.packb(m)


@pytest.mark.parametrize(
    "over,match",
    [
        ({"pack_id": "../evil"}, "pack_id"),
        ({"pack_id": "Demo"}, "pack_id"),
        ({"version": 0}, "version"),
        ({"version": "7"}, "version"),
        ({"extra": 1}, "extra"),
        ({"format": 2}, "format"),
        (
            {
                "sections": [
                    {"name": "documents", "length": 1, "sha256": "0" * 64},
                    {"name": "prompts", "length": 1, "sha256": "0" * 64},
                ]
            },
            "smoke",
        ),
        (
            {
                "sections": [
                    {"name": "documents", "length": 1, "sha256": "0" * 64},
                    {"name": "smoke", "length": 1, "sha256": "0" * 64},
                    {"name": "chunks.0001", "length": 1, "sha256": "0" * 64},
                    {"name": "embeddings.0001", "length": 1, "sha256": "0" * 64},
                ]
            },
            "gaps",
        ),
        (
            {
                "sections": [
                    {"name": "documents", "length": 1, "sha256": "0" * 64},
                    {"name": "smoke", "length": 1, "sha256": "0" * 64},
                    {"name": "chunks.0000", "length": 1, "sha256": "0" * 64},
                ]
            },
            "embeddings part",
        ),
        (
            {
                "sections": [
                    {"name": "../documents", "length": 1, "sha256": "0" * 64},
                    {"name": "smoke", "length": 1, "sha256": "0" * 64},
                ]
            },
            "name",
        ),
    ],
)
def test_manifest_schema(over, match):
    with pytest.raises(PackFormatError, match=match):
        F.manifest_from_bytes(_manifest(**over))


def test_manifest_schema_accepts_the_minimal_manifest():
    assert F.manifest_from_bytes(_manifest()).pack_id == "demo"


def test_vectors_section_must_match_declared_shape():
    data = F.encode_vectors(np.ones((3, 4), np.float32))
    assert F.decode_vectors(data, 3, 4, "e").shape == (3, 4)
    with pytest.raises(PackFormatError, match="expected 3x8"):
        F.decode_vectors(data, 3, 8, "e")
    nan = F.encode_vectors(np.full((1, 4), np.nan, np.float32))
    with pytest.raises(PackFormatError, match="NaN"):
        F.decode_vectors(nan, 1, 4, "e")


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(max_size=400))
def test_fuzz_pack_reader_only_raises_pack_errors(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("fuzz") / "f.kpack"
    path.write_bytes(F.PACK_MAGIC + data if data[:1] != b"!" else data)
    policy = VerifyPolicy(trusted_keys={b"\1" * 32}, max_bytes=1 << 20, binding=None)
    with pytest.raises(PackError):
        verify_pack(path, policy, TrustState())


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=300))
def test_fuzz_section_decoders_only_raise_pack_errors(data):
    for fn in (
        lambda d: F.decode_documents(d, 1),
        lambda d: F.decode_chunks(d, 2, "c"),
        lambda d: F.decode_faq(d, 1, 1),
        lambda d: F.decode_smoke(d, 1, 4),
        F.decode_prompts,
        F.manifest_from_bytes,
    ):
        try:
            fn(data)
        except PackError:
            pass
