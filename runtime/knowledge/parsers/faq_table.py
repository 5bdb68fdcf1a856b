"""FAQ tables (CSV, XLSX) → FAQ entries, with columns found by their header names.

Why header names: FAQ tables come from many hands and column orders differ.
Headers are matched in English and Chinese after lower-casing and dropping
spaces, punctuation and trailing digits ("Question 2" is a question column):

- question: question(s), q, query, 问题, 问, 提问, 常见问题, 标准问题
- alternative phrasings in one cell (split on new lines, "|" or "；"):
  paraphrases, similar questions, alt questions, 相似问题, 相似问法, 其他问法
- answer: answer(s), a, reply, response, 答案, 回答, 答, 解答, 回复
- optional: category / class / type / topic / 分类 / 类别 / 类型; lang / language / 语言;
  id / faq id / 编号 / 问题编号

Paraphrases: rows with the same id, or (without an id column) with the identical
answer text, are one FAQ entry with several questions. Row and cell caps stop
huge sheets before they are read in full.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Iterator

from runtime.errors import DocumentLimitError, DocumentParseError
from runtime.knowledge.language import detect_language
from runtime.knowledge.parsers.base import FaqEntry, ParsedFaq, ParseLimits, check_zip, decode_text

_ALIASES = {
    "question": {
        "question",
        "questions",
        "q",
        "query",
        "问题",
        "问",
        "提问",
        "常见问题",
        "标准问题",
        "问句",
    },
    "paraphrases": {
        "paraphrase",
        "paraphrases",
        "similarquestion",
        "similarquestions",
        "altquestion",
        "altquestions",
        "alternativequestions",
        "相似问题",
        "相似问法",
        "其他问法",
        "扩展问题",
    },
    "answer": {"answer", "answers", "a", "reply", "response", "答案", "回答", "答", "解答", "回复"},
    "category": {
        "category",
        "categories",
        "class",
        "type",
        "topic",
        "分类",
        "类别",
        "类型",
        "类目",
    },
    "lang": {"lang", "language", "locale", "语言"},
    "id": {"id", "faqid", "qid", "编号", "问题编号"},
}
_LANG_VALUES = {
    "zh": "zh",
    "zhcn": "zh",
    "zhhans": "zh",
    "zhtw": "zh",
    "zhhant": "zh",
    "chinese": "zh",
    "中文": "zh",
    "汉语": "zh",
    "简体中文": "zh",
    "繁體中文": "zh",
    "en": "en",
    "enus": "en",
    "engb": "en",
    "english": "en",
    "英文": "en",
    "英语": "en",
}
_SPLIT_PARAPHRASES = re.compile(r"\n|\||；|;")


def _norm_header(value: object) -> str:
    text = str(value or "").strip().lower()
    text = re.sub(r"[\s_\-:：/.()（）#]+", "", text)
    return re.sub(r"\d+$", "", text)


def _columns(header: list[object]) -> dict[str, list[int]]:
    found: dict[str, list[int]] = {}
    for index, cell in enumerate(header):
        key = _norm_header(cell)
        for role, names in _ALIASES.items():
            if key in names:
                found.setdefault(role, []).append(index)
                break
    return found


def _cell(row: list[object], index: int) -> str:
    if index >= len(row) or row[index] is None:
        return ""
    value = row[index]
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).replace("\r\n", "\n").strip()


def _norm_answer(text: str) -> str:
    return " ".join(text.split())


def rows_to_faq(
    rows: Iterable[list[object]], *, name: str, fmt: str, limits: ParseLimits
) -> ParsedFaq:
    """Group data rows under the first row that names question and answer columns."""
    iterator = iter(rows)
    header: list[object] | None = None
    columns: dict[str, list[int]] = {}
    for header_row_index, row in enumerate(iterator):
        if any(str(c or "").strip() for c in row):
            header, columns = row, _columns(row)
            break
        if header_row_index > 20:
            break
    if header is None:
        raise DocumentParseError(
            f"{name}: the table is empty", hint="add a header row and FAQ rows"
        )
    if "question" not in columns or "answer" not in columns:
        shown = ", ".join(repr(str(c)) for c in header[:12] if str(c or "").strip())
        raise DocumentParseError(
            f"{name}: has no question/answer columns (header: {shown})",
            hint="name the columns question and answer (or 问题 and 答案)",
        )
    groups: dict[tuple[str, str], dict] = {}
    skipped = 0
    for number, row in enumerate(iterator, start=1):
        questions = [_cell(row, i) for i in columns["question"]]
        for i in columns.get("paraphrases", []):
            questions.extend(p.strip() for p in _SPLIT_PARAPHRASES.split(_cell(row, i)))
        questions = [" ".join(q.split()) for q in questions if q.strip()]
        answer = next((a for a in (_cell(row, i) for i in columns["answer"]) if a), "")
        if not questions or not answer:
            skipped += 1
            continue
        entry_id = _cell(row, columns["id"][0]) if "id" in columns else ""
        key = ("id", entry_id) if entry_id else ("answer", _norm_answer(answer))
        group = groups.setdefault(
            key,
            {
                "questions": [],
                "answer": answer,
                "category": "",
                "lang": "",
                "id": entry_id,
                "row": number,
            },
        )
        for q in questions:
            if q not in group["questions"]:
                group["questions"].append(q)
        if not group["category"] and "category" in columns:
            group["category"] = _cell(row, columns["category"][0])
        if not group["lang"] and "lang" in columns:
            group["lang"] = _LANG_VALUES.get(_norm_header(_cell(row, columns["lang"][0])), "")
    entries = tuple(
        FaqEntry(
            questions=tuple(g["questions"]),
            answer=g["answer"],
            language=g["lang"] or detect_language(" ".join(g["questions"]) + " " + g["answer"]),
            category=g["category"],
            entry_id=g["id"],
            row=g["row"],
        )
        for g in groups.values()
    )
    if not entries:
        raise DocumentParseError(
            f"{name}: has a header but no row with both a question and an answer",
            hint="fill in the question and answer columns",
        )
    return ParsedFaq(entries=entries, format=fmt, meta={"rows_skipped": skipped})


def _capped(
    rows: Iterator[list[object]], *, name: str, limits: ParseLimits
) -> Iterator[list[object]]:
    cells = 0
    for count, row in enumerate(rows, start=1):
        if count > limits.max_rows + 1:
            raise DocumentLimitError(
                f"{name}: has over {limits.max_rows} rows",
                hint="split the table, or raise [knowledge] max_table_rows",
            )
        cells += len(row)
        if cells > limits.max_cells:
            raise DocumentLimitError(
                f"{name}: has over {limits.max_cells} cells",
                hint="split the table, or raise [knowledge] max_table_cells",
            )
        yield row


def parse_csv(data: bytes, *, name: str, limits: ParseLimits) -> ParsedFaq:
    text = decode_text(data, name)
    first_line = text.lstrip("\ufeff").split("\n", 1)[0]
    delimiter = max(",\t;|", key=first_line.count)
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff"), newline=""), delimiter=delimiter)
    try:
        return rows_to_faq(
            _capped(reader, name=name, limits=limits), name=name, fmt="csv", limits=limits
        )
    except csv.Error as exc:
        raise DocumentParseError(
            f"{name}: is not valid CSV ({exc})", hint="re-save it as CSV (UTF-8)"
        ) from None


def parse_xlsx(data: bytes, *, name: str, limits: ParseLimits) -> ParsedFaq:
    check_zip(data, name, limits, required="xl/workbook.xml")
    import openpyxl

    try:
        workbook = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except Exception as exc:  # noqa: BLE001 - openpyxl raises many types on corrupt input
        raise DocumentParseError(
            f"{name}: is a corrupt XLSX ({type(exc).__name__}: {exc})",
            hint="open and re-save it in a spreadsheet program",
        ) from None
    entries: list[FaqEntry] = []
    skipped = 0
    reasons: list[str] = []
    try:
        for sheet in workbook.worksheets:
            rows = (list(r) for r in sheet.iter_rows(values_only=True))
            try:
                parsed = rows_to_faq(
                    _capped(rows, name=f"{name} [{sheet.title}]", limits=limits),
                    name=f"{name} [{sheet.title}]",
                    fmt="xlsx",
                    limits=limits,
                )
            except DocumentParseError as exc:
                reasons.append(exc.message)
                continue
            entries.extend(parsed.entries)
            skipped += parsed.meta["rows_skipped"]
    finally:
        workbook.close()
    if not entries:
        raise DocumentParseError(
            "; ".join(reasons) or f"{name}: has no sheets",
            hint="name the columns question and answer (or 问题 and 答案)",
        )
    return ParsedFaq(entries=tuple(entries), format="xlsx", meta={"rows_skipped": skipped})
