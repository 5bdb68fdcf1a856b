"""The pack file layout, the manifest schema and bounded section encode/decode.

One pack is one file (docs/packs.md has the full description)::

    0      8 B   magic  b"KPACK\\x00\\x01\\x00"
    8      4 B   manifest length M (big-endian u32, at most MAX_MANIFEST_BYTES)
    12     M B   manifest: a msgpack map (schema: :class:`Manifest`)
    12+M   1 B   signature count: exactly 1
    13+M  96 B   ed25519 public key (32 B) + signature (64 B) over magic + manifest bytes
    109+M ...    sections, in manifest order, each exactly its signed length; nothing after

The same "envelope" (magic, length, body, one signature) also carries the channel
index and rotated key lists, each with its own magic so a signature made for one
kind can never be replayed as another. Signatures cover exact bytes: msgpack is not
canonical, so nothing is ever re-encoded before verifying.

Every section is decoded with msgpack's size limits set from the signed manifest and
then checked field by field, so a lying length or a deep nest fails with
:class:`PackFormatError` before any large allocation.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import msgpack
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from runtime import bounded_msgpack
from runtime.errors import PackFormatError, PackIntegrityError, PackSignatureError

PACK_MAGIC = b"KPACK\x00\x01\x00"
INDEX_MAGIC = b"KINDX\x00\x01\x00"
KEYS_MAGIC = b"KKEYS\x00\x01\x00"
FORMAT_VERSION = 1

MAX_MANIFEST_BYTES = 256 * 1024
HEADER_FIXED = 8 + 4
SIG_BLOCK = 1 + 32 + 64
CHUNKS_PER_PART = 1024  # chunks (and their embeddings) per section: bounds install memory
MAX_TEXT = 1 << 20  # one chunk / answer / title, in bytes
MAX_ITEMS = 1_000_000  # entries in one section
MAX_DEPTH = 8

PACK_ID_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
SECTION_RE = re.compile(
    r"^(documents|faq|faq_embeddings|prompts|smoke|(chunks|embeddings)\.\d{4})$"
)
LANG_RE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{1,8})?$")
HEX64_RE = re.compile(r"^[0-9a-f]{64}$")
VERSION_RE = re.compile(r"^\d{1,4}\.\d{1,4}\.\d{1,4}$")


# --- manifest ------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Compat(_Strict):
    locales: list[str] = Field(min_length=1, max_length=16)
    min_runtime: str = Field(pattern=VERSION_RE.pattern)

    @field_validator("locales")
    @classmethod
    def _langs(cls, v: list[str]) -> list[str]:
        for lang in v:
            if not LANG_RE.match(lang):
                raise ValueError(f"bad locale {lang!r}")
        return v


class EmbeddingBinding(_Strict):
    """What the vectors in a pack were made with; must equal the kiosk's embedder exactly."""

    model_id: str = Field(min_length=1, max_length=128)
    dim: int = Field(ge=1, le=8192)
    hash: str = Field(pattern=HEX64_RE.pattern)


class SectionEntry(_Strict):
    name: str = Field(pattern=SECTION_RE.pattern)
    length: int = Field(ge=0, le=1 << 40)
    sha256: str = Field(pattern=HEX64_RE.pattern)


class Counts(_Strict):
    documents: int = Field(ge=0, le=MAX_ITEMS)
    chunks: int = Field(ge=0, le=100 * MAX_ITEMS)
    faq_entries: int = Field(ge=0, le=MAX_ITEMS)
    faq_questions: int = Field(ge=0, le=10 * MAX_ITEMS)
    smoke: int = Field(ge=1, le=1000)  # a pack that cannot check itself is not installed


