"""The RGB benchmark as an answer set: which rows are answerable, which must be refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runtime.answer.rgb import RGB_FILE, load_rgb
from runtime.commands.shared_data import EvaluationDataError


def _write(folder: Path, rows: list) -> Path:
    path = folder / RGB_FILE
    path.parent.mkdir(parents=True)
    path.write_text(
        "\n".join(r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in rows),
        encoding="utf-8",
    )
    return folder


def _row(i: int, query: str, answer: list, positive: list[str], negative: list[str]) -> dict:
    return {"id": i, "query": query, "answer": answer, "positive": positive, "negative": negative}


def test_even_rows_answerable_odd_rows_lose_their_answer_passages(tmp_path):
    data = _write(
        tmp_path,
        [
            _row(0, "大桥哪年通车", ["2018年"], ["大桥于2018年通车。"], ["大桥全长55公里。"]),
            _row(1, "大桥造价多少", ["1200亿"], ["大桥总造价1200亿元。"], ["大桥设计寿命120年。"]),
            _row(2, "冠军是谁", [["张三", "张 三"], "北京"], ["北京选手张三夺冠。"], []),
        ],
    )
    rgb = load_rgb(data)
    by_id = {q.id: q for q in rgb.questions}
    assert set(by_id) == {"rgb0", "rgb1", "rgb2"}
    assert by_id["rgb0"].answerable and by_id["rgb0"].expected == (("2018年",),)
    # every item required, one of its alternatives enough
    assert by_id["rgb2"].expected == (("张三", "张 三"), ("北京",))
    # the uncovered row keeps its related passage as a distractor, not its answer passage
    assert not by_id["rgb1"].answerable and by_id["rgb1"].type == "uncovered"
    assert "大桥设计寿命120年。" in rgb.passages
    assert "大桥总造价1200亿元。" not in rgb.passages
    assert "大桥于2018年通车。" in rgb.passages and not rgb.dropped


def test_an_uncovered_row_whose_answer_another_row_holds_is_dropped(tmp_path):
    data = _write(
        tmp_path,
        [
            _row(0, "首站在哪", ["南宁"], ["班列从南宁出发，终点河内。"], []),
            _row(1, "终点站是哪", ["河内"], ["终点站为河内。"], []),
            _row(2, "是否延期", ["否"], ["没有延期。"], []),
        ],
    )
    rgb = load_rgb(data)
    # row 1's answer is still in row 0's passage: it is not an uncovered question
    assert [q.id for q in rgb.questions] == ["rgb0"]
    assert rgb.dropped == {"answer still in the store": 1, "yes/no answer": 1}


def test_limit_keeps_the_first_rows_and_their_passages_only(tmp_path):
    rows = [_row(i, f"问题{i}", [f"答案{i}"], [f"答案{i}在此。"], [f"无关{i}"]) for i in range(6)]
    rgb = load_rgb(_write(tmp_path, rows), limit=2)
    assert [q.id for q in rgb.questions] == ["rgb0", "rgb1"]
    assert set(rgb.passages) == {"答案0在此。", "无关0", "无关1"}


def test_a_malformed_row_names_its_line(tmp_path):
    data = _write(tmp_path, [_row(0, "q", ["a"], ["a"], []), '{"query": "no answer"}'])
    with pytest.raises(EvaluationDataError, match="line 2"):
        load_rgb(data)


def test_a_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(EvaluationDataError, match="does not exist"):
        load_rgb(tmp_path)
