"""Fuzzing the parsers: random or bit-flipped input gives a result or an IngestError, nothing else.

Run in-process (no worker) so a failure shows the parser's own exception. Inputs
are small, so no case can hit a time or memory limit legitimately.
"""

from __future__ import annotations

import io
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime.errors import IngestError
from runtime.knowledge.parsers import ParsedDocument, ParsedFaq, ParseLimits, parse_bytes

DATA = Path(__file__).resolve().parent.parent / "data" / "ingest"
LIMITS = ParseLimits(
    max_rows=1000, max_cells=10_000, max_unzipped_bytes=4 * 1024 * 1024, max_text_chars=200_000
)


def _office_samples() -> dict[str, bytes]:
    import docx
    import openpyxl

    d = docx.Document()
    d.add_heading("Guide", 1)
    d.add_paragraph("Open at nine.")
    out = io.BytesIO()
    d.save(out)
    wb = openpyxl.Workbook()
    wb.active.append(["question", "answer"])
    wb.active.append(["When?", "At nine."])
    out2 = io.BytesIO()
    wb.save(out2)
    return {"x.docx": out.getvalue(), "x.xlsx": out2.getvalue()}


FIXTURES = {
    "x.md": "guide_en.md",
    "x.txt": "notice.txt",
    "x.html": "services.html",
    "x.csv": "faq_zh.csv",
    "x.pdf": "branch.pdf",
}
SAMPLES = {name: (DATA / src).read_bytes() for name, src in FIXTURES.items()} | _office_samples()


def check(data: bytes, name: str) -> None:
    try:
        result = parse_bytes(data, name, LIMITS)
    except IngestError as exc:
        assert name in exc.message  # every reason names the file
        return
    assert isinstance(result, (ParsedDocument, ParsedFaq))
    if isinstance(result, ParsedDocument):
        for b in result.blocks:
            assert 0 <= b.start <= b.end <= len(result.text)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(sorted(SAMPLES)), data=st.data())
def test_bit_flipped_inputs(name, data):
    raw = bytearray(SAMPLES[name])
    flips = data.draw(
        st.lists(st.tuples(st.integers(0, len(raw) - 1), st.integers(0, 255)), max_size=8)
    )
    for pos, value in flips:
        raw[pos] = value
    cut = data.draw(st.integers(min_value=0, max_value=len(raw)))
    check(bytes(raw[:cut] if data.draw(st.booleans()) else raw), name)


@settings(max_examples=100, deadline=None)
@given(name=st.sampled_from(sorted(SAMPLES)), payload=st.binary(max_size=2048))
def test_random_bytes(name, payload):
    check(payload, name)


def test_regression_control_character_in_html():
    # Found by the fuzzer: lxml raised ValueError on a control character in a text node.
    raw = bytearray(SAMPLES["x.html"])
    raw[127] = 1
    doc = parse_bytes(bytes(raw), "x.html", LIMITS)
    assert "\x01" not in doc.text and doc.title == "Counter Services"
