"""Tamper corpus: hundreds of mutated or hostile packs; none accepted, state byte-identical.

Every mutation is tried through the real install path (private copy → verify → unpack →
build → check). After each refusal the ACTIVE pointer, the trust state and the active
database must be byte-identical to before, and the error must be a typed PackError.
"""

from __future__ import annotations

import hashlib
import random
import struct
import time
from pathlib import Path

import msgpack
import numpy as np
import pytest
from fakes import FakeEmbedder

from runtime.errors import KioskError, PackError
from runtime.packs.format import PACK_MAGIC, PackFile, PackWriter, manifest_from_bytes
from runtime.packs.install import PackInstaller, read_pointer
from runtime.packs.sample import PackKit
from runtime.packs.signing import generate_key

DAY = 86400


def _state(packs: Path) -> tuple:
    ptr = read_pointer(packs)
    db = hashlib.sha256((packs / ptr["current"]["db"]).read_bytes()).hexdigest()
    return (packs / "ACTIVE").read_bytes(), (packs / "trust.json").read_bytes(), db


def _regions(data: bytes) -> list[tuple[str, int, int]]:
    """(name, start, end) of every region of a pack file: header, manifest, signature, sections."""
    (mlen,) = struct.unpack(">I", data[8:12])
    out = [
        ("magic+length", 0, 12),
        ("manifest", 12, 12 + mlen),
        ("signature", 12 + mlen, 12 + mlen + 97),
    ]
    m = manifest_from_bytes(data[12 : 12 + mlen])
    pos = 12 + mlen + 97
    for s in m.sections:
        out.append((s.name, pos, pos + s.length))
        pos += s.length
    return out


def _signed_raw(
    kit: PackKit, out: Path, sections: list[tuple[str, bytes]], counts: dict, **over
) -> Path:
    """A pack signed by the trusted key whose sections are arbitrary bytes (hostile publisher or stolen key)."""  # noqa: E501
    w = PackWriter(out.parent)
    for name, data in sections:
        w.add(name, data)
    now = int(time.time())
    manifest = {
        "format": 1,
        "pack_id": "demo",
        "version": 50,
        "created": now,
        "expires": now + DAY,
        "title": "",
        "compat": {"locales": ["en"], "min_runtime": "0.1.0"},
        "embedding": kit.binding.model_dump(),
        "counts": {
            "documents": 1,
            "chunks": 1,
            "faq_entries": 0,
            "faq_questions": 0,
            "smoke": 1,
            **counts,
        },
    }
    manifest.update(over)
    w.finish(out, manifest, kit.sign)
    return out


def _signed_manifest_bytes(kit: PackKit, out: Path, body: bytes) -> Path:
    pub, sig = kit.sign(PACK_MAGIC + body)
    out.write_bytes(PACK_MAGIC + struct.pack(">I", len(body)) + body + b"\x01" + pub + sig)
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tamper")
    kit = PackKit(tmp / "pub", FakeEmbedder(32))
    inst = PackInstaller(tmp / "packs", kit.settings(embedder=FakeEmbedder(32)))
    inst.install_file(kit.make(5, n_docs=6, chunks_per_doc=3))
    return tmp, kit, inst


