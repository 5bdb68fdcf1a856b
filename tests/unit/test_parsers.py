"""Parsers: structure, offsets, titles, languages, and the typed reasons for bad input."""

from __future__ import annotations

import codecs
import io
import zipfile
from pathlib import Path

import pytest

from runtime.errors import DocumentLimitError, DocumentParseError, UnsupportedFormatError
from runtime.knowledge.parsers import ParsedDocument, ParsedFaq, ParseLimits, parse_bytes
from runtime.knowledge.parsers.base import decode_text

DATA = Path(__file__).resolve().parent.parent / "data" / "ingest"


def parse(name: str, data: bytes | None = None, limits: ParseLimits | None = None):
    return parse_bytes(data if data is not None else (DATA / name).read_bytes(), name, limits)


def blocks(doc: ParsedDocument) -> list[tuple[str, tuple[str, ...], str]]:
    return [(b.kind, b.section_path, doc.text[b.start : b.end]) for b in doc.blocks]


def assert_offsets(doc: ParsedDocument) -> None:
    previous_end = 0
    for b in doc.blocks:
        assert 0 <= previous_end <= b.start < b.end <= len(doc.text)
        assert doc.text[b.start : b.end].strip() == doc.text[b.start : b.end]
        previous_end = b.end


def test_markdown_structure_sections_and_offsets():
    doc = parse("guide_en.md")
    assert isinstance(doc, ParsedDocument)
    assert doc.title == "Branch Guide" and doc.language == "en" and doc.format == "markdown"
    assert_offsets(doc)
    got = blocks(doc)
    assert ("heading", ("Branch Guide", "Opening hours"), "Opening hours") in got
    assert (
        "list_item",
        ("Branch Guide", "Opening hours"),
        "The self-service area is open 24 hours.",
    ) in got
    assert ("table_row", ("Branch Guide", "Fees"), "Replacement card | 10 yuan") in got
    # A "#" line inside a code fence is code, not a heading.
    code = [t for k, _, t in got if k == "code"]
    assert code and code[0].startswith("# this is code")
    assert not any(k == "heading" and "this is code" in t for k, _, t in got)
    assert ("heading", ("Branch Guide", "Fees", "Waived fees"), "Waived fees") in got
    # Inline markup is reduced to its text.
    assert "**" not in doc.text and "|---" not in doc.text


def test_chinese_markdown_is_detected_as_chinese():
    doc = parse("guide_zh.md")
    assert doc.language == "zh" and doc.title == "营业指南"
    assert ("heading", ("营业指南", "收费标准"), "收费标准") in blocks(doc)


def test_text_title_bullets_and_heading_lines():
    doc = parse("notice.txt")
    assert doc.title == "Parking Notice"
    got = blocks(doc)
    assert ("heading", ("Parking Notice", "Payment"), "Payment") in got
    assert (
        "list_item",
        ("Parking Notice", "Payment"),
        "Pay at the machine beside the lift.",
    ) in got
    assert_offsets(doc)


def test_html_strips_scripts_styles_and_navigation():
    doc = parse("services.html")
    assert doc.title == "Counter Services"
    for canary in (
        "SCRIPT-CANARY",
        "INLINE-CANARY",
        "NOSCRIPT-CANARY",
        "color: red",
        "example.invalid",
        "About",
    ):
        assert canary not in doc.text
    got = blocks(doc)
    assert ("list_item", ("Counter Services", "Documents to bring"), "Your resident ID card") in got
    assert ("table_row", ("Counter Services", "Waiting times"), "Monday | 15 minutes") in got
    assert any(
        "Most visitors wait under ten minutes." in t and "Mondays are busiest." in t
        for _, _, t in got
    )
    assert_offsets(doc)


def test_pdf_pages_outline_and_title():
    doc = parse("branch.pdf")
    assert doc.title == "Branch Handbook" and doc.meta["pages"] == 2
    by_text = {doc.text[b.start : b.end]: b for b in doc.blocks}
    lost = next(b for t, b in by_text.items() if "Lost cards must be reported" in t)
    assert lost.page == 2 and lost.section_path == ("Lost cards",)
    opening = next(b for t, b in by_text.items() if "opens at 9:00" in t)
    assert opening.page == 1 and opening.section_path == ("Opening hours",)
    assert_offsets(doc)


def _docx_bytes() -> bytes:
    import docx

    d = docx.Document()
    d.add_heading("Service Guide", 0)
    d.add_heading("Opening hours", 1)
    d.add_paragraph("The hall opens at 8:30.")
    d.add_paragraph("Bring your ID card", style="List Bullet")
    table = d.add_table(rows=2, cols=2)
    for (r, c), text in {(0, 0): "Day", (0, 1): "Hours", (1, 0): "Mon", (1, 1): "13:00"}.items():
        table.cell(r, c).text = text
    d.add_heading("费用", 1)
    d.add_paragraph("复印每页收费0.5元。")
    out = io.BytesIO()
    d.save(out)
    return out.getvalue()


def test_docx_headings_lists_and_tables_in_order():
    doc = parse("guide.docx", _docx_bytes())
    assert doc.title == "Service Guide"
    got = blocks(doc)
    assert got.index(
        ("paragraph", ("Service Guide", "Opening hours"), "The hall opens at 8:30.")
    ) < got.index(("table_row", ("Service Guide", "Opening hours"), "Mon | 13:00"))
    assert ("list_item", ("Service Guide", "Opening hours"), "Bring your ID card") in got
    assert ("paragraph", ("Service Guide", "费用"), "复印每页收费0.5元。") in got
    assert_offsets(doc)


