"""Audit log: redaction before writing, WAL + full sync, retention, export, and PII canaries end
to end."""

from __future__ import annotations

import io
import json
import logging
import sqlite3
import threading
import time

import pytest

from runtime.audit import AuditLog, RedactingFilter, TurnRecord, export_jsonl, luhn_ok, redact
from runtime.errors import AuditError

# Canaries: valid-looking personal data of every kind the audit log must never hold.
CANARIES = {
    "phone_cn": "13912345678",
    "phone_cn_spaced": "+86 139 1234 5679",
    "phone_landline": "021-62345678",
    "phone_intl": "+44 20 7946 0958",
    "id_card": "11010519491231002X",
    "id_card_digit": "440308199901011236",
    "bank_card": "6222021234567894",
    "bank_card_grouped": "4111 1111 1111 1111",
    "email": "li.wei+kiosk@example-mail.cn",
}


@pytest.mark.parametrize("kind,value", list(CANARIES.items()))
def test_each_kind_of_personal_data_is_redacted(kind, value):
    text = f"我的信息是{value}，请帮我查一下 / my details: {value}."
    out = redact(text)
    assert value not in out
    digits = "".join(c for c in value if c.isdigit())
    assert not digits or digits not in "".join(c for c in out if c.isdigit())
    placeholder = {"phone": "[PHONE]", "id": "[ID]", "bank": "[CARD]", "email": "[EMAIL]"}[
        kind.split("_")[0]
    ]
    assert placeholder in out


@pytest.mark.parametrize(
    "text",
    [
        "On Saturdays the hall is open from 09:00 to 12:30.",
        "A passport costs 120 yuan; postal delivery 15 yuan.",
        "周六9:00至12:30开放，护照申请费每本120元。",
        "Window 12, floor 3, queue number A0231, 2026-11-21.",
        "Order 1234567890123456 is not a card (fails Luhn).",
    ],
)
def test_ordinary_kiosk_text_is_left_alone(text):
    assert redact(text) == text


def test_luhn():
    assert luhn_ok("4111111111111111") and luhn_ok("6222021234567894")
    assert not luhn_ok("1234567890123456")


def test_wal_full_sync_and_redaction_before_write(tmp_path):
    db = tmp_path / "audit.sqlite"
    log = AuditLog(db)
    rec = TurnRecord(
        question=f"call me on {CANARIES['phone_cn']}",
        answer=f"we will mail {CANARIES['email']}",
        path="rag",
        sources=[{"quote": f"card {CANARIES['bank_card']}"}],
        timings_ms={"total": 12.5},
    )
    assert log.record(rec, wait=True)
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert log._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    row = conn.execute("SELECT question, answer, sources, timings, path FROM turns").fetchone()
    assert row[0] == "call me on [PHONE]" and row[1] == "we will mail [EMAIL]"
    assert "[CARD]" in row[2] and json.loads(row[3]) == {"total": 12.5} and row[4] == "rag"
    log.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    for value in CANARIES.values():
        assert value.encode() not in raw


def test_group_commit_keeps_every_turn_from_many_threads(tmp_path):
    log = AuditLog(tmp_path / "a.sqlite")

    def writer(n: int) -> None:
        for i in range(50):
            log.record(TurnRecord(question=f"q{n}-{i}", answer="a", path="cache"))

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert log.flush()
    assert log.written == 400 and log.dropped == 0
    got = {r["question"] for r in log.recent(limit=1000)}
    assert got == {f"q{n}-{i}" for n in range(8) for i in range(50)}
    log.close()


def test_full_queue_drops_and_counts_instead_of_blocking(tmp_path, caplog):
    db = tmp_path / "a.sqlite"
    log = AuditLog(db, max_pending=10)
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another writer holds the lock: the audit writer must wait
    try:
        accepted = sum(
            log.record(TurnRecord(question=str(i), answer="", path="faq")) for i in range(200)
        )
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert log.flush()
    assert accepted < 200 and log.dropped == 200 - accepted and log.written == accepted
    log.close()


def test_retention_purges_old_turns_and_recent_filters_by_path(tmp_path):
    log = AuditLog(tmp_path / "a.sqlite", retention_days=30)
    now = time.time()
    log.record(TurnRecord(question="old", answer="", path="fallback", ts=now - 40 * 86400))
    log.record(TurnRecord(question="new unanswered", answer="", path="fallback", ts=now))
    log.record(TurnRecord(question="new answered", answer="", path="rag", ts=now), wait=True)
    assert log.purge() == 1
    assert [r["question"] for r in log.recent(paths=["fallback", "refusal"])] == ["new unanswered"]
    log.close()


def test_export_jsonl_and_missing_file(tmp_path):
    db = tmp_path / "a.sqlite"
    log = AuditLog(db)
    for i in range(3):
        log.record(
            TurnRecord(question=f"q{i}", answer="a", path="faq", trace_id=f"t{i}", degraded=i == 2)
        )
    log.flush()
    log.close()
    buf = io.StringIO()
    assert export_jsonl(db, buf) == 3
    rows = [json.loads(line) for line in buf.getvalue().splitlines()]
    assert [r["trace_id"] for r in rows] == ["t0", "t1", "t2"] and rows[2]["degraded"] is True
    with pytest.raises(AuditError, match="does not exist"):
        export_jsonl(tmp_path / "nope.sqlite", io.StringIO())


