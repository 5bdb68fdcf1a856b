"""Stop strings, the threaded stream and the garbage check shared by the generator backends."""

from __future__ import annotations

import threading
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runtime.inference.base import GenerationRequest
from runtime.inference.generate_text import (
    StopScanner,
    chat_messages,
    deadline_for,
    looks_like_garbage,
    threaded_stream,
)


def _run(scanner: StopScanner, pieces: list[str]) -> str:
    out = [scanner.feed(p) for p in pieces]
    out.append(scanner.flush())
    return "".join(out)


def test_stop_string_split_across_pieces_never_leaks():
    scanner = StopScanner(["\n\nQuestion:"])
    emitted = []
    for piece in ["Opens at 9.", "\n", "\nQue", "stion: more", " text"]:
        emitted.append(scanner.feed(piece))
    assert "".join(emitted) == "Opens at 9."
    assert scanner.stopped
    assert scanner.flush() == ""
    assert all("Que" not in e and "\n" not in e for e in emitted)


def test_held_text_is_released_when_it_is_not_a_stop():
    scanner = StopScanner(["</s>"])
    assert scanner.feed("a <") == "a "
    assert scanner.feed("b") == "<b"
    assert scanner.flush() == ""
    scanner = StopScanner(["</s>"])
    assert scanner.feed("end </") == "end "
    assert scanner.flush() == "</"


def test_earliest_of_several_stops_wins():
    assert _run(StopScanner(["B", "A"]), ["xxAyyB"]) == "xx"


@given(
    st.text(alphabet="ab\n。", max_size=40),
    st.lists(st.integers(min_value=0, max_value=40), max_size=8),
    st.sampled_from(["ab", "\n\n", "。a", "bbb"]),
)
def test_any_split_gives_the_text_up_to_the_first_stop(text, cuts, stop):
    cuts = sorted({c for c in cuts if c <= len(text)})
    bounds = [0, *cuts, len(text)]
    pieces = [text[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    expected = text[: text.find(stop)] if stop in text else text
    assert _run(StopScanner([stop]), pieces) == expected


def test_no_stops_passes_everything_through():
    assert _run(StopScanner([]), ["a", "b", ""]) == "ab"


def test_chat_messages_put_the_system_prompt_first():
    req = GenerationRequest(prompt="hi", system="be brief")
    assert chat_messages(req) == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
    ]
    assert chat_messages(GenerationRequest(prompt="hi")) == [{"role": "user", "content": "hi"}]


def test_deadline():
    assert deadline_for(GenerationRequest(prompt="x")) is None
    assert deadline_for(GenerationRequest(prompt="x", max_time_s=2.0), start=10.0) == 12.0


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("", None),
        ("   ", "en"),
        ("The office opens \ufffd\ufffd at nine", "en"),
        ("ok ok ok ok ok ok ok ok ok ok ok ok", "en"),
        ("的的的的的的的的的的的的的的", "zh"),
        ("营业时间营业时间营业时间营业时间营业时间营业时间", "zh"),
        ("The hall opens at nine in the morning.", "zh"),  # wrong script for a Chinese question
        ("服务大厅早上九点开门。", "en"),
        ("!!! ??? ... ;;; ,,, ---", None),
        ("go to the desk go to the desk go to the desk go to the desk", "en"),
        ("abc\x00\x01def", None),
    ],
)
def test_garbage_is_caught(text, language):
    assert looks_like_garbage(text, language=language)


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("The service hall opens at 8:30 and closes at 17:00 on weekdays [1].", "en"),
        ("服务大厅工作日 8:30 开门，17:00 关门 [1]。", "zh"),
        ("您可以在东门附近的照相亭拍摄护照照片，费用为 35 元。", "zh"),
        ("Paris.", "en"),
        ("8:30", None),
    ],
)
def test_real_answers_pass(text, language):
    assert not looks_like_garbage(text, language=language)


def test_threaded_stream_yields_in_order_and_reraises():
    def run(emit):
        for piece in ["a", "b", "c"]:
            emit(piece)

    assert list(threaded_stream(run)) == ["a", "b", "c"]

    def fails(emit):
        emit("x")
        raise RuntimeError("native crash")

    stream = threaded_stream(fails)
    assert next(stream) == "x"
    with pytest.raises(RuntimeError, match="native crash"):
        next(stream)


def test_threaded_stream_tells_the_producer_when_the_consumer_leaves():
    stopped = threading.Event()
    produced = []

    def run(emit):
        for i in range(10_000):
            if not emit(str(i)):
                stopped.set()
                return
            produced.append(i)
            time.sleep(0.001)  # a decode step; the consumer leaves long before the end

    stream = threaded_stream(run)
    assert next(stream) == "0"
    stream.close()  # joins the worker
    assert stopped.is_set()
    assert len(produced) < 10_000