class Manifest(_Strict):
    format: int = Field(ge=FORMAT_VERSION, le=FORMAT_VERSION)
    pack_id: str = Field(pattern=PACK_ID_RE.pattern)
    version: int = Field(ge=1, le=(1 << 53))
    created: int = Field(ge=0, le=(1 << 40))  # unix seconds
    expires: int = Field(ge=0, le=(1 << 40))
    title: str = Field(default="", max_length=200)
    compat: Compat
    embedding: EmbeddingBinding
    counts: Counts
    sections: list[SectionEntry] = Field(min_length=2, max_length=4096)

    @field_validator("sections")
    @classmethod
    def _sections(cls, v: list[SectionEntry]) -> list[SectionEntry]:
        names = [s.name for s in v]
        if len(set(names)) != len(names):
            raise ValueError("a section name appears twice")
        for required in ("documents", "smoke"):
            if required not in names:
                raise ValueError(f"section {required!r} is missing")
        chunk_parts = sorted(n for n in names if n.startswith("chunks."))
        emb_parts = sorted(n for n in names if n.startswith("embeddings."))
        if [p.split(".")[1] for p in chunk_parts] != [f"{i:04d}" for i in range(len(chunk_parts))]:
            raise ValueError("chunk parts must be numbered 0000, 0001, ... without gaps")
        if [p.split(".")[1] for p in emb_parts] != [p.split(".")[1] for p in chunk_parts]:
            raise ValueError("every chunk part needs exactly one embeddings part")
        if ("faq" in names) != ("faq_embeddings" in names):
            raise ValueError("faq and faq_embeddings come together")
        return v

    def section(self, name: str) -> SectionEntry | None:
        for s in self.sections:
            if s.name == name:
                return s
        return None

    @property
    def chunk_parts(self) -> int:
        return sum(1 for s in self.sections if s.name.startswith("chunks."))

    @property
    def body_length(self) -> int:
        return sum(s.length for s in self.sections)


def manifest_from_bytes(data: bytes) -> Manifest:
    """Parse signed manifest bytes (after the signature check) with msgpack limits and the schema."""  # noqa: E501
    obj = unpack_limited(data, what="manifest", max_bin=0, max_items=8192)
    try:
        return Manifest.model_validate(obj)
    except ValidationError as exc:
        raise PackFormatError(
            f"pack manifest does not match the schema: {_first_error(exc)}",
            hint="the pack was not made by `kiosk pack build` of a compatible version; rebuild it",
        ) from None


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(x) for x in err["loc"])
    return f"{loc}: {err['msg']}"


# --- bounded msgpack ---------------------------------------------------------------------


def unpack_limited(
    data: bytes,
    *,
    what: str,
    max_bin: int,
    max_items: int = MAX_ITEMS,
    max_str: int = MAX_TEXT,
    max_depth: int = MAX_DEPTH,
) -> Any:
    """A pack's msgpack decoded under every limit (runtime/bounded_msgpack.py)."""
    return bounded_msgpack.unpack_limited(
        data,
        what=what,
        max_bin=max_bin,
        max_items=max_items,
        max_str=max_str,
        max_depth=max_depth,
        error=PackFormatError,
        hint="the file is corrupt or hostile; get a fresh copy from the publisher",
    )


def check_depth(obj: Any, max_depth: int, what: str) -> None:
    """Iterative (no recursion) nesting check."""
    bounded_msgpack.check_depth(
        obj, max_depth, what, error=PackFormatError, hint="the file is corrupt or hostile"
    )


