"""The parse worker: a hanging, crashing or memory-hungry parser costs one file, not the run.

This module imports nothing heavy, because the worker process imports it by
name ("test_ingest_worker:slow_parse") to run the deliberately bad parsers below.
"""

from __future__ import annotations

import os
import time

import pytest

from runtime.errors import DocumentLimitError, DocumentParseError
from runtime.knowledge.parsers import ParseLimits, parse_bytes
from runtime.knowledge.parsers.worker import ParseWorker, WorkerLimits

GUIDE = b"# Branch Guide\n\nThe branch opens at 09:00."


# Parse functions the worker process imports by name in the tests below.
def slow_parse(data: bytes, name: str, limits: ParseLimits):
    if name.endswith("hang.md"):
        time.sleep(60)
    return parse_bytes(data, name, limits)


def crashing_parse(data: bytes, name: str, limits: ParseLimits):
    if name.endswith("crash.md"):
        os._exit(3)
    return parse_bytes(data, name, limits)


def greedy_parse(data: bytes, name: str, limits: ParseLimits):
    if name.endswith("greedy.md"):
        blob = bytearray(1024 * 1024 * 1024)  # 1 GiB, over the worker's cap
        return len(blob)
    return parse_bytes(data, name, limits)


def test_worker_parses_and_stops_a_hanging_parser():
    with ParseWorker(
        WorkerLimits(timeout_s=2.0, memory_bytes=0), parse_fn="test_ingest_worker:slow_parse"
    ) as worker:
        with pytest.raises(DocumentLimitError, match="longer than 2 s"):
            worker.parse(b"# Hang\n\nnever returns", "hang.md", ParseLimits())
        doc = worker.parse(GUIDE, "guide_en.md", ParseLimits())
        assert doc.title == "Branch Guide" and worker.restarts == 1


def test_worker_survives_a_crash_and_a_memory_blowup():
    with ParseWorker(
        WorkerLimits(timeout_s=30, memory_bytes=0), parse_fn="test_ingest_worker:crashing_parse"
    ) as worker:
        with pytest.raises(DocumentParseError, match="exit code 3"):
            worker.parse(b"# x\n\ny", "crash.md", ParseLimits())
        assert worker.parse(b"# ok\n\nfine", "ok.md", ParseLimits()).title == "ok"
    with ParseWorker(
        WorkerLimits(timeout_s=30, memory_bytes=768 * 1024 * 1024),
        parse_fn="test_ingest_worker:greedy_parse",
    ) as worker:
        with pytest.raises(DocumentLimitError, match="more memory"):
            worker.parse(b"# x\n\ny", "greedy.md", ParseLimits())
        assert worker.parse(b"# ok\n\nfine", "ok.md", ParseLimits()).title == "ok"


def test_worker_and_inline_parsing_agree_on_a_real_pdf():
    from pathlib import Path

    from runtime.knowledge.parsers.worker import InlineParser

    data = (Path(__file__).resolve().parent.parent / "data" / "ingest" / "branch.pdf").read_bytes()
    with ParseWorker(WorkerLimits(timeout_s=60)) as worker, InlineParser() as inline:
        assert worker.parse(data, "branch.pdf", ParseLimits()) == inline.parse(
            data, "branch.pdf", ParseLimits()
        )
        with pytest.raises(DocumentLimitError, match="2 pages; the limit is 1"):
            worker.parse(data, "branch.pdf", ParseLimits(max_pages=1))
