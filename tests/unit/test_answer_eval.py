"""Scoring and variant bookkeeping of `kiosk eval answers`."""

from __future__ import annotations

import json

import pytest

from runtime.answer import Answer, PipelineSettings
from runtime.answer.evaluate import (
    EvalQuestion,
    load_questions,
    sample,
    score,
    variants,
    without_check,
)
from runtime.errors import AnswerError

Q = EvalQuestion(
    id="q1",
    lang="en",
    type="negation",
    question="Is the hall open on Sundays?",
    answerable=True,
    expected=(("no", "not"), ("closed", "not open")),
    must_not=("yes, it is open",),
    source="x",
)
U = EvalQuestion(
    id="q2",
    lang="en",
    type="uncovered",
    question="Weather?",
    answerable=False,
    expected=(),
    must_not=(),
    source=None,
)


def ans(text, path="rag", **kw):
    return Answer(text=text, language="en", path=path, **kw)


def test_score_correct_contradiction_and_refusal():
    assert score(Q, ans("No, the hall is closed on Sundays.")).correct
    assert not score(
        Q, ans("The hall is closed on Sundays.")
    ).correct  # the polarity word is missing
    bad = score(Q, ans("Yes, it is open on Sundays."))
    assert not bad.correct and bad.contradiction
    refused = score(Q, ans("Please ask the staff.", path="refusal"))
    assert refused.refused and not refused.correct and not refused.contradiction
    assert score(U, ans("Please ask the staff.", path="refusal")).refused
    assert not score(U, ans("Sunny.", path="rag")).refused


def test_facts_shown_leave_out_only_the_yes_no_word():
    no_verdict = score(Q, ans("The hall is closed on Sundays."))
    assert no_verdict.facts and not no_verdict.correct  # right facts, no "No." in front
    assert score(Q, ans("No, the hall is closed on Sundays.")).facts
    assert not score(Q, ans("The hall opens at 9.")).facts  # the fact is missing
    assert not score(Q, ans("Yes, it is open on Sundays.")).facts  # a contradiction
    assert not score(Q, ans("Please ask the staff.", path="refusal")).facts
    # Without a yes/no word expected, facts shown and correct are the same thing.
    fee = EvalQuestion("q3", "en", "fee", "How much?", True, (("120 yuan",),), (), "x")
    assert score(fee, ans("It costs 120 yuan.")).facts
    assert not score(fee, ans("It costs 100 yuan.")).facts


def test_summary_breaks_results_down_by_type_and_language():
    from runtime.answer.evaluate import VariantResult

    r = VariantResult("v")
    r.scored = [
        score(Q, ans("No, the hall is closed on Sundays.")),
        score(Q, ans("The hall is closed on Sundays.")),
        score(U, ans("Please ask the staff.", path="refusal")),
    ]
    s = r.summary()
    assert s["correct"] == 1 and s["facts_shown"] == 2
    assert s["by_type"]["negation"] == {
        "questions": 2,
        "answerable": 2,
        "correct": 1,
        "facts_shown": 2,
        "refused": 0,
    }
    assert s["by_type"]["uncovered"]["refused"] == 1
    assert s["by_language"]["en"]["questions"] == 3


def test_without_check_restores_the_generated_text_only_where_the_check_replaced_it():
    replaced = ans(
        "quoted passage",
        path="extractive",
        generated="Yes, open [1].",
        notes=["generated answer failed its check: x"],
    )
    assert without_check(replaced).text == "Yes, open ." and without_check(replaced).path == "rag"
    late = ans(
        "quoted passage",
        path="extractive",
        generated="",
        notes=["first words not ready by the deadline"],
    )
    assert without_check(late) is late


def test_variants_cover_every_combination_and_none_once():
    names = [
        v[0]
        for v in variants(
            PipelineSettings(),
            prompts=["plain", "numbered"],
            passages=[1, 2],
            checks=[True],
            generators=["none", "gen"],
        )
    ]
    assert names[0] == "none (fast paths + quote)" and len(names) == 5
    assert "gen/numbered/p2/check" in names


def test_sample_spreads_over_the_set_and_the_demo_set_loads():
    qs = load_questions(__import__("runtime.answer.eval_command", fromlist=["x"]).DEFAULT_QUESTIONS)
    assert len(qs) >= 60 and {q.lang for q in qs} == {"en", "zh"}
    picked = sample(qs, 20)
    assert len(picked) == 20 and {q.lang for q in picked} == {"en", "zh"}
    assert any(q.history for q in qs)


def test_malformed_question_file_names_the_line(tmp_path):
    f = tmp_path / "q.jsonl"
    f.write_text(json.dumps({"id": "q1"}) + "\n", encoding="utf-8")
    with pytest.raises(AnswerError, match=r"q.jsonl:1"):
        load_questions(f)