def _corpus(tmp: Path, kit: PackKit) -> list[tuple[str, Path]]:
    rng = random.Random(1234)
    good = kit.make(6, n_docs=6, chunks_per_doc=3, tag="new", name="good-v6.kpack")
    data = good.read_bytes()
    cases: list[tuple[str, bytes | Path]] = []
    regions = _regions(data)
    # bit flips: spread over every region (at least 4 per region), then random positions
    for name, start, end in regions:
        for _ in range(6):
            pos = rng.randrange(start, end)
            b = bytearray(data)
            b[pos] ^= 1 << rng.randrange(8)
            cases.append((f"bitflip {name}@{pos}", bytes(b)))
    while len(cases) < 140:
        pos = rng.randrange(len(data))
        b = bytearray(data)
        b[pos] ^= 1 << rng.randrange(8)
        cases.append((f"bitflip @{pos}", bytes(b)))
    for n in sorted(rng.sample(range(1, len(data)), 20)) + [0]:
        cases.append((f"truncated to {n}", data[:n]))
    for extra in (b"\0", b"\0" * 97, data[-97:], data, b"KPACK", rng.randbytes(4096)):
        cases.append((f"appended {len(extra)} bytes", data + extra))
    # signature block games
    (mlen,) = struct.unpack(">I", data[8:12])
    at = 12 + mlen
    sig = data[at + 1 : at + 97]
    cases.append(("unsigned", data[:at] + b"\x00" + data[at + 97 :]))
    cases.append(("duplicated signature", data[:at] + b"\x02" + sig + sig + data[at + 97 :]))
    cases.append(
        ("duplicated signature, count 1", data[:at] + b"\x01" + sig + sig + data[at + 97 :])
    )
    cases.append(("signature zeroed", data[: at + 33] + b"\0" * 64 + data[at + 97 :]))
    cases.append(
        ("public key swapped", data[: at + 1] + bytes(kit.key.verify_key)[::-1] + data[at + 33 :])
    )
    # other keys, versions, clocks, bindings
    stranger = PackKit(tmp / "stranger", FakeEmbedder(32), key=generate_key())
    cases.append(("wrong key", stranger.make(6)))
    now = int(time.time())
    cases.append(("older version", kit.make(3, tag="older", name="v3-other.kpack")))
    cases.append(("equal version, other content", kit.make(5, tag="same", name="v5-same.kpack")))
    cases.append(
        ("expired", kit.make(7, created=now - 30 * DAY, expires=now - DAY, name="expired.kpack"))
    )
    cases.append(
        (
            "future-dated",
            kit.make(7, created=now + 2 * DAY, expires=now + 9 * DAY, name="future.kpack"),
        )
    )
    other_model = PackKit(tmp / "other", FakeEmbedder(32, model_id="other-embedder"), key=kit.key)
    cases.append(("embeddings from another model", other_model.make(7)))
    other_dim = PackKit(tmp / "dim", FakeEmbedder(48), key=kit.key)
    cases.append(("embeddings of another dim", other_dim.make(7)))
    forged_binding = PackKit(tmp / "forged", FakeEmbedder(32, ngrams=(2, 3)), key=kit.key)
    forged_binding.binding = (
        kit.binding
    )  # claims our model, vectors made by another: smoke must catch it
    cases.append(
        ("vectors of another model under our binding", forged_binding.make(7, name="forged.kpack"))
    )
    cases.append(("locale zh only", kit.make(7, locales=["zh"], name="zh.kpack")))
    cases.append(("needs a newer runtime", kit.make(7, min_runtime="99.0.0", name="rt.kpack")))
    # sections from another pack: same names, other content
    donor = kit.make(6, n_docs=6, chunks_per_doc=3, tag="donor", name="donor-v6.kpack").read_bytes()
    donor_regions = {n: (s, e) for n, s, e in _regions(donor)}
    for name, start, end in regions[3:]:
        ds, de = donor_regions[name]
        cases.append(
            (f"section {name} from another pack", data[:start] + donor[ds:de] + data[end:])
        )
    # hostile content signed by the trusted key (msgpack bombs, bad paths)
    vec = np.ones((1, 32), np.float32) / np.sqrt(32)
    from runtime.packs.format import encode_smoke, encode_vectors

    smoke = encode_smoke([{"question": "q", "expected_source": "a.md", "language": "en"}], vec)
    doc_ok = msgpack.packb([["a.md", "A", "en", "h", "", {}]])
    chunk_ok = msgpack.packb([[0, "text", ["A"], 0, 4, 0, "en", None]])
    emb_ok = encode_vectors(vec)
    bombs = {
        "documents: array declared 4G long": b"\xdd\xff\xff\xff\xff",
        "documents: 100k nested arrays": b"\x91" * 100_000 + b"\xc0",
        "documents: 10 nested arrays": b"\x91" * 10 + b"\xc0",
        "documents: map declared 4G long": b"\xdf\xff\xff\xff\xff",
        "documents: string declared 4 GB": msgpack.packb([["a.md"]])[:-5] + b"\xdb\xff\xff\xff\xf0",
        "documents: bin declared 2 GB": b"\x91\x96\xc6\x7f\xff\xff\xff",
        "documents: ext type": b"\x91\xd4\x01\x00",
        "documents: path with ..": msgpack.packb([["../../etc/passwd", "A", "en", "h", "", {}]]),
        "documents: path with NUL": msgpack.packb([["a\x00.md", "A", "en", "h", "", {}]]),
        "documents: absolute path": msgpack.packb([["/etc/passwd", "A", "en", "h", "", {}]]),
        "documents: 10 kB name": msgpack.packb([["a" * 10_000 + ".md", "A", "en", "h", "", {}]]),
        "documents: wrong types": msgpack.packb([[1, 2, 3, 4, 5, 6]]),
        "documents: trailing bytes": doc_ok + b"\xc0",
    }
    for what, docs in bombs.items():
        cases.append(
            (
                what,
                _signed_raw(
                    kit,
                    tmp / f"bomb{len(cases)}.kpack",
                    [
                        ("documents", docs),
                        ("chunks.0000", chunk_ok),
                        ("embeddings.0000", emb_ok),
                        ("smoke", smoke),
                    ],
                    {},
                ),
            )
        )
    chunk_bombs = {
        "chunks: doc index out of range": msgpack.packb([[7, "t", ["A"], 0, 1, 0, "en", None]]),
        "chunks: 2000 chunks in one part": msgpack.packb(
            [[0, "t", [], 0, 1, 0, "en", None]] * 2000
        ),
        "chunks: nested section path": msgpack.packb([[0, "t", [[[["x"]]]], 0, 1, 0, "en", None]]),
        "chunks: NUL in text": msgpack.packb([[0, "t\x00", ["A"], 0, 1, 0, "en", None]]),
    }
    for what, chunks in chunk_bombs.items():
        cases.append(
            (
                what,
                _signed_raw(
                    kit,
                    tmp / f"bomb{len(cases)}.kpack",
                    [
                        ("documents", doc_ok),
                        ("chunks.0000", chunks),
                        ("embeddings.0000", emb_ok),
                        ("smoke", smoke),
                    ],
                    {},
                ),
            )
        )
    emb_bombs = {
        "embeddings: declares 1M rows": msgpack.packb([1_000_000, 32, b"\0" * 128]),
        "embeddings: bin declared 2 GB": b"\x93\x01\x20\xc6\x7f\xff\xff\xff",
        "embeddings: NaN": encode_vectors(np.full((1, 32), np.nan, np.float32)),
        "embeddings: zero vector": encode_vectors(np.zeros((1, 32), np.float32)),
    }
    for what, emb in emb_bombs.items():
        cases.append(
            (
                what,
                _signed_raw(
                    kit,
                    tmp / f"bomb{len(cases)}.kpack",
                    [
                        ("documents", doc_ok),
                        ("chunks.0000", chunk_ok),
                        ("embeddings.0000", emb),
                        ("smoke", smoke),
                    ],
                    {},
                ),
            )
        )
    cases.append(
        (
            "counts lie about chunks",
            _signed_raw(
                kit,
                tmp / "lie.kpack",
                [
                    ("documents", doc_ok),
                    ("chunks.0000", chunk_ok),
                    ("embeddings.0000", emb_ok),
                    ("smoke", smoke),
                ],
                {"chunks": 5},
            ),
        )
    )
    cases.append(
        (
            "smoke expects a source the pack lacks",
            _signed_raw(
                kit,
                tmp / "nosrc.kpack",
                [
                    ("documents", doc_ok),
                    ("chunks.0000", chunk_ok),
                    ("embeddings.0000", emb_ok),
                    (
                        "smoke",
                        encode_smoke(
                            [{"question": "text", "expected_source": "b.md", "language": "en"}], vec
                        ),
                    ),
                ],
                {},
            ),
        )
    )
    for what, body in {
        "manifest: 100k nested arrays": b"\x91" * 100_000 + b"\xc0",
        "manifest: map declared 4G long": b"\xdf\xff\xff\xff\xff",
        "manifest: not a map": msgpack.packb([1, 2, 3]),
        "manifest: extra key": msgpack.packb({**msgpack.unpackb(data[12 : 12 + mlen]), "x": 1}),
    }.items():
        cases.append((what, _signed_manifest_bytes(kit, tmp / f"m{len(cases)}.kpack", body)))
    out = []
    for i, (what, payload) in enumerate(cases):
        if isinstance(payload, bytes):
            p = tmp / "corpus" / f"{i:03d}.kpack"
            p.parent.mkdir(exist_ok=True)
            p.write_bytes(payload)
            payload = p
        out.append((what, payload))
    return out