def test_csv_faq_groups_paraphrases_by_identical_answer():
    faq = parse("faq_en.csv")
    assert isinstance(faq, ParsedFaq)
    assert len(faq.entries) == 3 and faq.meta["rows_skipped"] == 1
    pin = faq.entries[0]
    assert (
        pin.questions == ("How do I reset my PIN?", "I forgot my PIN") and pin.category == "cards"
    )
    assert pin.language == "en" and pin.row == 1


def test_chinese_csv_with_semicolons_groups_by_id():
    faq = parse("faq_zh.csv")
    assert [(e.entry_id, len(e.questions), e.category, e.language) for e in faq.entries] == [
        ("1", 2, "卡片", "zh"),
        ("2", 1, "时间", "zh"),
    ]


def _xlsx_bytes(rows: list[list[object]]) -> bytes:
    import openpyxl

    wb = openpyxl.Workbook()
    ws = wb.active
    for row in rows:
        ws.append(row)
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()


def test_xlsx_faq_with_chinese_headers_and_lang_column():
    data = _xlsx_bytes(
        [
            ["问题 1", "问题 2", "答案", "语言"],
            ["在哪里取号？", "取号机在哪", "取号机在一楼大厅。", "中文"],
            ["Where do I get a ticket?", None, "The ticket machines are in the lobby.", "English"],
        ]
    )
    faq = parse("faq.xlsx", data)
    assert [(e.questions, e.language) for e in faq.entries] == [
        (("在哪里取号？", "取号机在哪"), "zh"),
        (("Where do I get a ticket?",), "en"),
    ]


def test_table_without_question_answer_columns_names_its_header():
    with pytest.raises(DocumentParseError, match="no question/answer columns.*'name'"):
        parse("people.csv", b"name,phone\nAlice,123\n")
    with pytest.raises(DocumentParseError, match="no question/answer columns"):
        parse("sheet.xlsx", _xlsx_bytes([["name", "phone"], ["Alice", "123"]]))


def test_huge_sheet_stops_at_the_row_cap():
    data = _xlsx_bytes([["question", "answer"]] + [[f"q{i}", f"a{i}"] for i in range(60)])
    with pytest.raises(DocumentLimitError, match="over 50 rows"):
        parse("big.xlsx", data, ParseLimits(max_rows=50))
    with pytest.raises(DocumentLimitError, match="cells"):
        parse("big.csv", b"question,answer\n" + b"q,a\n" * 60, ParseLimits(max_cells=100))


def test_zip_bomb_is_refused_before_inflating():
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("xl/workbook.xml", b"<workbook/>")
        zf.writestr("xl/worksheets/sheet1.xml", b"\0" * (30 * 1024 * 1024))
    assert len(out.getvalue()) < 100_000
    with pytest.raises(DocumentLimitError, match="inflates to|zip bomb"):
        parse("bomb.xlsx", out.getvalue(), ParseLimits(max_unzipped_bytes=10 * 1024 * 1024))
    with pytest.raises(DocumentLimitError, match="zip bomb"):
        parse("bomb.xlsx", out.getvalue())


def test_bad_inputs_get_typed_reasons():
    with pytest.raises(UnsupportedFormatError, match="is a PDF document, not markdown"):
        parse("renamed.md", (DATA / "branch.pdf").read_bytes())
    with pytest.raises(DocumentParseError, match="binary data"):
        parse("noise.md", bytes(range(256)) * 4)
    with pytest.raises(UnsupportedFormatError, match="wrong header bytes"):
        parse("fake.pdf", b"hello, not a pdf")
    with pytest.raises(DocumentParseError, match="corrupt PDF"):
        parse("broken.pdf", b"%PDF-1.7\n1 0 obj << /Type /Catalog /Pages 2 0 R >>\n%%garbage")
    truncated = (DATA / "branch.pdf").read_bytes()[:700]
    with pytest.raises((DocumentParseError, UnsupportedFormatError)):
        parse("truncated.pdf", truncated)
    with pytest.raises(DocumentParseError, match="empty document"):
        parse("empty.md", b"  \n\n \t\n")
    with pytest.raises(DocumentParseError, match="empty"):
        parse("empty.csv", b"")
    with pytest.raises(UnsupportedFormatError, match=r"\.jsonl is not a supported format"):
        parse("rows.jsonl", b"{}\n")
    with pytest.raises(DocumentParseError, match="not a valid zip"):
        parse("broken.docx", b"PK\x03\x04 definitely not a zip")
    with pytest.raises(DocumentLimitError, match="over 100 characters"):
        parse("long.md", ("word " * 200).encode(), ParseLimits(max_text_chars=100))


def test_decoding_rule_utf8_boms_gb18030_and_refusal():
    zh = "营业时间：工作日九点至十七点。"
    assert decode_text(zh.encode("utf-8"), "a.txt") == zh
    assert decode_text(codecs.BOM_UTF8 + zh.encode("utf-8"), "a.txt") == zh
    assert decode_text(zh.encode("utf-16"), "a.txt") == zh
    assert decode_text(zh.encode("gb18030"), "a.txt") == zh
    with pytest.raises(DocumentParseError, match="neither UTF-8 nor GB18030"):
        decode_text("Café crème à la carte, déjà vu".encode("latin-1"), "fr.txt")
    doc = parse("gbk.txt", ("标题\n\n" + zh).encode("gbk"))
    assert doc.language == "zh" and zh in doc.text