def pack_obj(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


# --- streamed msgpack: one row at a time ----------------------------------------------------

_MSGPACK_ERRORS = (
    ValueError,
    TypeError,
    UnicodeDecodeError,
    msgpack.exceptions.UnpackException,
)
ROW_BUFFER = 8 << 20  # most bytes one streamed row may take (a chunk is at most ~1 MB of text)


@contextlib.contextmanager
def _msgpack_errors(what: str) -> Iterator[None]:
    try:
        yield
    except PackFormatError:
        raise
    except _MSGPACK_ERRORS as exc:
        raise PackFormatError(
            f"{what}: invalid or over-limit msgpack ({type(exc).__name__}: {str(exc)[:120]})",
            hint="the file is corrupt or hostile; get a fresh copy from the publisher",
        ) from None


def _unpacker(
    src: BinaryIO, *, max_bin: int, max_items: int, max_str: int = MAX_TEXT, buffer: int
) -> msgpack.Unpacker:
    return msgpack.Unpacker(
        src,
        raw=False,
        strict_map_key=True,
        use_list=True,
        read_size=min(1 << 16, buffer),
        max_buffer_size=buffer,
        max_str_len=max_str,
        max_bin_len=max_bin,
        max_array_len=max_items,
        max_map_len=max_items,
        max_ext_len=0,
    )


def _end_of_data(up: msgpack.Unpacker, what: str) -> None:
    """The top-level object must be the only thing in the section."""
    try:
        up.unpack()
    except msgpack.exceptions.OutOfData:
        return
    raise PackFormatError(
        f"{what}: unexpected data after its last entry",
        hint="the file is corrupt or hostile; get a fresh copy from the publisher",
    )


def iter_rows(
    src: BinaryIO,
    *,
    what: str,
    expected: int | None = None,
    min_rows: int = 0,
    max_rows: int = MAX_ITEMS,
    max_bin: int = 0,
    max_depth: int = MAX_DEPTH,
    max_items: int = MAX_ITEMS,
) -> Iterator[Any]:
    """Stream the rows of a section that is one top-level msgpack array, one row at a time.

    The declared row count is checked (against ``expected`` or ``min_rows..max_rows``) before
    any row is parsed; each row is bounded by msgpack's limits, ROW_BUFFER and the depth
    check; anything after the array is refused. Memory is one row, not one section.
    """
    with _msgpack_errors(what):
        up = _unpacker(src, max_bin=max_bin, max_items=max_items, buffer=ROW_BUFFER + max_bin)
        n = up.read_array_header()
        if expected is not None and n != expected:
            raise PackFormatError(
                f"{what}: has {n} entries, the manifest says {expected}",
                hint="the pack is malformed or mixed from two packs",
            )
        if not min_rows <= n <= max_rows:
            raise PackFormatError(
                f"{what}: has {n} entries, expected {min_rows}..{max_rows}",
                hint="the pack is malformed",
            )
        for _ in range(n):
            row = up.unpack()
            check_depth(row, max_depth - 1, what)
            yield row
        _end_of_data(up, what)


# --- envelope (magic + body + one signature) ----------------------------------------------


@dataclass(frozen=True)
class Envelope:
    magic: bytes
    body: bytes
    public_key: bytes
    signature: bytes
    end: int  # offset just after the signature block

    @property
    def signed_message(self) -> bytes:
        return self.magic + self.body


def read_envelope(
    fh: BinaryIO, magic: bytes, *, what: str, max_body: int = MAX_MANIFEST_BYTES
) -> Envelope:
    """Read the fixed header, body and signature block from the start of ``fh`` (bounded reads)."""
    head = fh.read(HEADER_FIXED)
    if len(head) < HEADER_FIXED or head[:8] != magic:
        raise PackFormatError(
            f"{what}: not a kiosk {_kind(magic)} file (bad magic or too short)",
            hint="check that the right file was given",
        )
    (length,) = struct.unpack(">I", head[8:12])
    if length > max_body or length == 0:
        raise PackFormatError(
            f"{what}: declared header length {length} is outside 1..{max_body} bytes",
            hint="the file is corrupt or hostile",
        )
    body = fh.read(length)
    if len(body) != length:
        raise PackFormatError(
            f"{what}: truncated inside its header", hint="copy or download the file again"
        )
    count_b = fh.read(1)
    if len(count_b) != 1:
        raise PackFormatError(
            f"{what}: truncated before its signature", hint="copy or download the file again"
        )

    if count_b[0] == 0:
        raise PackSignatureError(
            f"{what}: unsigned", hint="sign it with `kiosk pack build --key` or `publish --key`"
        )
    if count_b[0] != 1:
        raise PackSignatureError(
            f"{what}: carries {count_b[0]} signatures; exactly one is allowed",
            hint="the file was altered; get a fresh copy from the publisher",
        )
    sig = fh.read(96)
    if len(sig) != 96:
        raise PackFormatError(
            f"{what}: truncated inside its signature", hint="copy or download the file again"
        )
    return Envelope(magic, body, sig[:32], sig[32:], HEADER_FIXED + length + SIG_BLOCK)


def encode_envelope(magic: bytes, body: bytes, public_key: bytes, signature: bytes) -> bytes:
    if len(body) > MAX_MANIFEST_BYTES:
        raise PackFormatError(
            f"{_kind(magic)} header is {len(body)} bytes, over {MAX_MANIFEST_BYTES}",
            hint="split the content into fewer, larger sections",
        )
    return magic + struct.pack(">I", len(body)) + body + b"\x01" + public_key + signature


def _kind(magic: bytes) -> str:
    return {PACK_MAGIC: "pack", INDEX_MAGIC: "channel index", KEYS_MAGIC: "key list"}.get(
        magic, "signed"
    )


# --- section records -------------------------------------------------------------------------


def safe_relpath(value: Any, what: str) -> str:
    """A path stored inside a pack: relative, no '..', no NUL/control chars, bounded length."""
    if not isinstance(value, str) or not value or len(value.encode()) > 512:
        raise PackFormatError(
            f"{what}: path must be a non-empty string up to 512 bytes", hint="the pack is malformed"
        )
    if any(ord(c) < 32 for c in value) or "\\" in value or value.startswith("/"):
        raise PackFormatError(
            f"{what}: path {value[:60]!r} has control characters, a backslash or is absolute",
            hint="the pack is malformed or hostile",
        )
    if any(part in ("", ".", "..") for part in value.split("/")):
        raise PackFormatError(
            f"{what}: path {value[:60]!r} has an empty, '.' or '..' component",
            hint="the pack is malformed or hostile",
        )
    return value


def _s(v: Any, what: str, *, empty: bool = True) -> str:
    if not isinstance(v, str) or (not empty and not v):
        raise PackFormatError(
            f"{what}: expected {'a' if empty else 'a non-empty'} string",
            hint="the pack is malformed",
        )
    if "\x00" in v:
        raise PackFormatError(
            f"{what}: NUL character in text", hint="the pack is malformed or hostile"
        )
    return v


def _i(v: Any, what: str, lo: int = 0, hi: int = 1 << 40) -> int:
    if type(v) is not int or not lo <= v <= hi:
        raise PackFormatError(
            f"{what}: expected an integer in {lo}..{hi}", hint="the pack is malformed"
        )
    return v


def _lang(v: Any, what: str) -> str:
    if not isinstance(v, str) or not LANG_RE.match(v):
        raise PackFormatError(f"{what}: bad language code", hint="the pack is malformed")
    return v


def _row(v: Any, n: int, what: str) -> list:
    if not isinstance(v, list) or len(v) != n:
        raise PackFormatError(
            f"{what}: expected a list of {n} fields", hint="the pack is malformed"
        )
    return v


def _top_list(v: Any, what: str, expected: int | None) -> list:
    if not isinstance(v, list):
        raise PackFormatError(f"{what}: expected a list", hint="the pack is malformed")
    if expected is not None and len(v) != expected:
        raise PackFormatError(
            f"{what}: has {len(v)} entries, the manifest says {expected}",
            hint="the pack is malformed or mixed from two packs",
        )
    return v


def encode_documents(docs: list[dict[str, Any]]) -> bytes:
    return pack_obj(
        [
            [
                d["source_path"],
                d["title"],
                d["language"],
                d["content_hash"],
                d.get("category", ""),
                {
                    str(k): v
                    for k, v in (d.get("meta") or {}).items()
                    if isinstance(v, (str, int, float, bool))
                },
            ]
            for d in docs
        ]
    )


def decode_documents(data: bytes, expected: int) -> list[dict[str, Any]]:
    return list(iter_documents(io.BytesIO(data), expected))


def iter_documents(src: BinaryIO, expected: int) -> Iterator[dict[str, Any]]:
    """The documents section, streamed row by row and checked field by field."""
    rows = iter_rows(src, what="documents", expected=expected, max_depth=3)
    for i, r in enumerate(rows):
        w = f"documents[{i}]"
        r = _row(r, 6, w)
        meta = r[5]
        if (
            not isinstance(meta, dict)
            or len(meta) > 64
            or any(not isinstance(v, (str, int, float, bool)) for v in meta.values())
        ):
            raise PackFormatError(
                f"{w}.meta: expected a flat map of up to 64 scalars", hint="the pack is malformed"
            )
        yield {
            "source_path": safe_relpath(r[0], f"{w}.source_path"),
            "title": _s(r[1], f"{w}.title"),
            "language": _lang(r[2], f"{w}.language"),
            "content_hash": _s(r[3], f"{w}.content_hash"),
            "category": _s(r[4], f"{w}.category"),
            "meta": meta,
        }


def encode_chunks(chunks: list[tuple[int, Any]]) -> bytes:
    """``chunks``: (document index, ChunkRecord) pairs."""
    return pack_obj(
        [
            [
                di,
                c.text,
                list(c.section_path),
                c.char_start,
                c.char_end,
                c.ordinal,
                c.language,
                c.page,
            ]
            for di, c in chunks
        ]
    )


def decode_chunks(data: bytes, n_documents: int, what: str) -> list[tuple[int, Any]]:
    return list(iter_chunks(io.BytesIO(data), n_documents, what))


def iter_chunks(
    src: BinaryIO, n_documents: int, what: str, expected: int | None = None
) -> Iterator[tuple[int, Any]]:
    """One chunks part, streamed: (document index, ChunkRecord) per row, 1..CHUNKS_PER_PART rows."""
    from runtime.knowledge.records import ChunkRecord

    rows = iter_rows(
        src,
        what=what,
        expected=expected,
        min_rows=1,
        max_rows=CHUNKS_PER_PART,
        max_items=max(CHUNKS_PER_PART, 64),
        max_depth=3,
    )
    for i, r in enumerate(rows):
        w = f"{what}[{i}]"
        r = _row(r, 8, w)
        sp = r[2]
        if not isinstance(sp, list) or len(sp) > 32:
            raise PackFormatError(
                f"{w}.section_path: expected a list of up to 32 strings",
                hint="the pack is malformed",
            )
        page = r[7]
        yield (
            _i(r[0], f"{w}.document", 0, n_documents - 1),
            ChunkRecord(
                text=_s(r[1], f"{w}.text", empty=False),
                section_path=tuple(_s(x, f"{w}.section_path") for x in sp),
                char_start=_i(r[3], f"{w}.char_start"),
                char_end=_i(r[4], f"{w}.char_end"),
                ordinal=_i(r[5], f"{w}.ordinal"),
                language=_lang(r[6], f"{w}.language"),
                page=None if page is None else _i(page, f"{w}.page", 1, 1 << 20),
            ),
        )


def encode_vectors(vectors: np.ndarray) -> bytes:
    v = np.ascontiguousarray(vectors, dtype="<f4")
    return pack_obj([int(v.shape[0]), int(v.shape[1]), v.tobytes()])


def decode_vectors(data: bytes | BinaryIO, rows: int | None, dim: int, what: str) -> np.ndarray:
    """An embeddings section: [rows, dim, float32 bytes]. ``data`` may be a section reader.

    ``rows=None`` (a chunks part read before its chunks): any count in 1..CHUNKS_PER_PART.
    """
    src = io.BytesIO(data) if isinstance(data, bytes) else data
    cap = CHUNKS_PER_PART if rows is None else rows
    with _msgpack_errors(what):
        up = _unpacker(src, max_bin=cap * dim * 4, max_items=3, buffer=cap * dim * 4 + 64)
        if up.read_array_header() != 3:
            raise PackFormatError(
                f"{what}: expected a list of 3 fields", hint="the pack is malformed"
            )
        obj = [up.unpack(), up.unpack(), up.unpack()]
        _end_of_data(up, what)
    n = obj[0]
    if (
        type(n) is not int
        or not (n == rows if rows is not None else 1 <= n <= CHUNKS_PER_PART)
        or obj[1] != dim
        or not isinstance(obj[2], bytes)
        or len(obj[2]) != n * dim * 4
    ):
        raise PackFormatError(
            f"{what}: holds {obj[0]}x{obj[1]} vectors, expected {cap if rows is not None else f'1..{cap}'}x{dim}",  # noqa: E501
            hint="embeddings from another pack or model; the pack is refused",
        )
    rows = n
    arr = np.frombuffer(obj[2], dtype="<f4").reshape(rows, dim)
    if rows and not np.isfinite(arr).all():
        raise PackFormatError(
            f"{what}: contains NaN or infinite values", hint="the pack is malformed"
        )
    return arr


def encode_faq(entries: list[Any]) -> bytes:
    return pack_obj(
        [[e.faq_id, list(e.questions), e.answer, e.language, e.category, e.source] for e in entries]
    )


def decode_faq(data: bytes, expected: int, expected_questions: int) -> list[Any]:
    return list(iter_faq(io.BytesIO(data), expected, expected_questions))


def iter_faq(src: BinaryIO, expected: int, expected_questions: int) -> Iterator[Any]:
    """The FAQ section, streamed; the question total is checked when the last row is read."""
    from runtime.knowledge.records import FaqRecord

    rows = iter_rows(src, what="faq", expected=expected, max_depth=3)
    total = 0
    for i, r in enumerate(rows):
        w = f"faq[{i}]"
        r = _row(r, 6, w)
        qs = r[1]
        if not isinstance(qs, list) or not 1 <= len(qs) <= 64:
            raise PackFormatError(
                f"{w}.questions: expected 1..64 strings", hint="the pack is malformed"
            )
        total += len(qs)
        if total > expected_questions:
            raise PackFormatError(
                f"faq section has more than the {expected_questions} questions the manifest says",
                hint="the pack is malformed or mixed from two packs",
            )
        yield FaqRecord(
            faq_id=_s(r[0], f"{w}.faq_id", empty=False),
            questions=tuple(_s(q, f"{w}.questions", empty=False) for q in qs),
            answer=_s(r[2], f"{w}.answer", empty=False),
            language=_lang(r[3], f"{w}.language"),
            category=_s(r[4], f"{w}.category"),
            source=_s(r[5], f"{w}.source"),
        )
    if total != expected_questions:
        raise PackFormatError(
            f"faq section has {total} questions, the manifest says {expected_questions}",
            hint="the pack is malformed or mixed from two packs",
        )


def encode_smoke(items: list[dict[str, Any]], vectors: np.ndarray) -> bytes:
    v = np.ascontiguousarray(vectors, dtype="<f4")
    return pack_obj(
        [
            [it["question"], it["expected_source"], it["language"], v[i].tobytes()]
            for i, it in enumerate(items)
        ]
    )


def decode_smoke(data: bytes, expected: int, dim: int) -> list[dict[str, Any]]:
    rows = _top_list(
        unpack_limited(data, what="smoke section", max_bin=dim * 4, max_items=1000, max_depth=2),
        "smoke",
        expected,
    )
    out = []
    for i, r in enumerate(rows):
        w = f"smoke[{i}]"
        r = _row(r, 4, w)
        if not isinstance(r[3], bytes) or len(r[3]) != dim * 4:
            raise PackFormatError(
                f"{w}.vector: expected {dim} float32 values", hint="the pack is malformed"
            )
        vec = np.frombuffer(r[3], dtype="<f4")
        if not np.isfinite(vec).all():
            raise PackFormatError(f"{w}.vector: NaN or infinite", hint="the pack is malformed")
        out.append(
            {
                "question": _s(r[0], f"{w}.question", empty=False),
                "expected_source": safe_relpath(r[1], f"{w}.expected_source"),
                "language": _lang(r[2], f"{w}.language"),
                "vector": vec,
            }
        )
    return out


def decode_prompts(data: bytes) -> dict[str, str]:
    obj = unpack_limited(data, what="prompts section", max_bin=0, max_items=64, max_depth=1)
    if not isinstance(obj, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in obj.items()
    ):
        raise PackFormatError(
            "prompts section: expected a map of strings", hint="the pack is malformed"
        )
    return obj


# --- reading a pack file -----------------------------------------------------------------------


class PackFile:
    """An open pack: its envelope, and bounded access to its sections by name.

    Opening reads only the fixed header (at most MAX_MANIFEST_BYTES + 109 bytes). Sections
    are read one at a time and their sha256 is checked on every read, so memory stays at one
    section however big the pack is.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self._fh = open(self.path, "rb")  # noqa: SIM115 - closed in close()
        except OSError as exc:
            raise PackFormatError(
                f"pack {self.path}: cannot be opened ({exc.strerror})",
                hint="check the path and permissions",
            ) from None
        try:
            self.size = os.fstat(self._fh.fileno()).st_size
            self.envelope = read_envelope(self._fh, PACK_MAGIC, what=f"pack {self.path.name}")
        except BaseException:
            self._fh.close()
            raise
        self.manifest: Manifest | None = None
        self._offsets: dict[str, tuple[int, SectionEntry]] = {}

    def bind_manifest(self, manifest: Manifest) -> None:
        """Attach the (signature-checked) manifest and check the file length matches it exactly."""
        expected = self.envelope.end + manifest.body_length
        if self.size != expected:
            raise PackIntegrityError(
                f"pack {self.path.name} is {self.size} bytes; its signed manifest says {expected}",
                hint="the file was truncated or has bytes appended; copy or download it again",
            )
        self.manifest = manifest
        offset = self.envelope.end
        for s in manifest.sections:
            self._offsets[s.name] = (offset, s)
            offset += s.length

    def iter_section_hashes(self, block: int = 1 << 20) -> Iterator[tuple[str, int]]:
        """Stream every section, compare its sha256 with the manifest; yields (name, bytes read)."""
        assert self.manifest is not None
        self._fh.seek(self.envelope.end)
        for s in self.manifest.sections:
            h = hashlib.sha256()
            left = s.length
            while left:
                buf = self._fh.read(min(block, left))
                if not buf:
                    raise PackIntegrityError(
                        f"pack {self.path.name}: section {s.name} is truncated",
                        hint="copy or download the pack again",
                    )
                h.update(buf)
                left -= len(buf)
            if h.hexdigest() != s.sha256:
                raise PackIntegrityError(
                    f"pack {self.path.name}: section {s.name} does not match its signed sha256",
                    hint="the pack was altered or mixed from two packs; get a fresh copy",
                )
            yield s.name, s.length

    def open_section(self, name: str) -> SectionReader | None:
        """A streaming reader over one section (None when absent); hash checked at its end."""
        if name not in self._offsets:
            return None
        offset, s = self._offsets[name]
        return SectionReader(self._fh.fileno(), offset, s, self.path.name)

    def read_section(self, name: str) -> bytes | None:
        """The bytes of one section (None when the pack has no such section), hash re-checked."""
        if name not in self._offsets:
            return None
        offset, s = self._offsets[name]
        self._fh.seek(offset)
        data = self._fh.read(s.length)
        if len(data) != s.length or hashlib.sha256(data).hexdigest() != s.sha256:
            raise PackIntegrityError(
                f"pack {self.path.name}: section {name} changed after verification",
                hint="the staged copy was modified; install again",
            )
        return data

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> PackFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SectionReader:
    """File-like view of one section for msgpack's streaming Unpacker.

    Reads with ``os.pread`` (no shared file position, so two sections can be read side by
    side), hashes what it hands out, and raises PackIntegrityError as soon as the last byte
    has been read and the sha256 differs from the signed one. Rows handed out before that
    point come from a private staged copy that already passed verification; the re-check
    catches a copy modified since, and the caller discards what it built from them.
    """

    def __init__(self, fd: int, offset: int, entry: SectionEntry, pack_name: str) -> None:
        self._fd, self._pos, self._left = fd, offset, entry.length
        self._entry, self._pack = entry, pack_name
        self._hash = hashlib.sha256()
        self.checked = False

    def read(self, n: int = -1) -> bytes:
        n = self._left if n is None or n < 0 else min(n, self._left)
        if n == 0:
            self._finish()
            return b""
        buf = os.pread(self._fd, n, self._pos)
        if not buf:
            raise PackIntegrityError(
                f"pack {self._pack}: section {self._entry.name} is truncated",
                hint="the staged copy was modified; install again",
            )
        self._hash.update(buf)
        self._pos += len(buf)
        self._left -= len(buf)
        if self._left == 0:
            self._finish()
        return buf

    def _finish(self) -> None:
        if self.checked:
            return
        if self._hash.hexdigest() != self._entry.sha256:
            raise PackIntegrityError(
                f"pack {self._pack}: section {self._entry.name} changed after verification",
                hint="the staged copy was modified; install again",
            )
        self.checked = True


# --- writing -------------------------------------------------------------------------------------


class PackWriter:
    """Collects sections into a temporary body file, then writes header + signature + body."""

    def __init__(self, tmp_dir: Path) -> None:
        self._body_path = Path(tmp_dir) / f".pack-body-{os.getpid()}-{id(self)}"
        self._body = open(self._body_path, "wb")  # noqa: SIM115
        self.sections: list[dict[str, Any]] = []

    def add(self, name: str, data: bytes) -> None:
        if not SECTION_RE.match(name):
            raise ValueError(f"bad section name {name!r}")
        self._body.write(data)
        self.sections.append(
            {"name": name, "length": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        )

    def finish(self, out: Path, manifest: dict[str, Any], sign) -> bytes:
        """Write the pack to ``out``; ``sign(message) -> (public_key, signature)``. Returns the manifest bytes."""  # noqa: E501
        self._body.close()
        manifest = dict(manifest, sections=self.sections)
        Manifest.model_validate(manifest)  # never publish what a kiosk would refuse to parse
        body = pack_obj(manifest)
        pub, sig = sign(PACK_MAGIC + body)
        tmp = out.with_name(f".{out.name}.tmp")
        try:
            with open(tmp, "wb") as fh, open(self._body_path, "rb") as src:
                fh.write(encode_envelope(PACK_MAGIC, body, pub, sig))
                while buf := src.read(1 << 20):
                    fh.write(buf)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, out)
        finally:
            tmp.unlink(missing_ok=True)
            self._body_path.unlink(missing_ok=True)
        return body

    def abort(self) -> None:
        self._body.close()
        self._body_path.unlink(missing_ok=True)


def read_envelope_bytes(data: bytes, magic: bytes, *, what: str) -> Envelope:
    """Parse an envelope held in memory (index, key list); it must end exactly after the signature."""  # noqa: E501
    env = read_envelope(io.BytesIO(data), magic, what=what)
    if env.end != len(data):
        raise PackFormatError(
            f"{what}: {len(data) - env.end} unexpected bytes after the signature",
            hint="the file was altered; get a fresh copy from the publisher",
        )
    return env