def test_tamper_corpus_none_accepted_state_unchanged(world):
    tmp, kit, inst = world
    corpus = _corpus(tmp, kit)
    assert len(corpus) >= 200
    packs = inst.dir
    before = _state(packs)
    accepted, errors = [], {}
    for what, path in corpus:
        try:
            inst.install_file(path)
            accepted.append(what)
        except PackError as exc:
            errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
        except KioskError as exc:  # typed, but not a pack error: still a failure of this test
            pytest.fail(f"{what}: {type(exc).__name__} is not a PackError: {exc}")
        assert _state(packs) == before, f"state changed after: {what}"
        assert list((packs / "staging").iterdir()) in ([], [packs / "staging" / "downloads"])
    print(
        f"\n{len(corpus)} tampered packs tried, {len(accepted)} accepted; refusals by type: {errors}"  # noqa: E501
    )
    assert accepted == []
    # refusals come from every layer, not one catch-all
    for kind in (
        "PackSignatureError",
        "PackIntegrityError",
        "PackFormatError",
        "PackVersionError",
        "PackExpiredError",
        "PackCompatibilityError",
        "PackInstallError",
    ):
        assert errors.get(kind, 0) > 0, (kind, errors)
    # and the untouched pack still installs afterwards
    assert inst.install_file(tmp / "pub" / "good-v6.kpack").version == 6


def test_bit_flips_never_parse_past_the_signature(world):
    """A flipped manifest or signature byte is a signature error, never a parse of unsigned bytes."""  # noqa: E501
    tmp, kit, inst = world
    data = (
        (tmp / "pub" / "good-v6.kpack").read_bytes()
        if (tmp / "pub" / "good-v6.kpack").exists()
        else kit.make(6, tag="new", name="good-v6.kpack").read_bytes()
    )
    (mlen,) = struct.unpack(">I", data[8:12])
    from runtime.errors import PackSignatureError

    for pos in range(12, 12 + mlen + 97, max(1, (mlen + 97) // 40)):
        b = bytearray(data)
        b[pos] ^= 0x10
        p = tmp / "flip.kpack"
        p.write_bytes(bytes(b))
        with pytest.raises(PackSignatureError):
            with PackFile(p) as pf:
                from runtime.packs.signing import verify_envelope

                verify_envelope(pf.envelope, {bytes(kit.key.verify_key)}, what="flip")
