"""The held-out grounded question sets (kiosk_config/demo/eval/heldout_questions.jsonl,
fresh_questions.jsonl, fresh2_questions.jsonl, fresh3_questions.jsonl and fresh4_questions.jsonl).

Accuracy on the dev set (grounded_questions.jsonl) is what the pipeline was tuned on, so
answer accuracy is also reported on held-out sets. The first held-out set was later used while
tuning too, so a fresh one was written without looking at how the pipeline answers; once that
one had been tuned on as well, a second fresh set (fresh2) was written the same way. Fresh3 was
written the same way again once fresh2 had been tuned on. Fresh4 was written the same way once all
five earlier sets had been used while tuning, and is scored once, at the end of that round.
These checks keep them all honest: each loads with the evaluator's own loader, is big and balanced
enough to report, cites sections that really exist, states facts those sections really contain,
and shares no question text with any other set.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from itertools import pairwise
from pathlib import Path

import pytest

from runtime.answer.evaluate import EvalQuestion, expected_polarity, load_questions

DEMO = Path(__file__).resolve().parents[2] / "kiosk_config" / "demo"
EVAL = DEMO / "eval"
DEV = EVAL / "grounded_questions.jsonl"
HELDOUT = EVAL / "heldout_questions.jsonl"
FRESH = EVAL / "fresh_questions.jsonl"
FRESH2 = EVAL / "fresh2_questions.jsonl"
FRESH3 = EVAL / "fresh3_questions.jsonl"
FRESH4 = EVAL / "fresh4_questions.jsonl"
SWITCH = EVAL / "switch_questions.jsonl"
ALL_SETS = (DEV, HELDOUT, FRESH, FRESH2, FRESH3, FRESH4, SWITCH)
# file -> (id prefix, minimum size, exact size or None)
HELDOUT_SETS = {
    HELDOUT: ("h", 80, None),
    FRESH: ("f", 70, 70),
    FRESH2: ("g", 70, 70),
    FRESH3: ("k", 70, 70),
    FRESH4: ("m", 70, 70),
}
TYPES = {
    "yesno",
    "negation",
    "number",
    "fee",
    "time",
    "place",
    "documents",
    "uncovered",
    "followup",
}
# Answers to these only need a polarity word, which the docs need not contain verbatim.
POLARITY = {"yes", "no", "可以", "能", "是的"}


@pytest.fixture(scope="module", params=sorted(HELDOUT_SETS), ids=lambda p: p.stem)
def heldout_set(request) -> tuple[Path, list[EvalQuestion]]:
    return request.param, load_questions(request.param)


@pytest.fixture
def heldout(heldout_set) -> list[EvalQuestion]:
    return heldout_set[1]


def normalise(text: str) -> str:
    """Case-, width- and punctuation-insensitive form of a question, for duplicate checks."""
    return re.sub(r"[\W_]+", "", unicodedata.normalize("NFKC", text).casefold())


def section_text(source: str) -> str | None:
    """Text of the cited ``docs/<lang>/<file>.md#<heading>`` section (heading to next heading,
    bold markers dropped), or None when the file or heading does not exist."""
    rel, _, heading = source.partition("#")
    path = DEMO / rel
    if not heading or not path.is_file():
        return None
    parts = re.split(r"(?m)^(#{1,6} .*)$", path.read_text(encoding="utf-8"))
    for i in range(1, len(parts), 2):
        if parts[i].lstrip("#").strip() == heading:
            return (parts[i] + parts[i + 1]).replace("**", "")
    return None


def test_ids_are_unique_and_numbered(heldout_set):
    path, questions = heldout_set
    prefix = HELDOUT_SETS[path][0]
    ids = [q.id for q in questions]
    assert len(ids) == len(set(ids))
    assert ids == [f"{prefix}{i:03d}" for i in range(1, len(ids) + 1)]


def test_id_prefixes_differ_between_sets():
    prefixes = [prefix for prefix, _, _ in HELDOUT_SETS.values()]
    assert "q" not in prefixes and len(prefixes) == len(set(prefixes))


def test_size_language_balance_and_types(heldout_set):
    path, heldout = heldout_set
    _, minimum, exact = HELDOUT_SETS[path]
    assert len(heldout) >= minimum
    if exact is not None:
        assert len(heldout) == exact
    langs = Counter(q.lang for q in heldout)
    assert set(langs) == {"en", "zh"}
    assert langs["en"] == langs["zh"]
    assert {q.type for q in heldout} <= TYPES
    for lang in ("en", "zh"):
        mine = [q for q in heldout if q.lang == lang]
        uncovered = [q for q in mine if not q.answerable]
        assert 6 <= len(uncovered) <= 10, lang
        assert all(q.type == "uncovered" and not q.expected and q.source is None for q in uncovered)
        assert {q.type for q in mine} == TYPES, lang
        assert all(q.history for q in mine if q.type == "followup")
        assert not any(q.history for q in mine if q.type != "followup")


def test_question_language_matches_lang_field(heldout):
    for q in heldout:
        has_cjk = re.search(r"[\u4e00-\u9fff]", q.question) is not None
        assert has_cjk == (q.lang == "zh"), q.id


def test_answerable_sources_exist_and_state_the_facts(heldout):
    check_sources(heldout)


def check_sources(questions: list[EvalQuestion]) -> None:
    for q in questions:
        if not q.answerable:
            continue
        assert q.source and q.source.startswith(f"docs/{q.lang}/"), q.id
        text = section_text(q.source)
        assert text is not None, f"{q.id}: {q.source} is not a heading in the demo docs"
        assert q.expected, q.id
        low = text.lower()
        for alts in q.expected:
            if POLARITY & set(alts) and not any(a.lower() in low for a in alts):
                continue
            assert any(a.lower() in low for a in alts), f"{q.id}: none of {alts} in {q.source}"
        for bad in q.must_not:
            assert bad.lower() not in low, f"{q.id}: must_not {bad!r} is stated by the source"


def test_no_question_repeats_another_set(heldout_set):
    path, heldout = heldout_set
    others = [q for other in ALL_SETS if other != path for q in load_questions(other)]
    other_norm = {normalise(q.question): q.id for q in others}
    other_exact = {q.question for q in others}
    own = [normalise(q.question) for q in heldout]
    assert len(own) == len(set(own)), "duplicate question inside the held-out set"
    for q, n in zip(heldout, own, strict=True):
        assert q.question not in other_exact, q.id
        assert n not in other_norm, f"{q.id} repeats {other_norm.get(n)}"


def test_yes_no_questions_lead_with_the_right_polarity(heldout):
    """The evaluator counts a shown "Yes."/"No." against the polarity of the first expected
    item, so a yes/no question must lead with a yes and a negation trap with a no."""
    for q in heldout:
        if q.type == "yesno":
            assert expected_polarity(q) == "yes", q.id
        elif q.type == "negation":
            assert expected_polarity(q) == "no", q.id


def test_must_not_never_rejects_an_accepted_phrasing(heldout):
    for q in heldout:
        for bad in q.must_not:
            for alts in q.expected:
                assert not any(bad.lower() in a.lower() for a in alts), f"{q.id}: {bad!r}"


def test_followup_histories_are_well_formed(heldout):
    check_histories(heldout)


def check_histories(questions: list[EvalQuestion]) -> None:
    for q in questions:
        if not q.history:
            continue
        roles = [t.role for t in q.history]
        assert roles[0] == "user" and roles[-1] == "assistant", q.id
        assert all(a != b for a, b in pairwise(roles)), q.id
        assert all(t.content.strip() for t in q.history), q.id


def test_normalise_ignores_case_and_punctuation():
    assert normalise("Is the hall open on Sundays?") == normalise("is the HALL open on sundays")
    assert normalise("周日能来办事吗？") == normalise("周日能来办事吗?")
    assert normalise("周日能来办事吗") != normalise("周六能来办事吗")



def test_topic_switch_set_is_well_formed():
    """switch_questions.jsonl: a new question after an unrelated turn, which must be answered
    on its own (a regression guard for the follow-up rewrite, not a held-out set)."""
    questions = load_questions(SWITCH)
    assert len(questions) >= 12 and {q.lang for q in questions} == {"en", "zh"}
    check_sources(questions)
    check_histories(questions)
    for q in questions:
        assert q.type == "switch" and q.answerable and q.history, q.id
        earlier = normalise(q.history[0].content)
        assert normalise(q.question) != earlier, q.id