def test_not_a_database_is_a_typed_error(tmp_path):
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(AuditError, match="cannot be opened"):
        AuditLog(bad)


def test_redacting_log_filter():
    rec = logging.LogRecord(
        "x", logging.INFO, __file__, 1, "visitor said %s", (CANARIES["id_card"],), None
    )
    assert RedactingFilter().filter(rec) and rec.getMessage() == "visitor said [ID]"


def test_cli_export_and_purge(tmp_path):
    from click.testing import CliRunner

    from runtime.cli import cli

    db = tmp_path / "a.sqlite"
    log = AuditLog(db)
    log.record(TurnRecord(question="old", answer="", path="faq", ts=time.time() - 100 * 86400))
    log.record(TurnRecord(question="new", answer="", path="faq"), wait=True)
    log.close()
    out = tmp_path / "out.jsonl"
    r = CliRunner().invoke(cli, ["audit", "export", "--db", str(db), "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert len(out.read_text().splitlines()) == 2
    r = CliRunner().invoke(cli, ["audit", "purge", "--db", str(db), "--older-than-days", "30"])
    assert r.exit_code == 0 and "deleted 1 turns" in r.output


def test_pii_canaries_never_reach_the_audit_log_or_the_logs(tmp_path, caplog):
    """Questions full of personal data go through every answering endpoint; afterwards neither the
    audit files (database, WAL) nor any log record of any logger contains a canary."""
    import asyncio

    import httpx
    from server_helpers import make_config, make_pipeline

    from runtime.server.service_app import build_service_app

    caplog.set_level(logging.DEBUG)
    pipeline = make_pipeline(tmp_path)
    cfg = make_config(tmp_path)
    app = build_service_app(cfg, get_pipeline=lambda: pipeline)
    questions = [f"My number is {v}, when are you open on Saturday?" for v in CANARIES.values()]
    questions.append(
        "我的身份证号是" + CANARIES["id_card"] + "，手机" + CANARIES["phone_cn"] + "，怎么办护照？"
    )

    async def main():
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 999))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8765") as c:
            for q in questions:
                assert (await c.post("/v1/kiosk/ask", json={"question": q})).status_code == 200
                assert (
                    await c.post("/v1/kiosk/ask", json={"question": q, "stream": True})
                ).status_code == 200
                r = await c.post(
                    "/v1/chat/completions", json={"messages": [{"role": "user", "content": q}]}
                )
                assert r.status_code == 200
            return (await c.get("/metrics")).text

    metrics = asyncio.run(main())
    audit = app.state.kiosk.audit
    assert audit.flush() and audit.written == 3 * len(questions)
    rows = audit.recent(limit=100)
    assert any("[PHONE]" in r["question"] for r in rows) and any(
        "[ID]" in r["question"] for r in rows
    )
    audit.close()
    files = list((tmp_path / "data" / "audit").iterdir())
    raw = b"".join(p.read_bytes() for p in files)
    logged = caplog.text + "".join(str(r.args) for r in caplog.records)
    for value in CANARIES.values():
        assert value.encode() not in raw, value
        assert value not in logged, value
        assert value not in metrics
    pipeline.close()


def test_json_log_formatter_redacts_and_carries_the_trace_id():
    from runtime.audit import JsonLogFormatter

    rec = logging.LogRecord(
        "kiosk", logging.INFO, __file__, 1, "visitor wrote %s", (CANARIES["email"],), None
    )
    rec.trace_id = "abc123"
    line = JsonLogFormatter().format(rec)
    data = json.loads(line)
    assert data["trace_id"] == "abc123" and data["level"] == "INFO" and data["logger"] == "kiosk"
    assert data["message"] == "visitor wrote [EMAIL]" and CANARIES["email"] not in line


def test_answers_are_gathered_into_one_commit_and_waiting_callers_are_not_kept(tmp_path):
    from runtime.answer.types import Answer, Source

    log = AuditLog(tmp_path / "a.sqlite", commit_interval_s=30.0)
    src = Source(1, "FAQ", "Where can I park?", "faq.csv", "", 0, "Call 13912345678 for B1.")
    answers = [
        Answer(
            text=f"Park in B1 or mail x{i}@example.com",
            language="en",
            path="faq",
            sources=[src],
            trace_id=f"t{i}",
            question=f"Where can I park? my card 4111 1111 1111 1111 ({i})",
        )
        for i in range(20)
    ]
    before = time.time()
    assert all(log.record_answer(a, channel="kiosk", client="loopback") for a in answers)
    time.sleep(0.1)
    assert log.written == 0  # still gathering: nothing committed turn by turn
    # A caller that waits is committed at once (not after the 30 s gathering window), with
    # everything queued before it, in one transaction.
    assert log.record(TurnRecord(question="q", answer="a", path="rag"), wait=True, timeout=10)
    assert log.written == 21 and log.commits == 1
    rows = {r["trace_id"]: r for r in log.recent(limit=50)}
    r = rows["t7"]
    assert r["question"] == "Where can I park? my card [CARD] (7)"
    assert r["answer"] == "Park in B1 or mail [EMAIL]"
    assert r["sources"][0]["quote"] == "Call [PHONE] for B1."
    assert r["channel"] == "kiosk" and r["client"] == "loopback" and r["path"] == "faq"
    assert before <= r["ts"] <= rows["t19"]["ts"] <= time.time()  # answer time, not write time
    log.close()
