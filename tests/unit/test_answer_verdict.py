"""The yes/no verdict, the expected answer type, English stemming in the quote and the
vocabulary check: the pieces that decide what a quoted answer says first."""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import pytest

from runtime.answer.answer_type import answer_type, states
from runtime.answer.check import answer_polarity
from runtime.answer.evaluate import EvalQuestion, score
from runtime.answer.extractive import best_extract, contains, overlap, terms
from runtime.answer.faq import slot_conflict
from runtime.answer.types import Answer
from runtime.answer.verdict import yes_no
from runtime.answer.vocabulary import content_terms, unknown_content_terms

DEMO_FAQ = Path(__file__).resolve().parents[2] / "kiosk_config" / "demo" / "faq.csv"


@pytest.mark.parametrize(
    ("question", "sentences", "lang", "answer", "lead"),
    [
        # A day inside a range decides; a sentence about other days does not.
        (
            "Is there an English interpreter on Wednesdays?",
            [
                "English interpreter | Help Desk | Tuesday to Friday 09:00–16:00, no booking",
                "There is no English interpreter on Mondays or Saturdays;",
            ],
            "en",
            "yes",
            "Yes.",
        ),
        (
            "Is there an English interpreter on Mondays?",
            ["There is no English interpreter on Mondays or Saturdays;"],
            "en",
            "no",
            "No.",
        ),
        (
            "Does the cash machine accept Visa cards?",
            ["The cash machine (ATM) on the ground floor accepts UnionPay, Visa and Mastercard."],
            "en",
            "yes",
            "Yes.",
        ),
        (
            "周一有英语现场翻译吗？",
            ["周一和周六没有英语现场翻译，可以使用视频翻译。"],
            "zh",
            "no",
            "没有。",
        ),
        ("周六可以办护照吗？", ["驾驶证和护照业务周六同样不办理。"], "zh", "no", "不可以。"),
        (
            "停车场有充电桩吗？",
            ["地下停车场共有180个车位，8个车位配有充电桩。"],
            "zh",
            "yes",
            "有。",
        ),
    ],
)
def test_verdict_when_the_quote_decides(question, sentences, lang, answer, lead):
    v = yes_no(question, sentences, lang)
    assert v is not None
    assert (v.answer, v.lead) == (answer, lead)
    assert answer_polarity(v.lead) == answer


@pytest.mark.parametrize(
    ("question", "sentences", "lang"),
    [
        # Not a yes/no question.
        (
            "What time does the hall open on Saturdays?",
            ["On Saturdays the hall opens at 09:00."],
            "en",
        ),
        ("咨询服务台有几台轮椅可以借？", ["咨询服务台有4台轮椅可免费借用。"], "zh"),
        # "only": what the restriction covers needs knowledge the quote lacks.
        (
            "Can I pay with cash at the passport windows?",
            ["Cash is accepted only at windows 101–108 and window 312."],
            "en",
        ),
        # A condition in the question the sentence does not state (age 70, 10:00).
        ("我70岁了，停车可以免费吗？", ["持残疾人停车证的车辆可免费停车4小时。"], "zh"),
        (
            "Can I come to the counters at 10:00 on a Monday?",
            ["Counters open at 13:00 on Mondays."],
            "en",
        ),
        # The evening was asked about; the sentence gives hours without saying evening.
        (
            "Is the service hotline answered on Thursday evenings?",
            ["Service hotline | Monday to Friday 08:30–17:30"],
            "en",
        ),
        # The sentence is about another subject (misses "appointment").
        (
            "Do I need an appointment to renew my ID card?",
            ["For a renewal bring your ID card."],
            "en",
        ),
        # Sentences disagree.
        (
            "Is the car park open on Saturdays?",
            ["The car park is open on Saturdays.", "The car park is not open on Saturdays."],
            "en",
        ),
    ],
)
def test_verdict_abstains_when_the_quote_does_not_decide(question, sentences, lang):
    assert yes_no(question, sentences, lang) is None


def test_negation_counts_only_near_the_question_words():
    # "no booking needed" says nothing about whether the interpreter is there.
    v = yes_no(
        "Is there an English interpreter on Thursdays?",
        ["English interpreter | Help Desk | Tuesday to Friday 09:00–16:00, no booking needed"],
        "en",
    )
    assert v is not None and v.answer == "yes"


def test_a_negated_question_flips_the_reading():
    v = yes_no(
        "Can I register my car without an appointment?",
        ["You must register your car by appointment."],
        "en",
    )
    assert v is not None and v.answer == "no"
    shared = yes_no(
        "Can I register my car without an appointment?",
        ["You can register your car without an appointment."],
        "en",
    )
    assert shared is not None and shared.answer == "yes"


@pytest.mark.parametrize(
    ("question", "kind"),
    [
        ("Which window handles birth certificate copies?", "place"),
        ("社保卡在哪个窗口办理？", "place"),
        ("What time does the hall close on Thursdays?", "time"),
        ("咖啡厅周四营业到几点？", "time"),
        ("How much is a passport?", "money"),
        ("新车上牌一共要交多少钱？", "money"),
        ("How many days do you keep lost property?", "number"),
        ("Do I need an appointment?", None),
        # How to pay is not how much: "free of charge" does not answer a cheque question.
        ("I only have a company cheque with me. Can I pay with it?", None),
        ("能用现金交停车费吗？", None),
        ("Do I have to pay for parking?", "charge"),
        ("社保卡密码忘了，来重置要带什么？", "documents"),
        ("What documents do I need for a passport?", "documents"),
        ("What should I bring to renew my ID card?", "documents"),
        ("Can I bring my guide dog into the building?", None),  # bringing is not documents
        # How long is a duration, not a clock time ("多长时间" holds 时间) nor a count.
        ("窗口关门前多长时间就不能取号了？", "duration"),
        ("How long does a passport take?", "duration"),
        ("驾驶证丢了来补，当天要等多久能拿到？", "duration"),
    ],
)
def test_answer_type(question, kind):
    assert answer_type(question) == kind


def test_a_documents_question_quotes_the_document_list():
    passage = (
        "社会保障卡\n\n二楼201–204号窗口。办理社保卡首次申领、补换卡，以及激活和密码重置。\n\n"
        "- 所有申请人：本人居民身份证。\n- 卡片损坏：同时携带损坏的社保卡。"
    )
    ex = best_extract("社保卡密码忘了，来重置要带什么？", [passage])
    assert ex is not None and "身份证" in ex.text
    assert states("所有申请人：本人居民身份证。", "documents")
    assert not states("办理社保卡首次申领、补换卡，以及激活和密码重置。", "documents")


def test_a_duration_is_stated_by_a_length_of_time_not_a_clock_time():
    assert states("驾驶证补换现场办理，一般约30分钟即可领取。", "duration")
    assert states("Processing takes 7 working days.", "duration")
    assert not states("周四17:30以后不办理，请在17:30之前前来。", "duration")
    assert not states("您可以当天现场取号。", "duration")
    passages = [
        "周四延时服务\n\n周四17:30以后不办理驾驶证补换，请在17:30之前前来。",
        "驾驶证补换\n\n驾驶证补换现场办理，一般约30分钟即可领取。",
    ]
    ex = best_extract("驾驶证补换要等多久才能拿到？", passages)
    assert ex is not None and ex.passage_index == 1 and "30分钟" in ex.text


def test_states_an_answer_of_the_kind():
    assert states("Window 107 on the ground floor (ticket letter C).", "place")
    assert not states("This window issues certified copies.", "place")
    assert states("周四开放到20:00。", "time")
    assert states("护照收费120元。", "money")
    assert not states("护照在四楼办理。", "money")


def test_the_quote_prefers_the_sentence_stating_the_kind_of_answer():
    # Both sentences hold the same question words; only the second names a window.
    passage = (
        "Birth certificate copies\n"
        "Copies of birth certificates are often needed for school. "
        "Copies of birth certificates: window 107 on the ground floor."
    )
    ex = best_extract("Which window handles birth certificate copies?", [passage], max_sentences=1)
    assert ex is not None and "107" in ex.text


def test_english_terms_match_by_stem_as_whole_words():
    assert "thursday" in terms("What time does the hall close on Thursdays?")
    assert contains("Thursday | 08:30–20:00", "thursday")
    assert contains("The hall closes at 17:30.", "close")
    assert not contains("The hall closes at 17:30.", "hal")  # no substring matches in English
    assert overlap(terms("open on Sundays"), "Closed on Sunday; opens Monday.") == 1.0
    # Irregular past forms join their verb: "keep" finds "Items are kept for 30 days".
    assert contains("Items are kept for 30 days.", next(iter(terms("keep"))))
    assert contains("I took a queue number.", next(iter(terms("take"))))
    assert not contains("Items are kept for 30 days.", next(iter(terms("key"))))


def test_content_terms_leave_out_numbers_and_function_words():
    assert content_terms("身份证换领要多少个工作日？") == [
        t for t in content_terms("身份证换领要多少个工作日？") if t not in ("领要", "多少")
    ]
    assert "多长时间" not in content_terms("过号以后多长时间内可以重新激活？")
    assert "68" not in content_terms("I am 68 years old")
    assert "library" in content_terms("What are the opening hours of the city library?")


def test_only_nouns_count_as_unknown_chinese_topic_words():
    class Store:
        def unknown_terms(self, words):
            return list(words)  # knows nothing

    unknown = unknown_content_terms(Store(), "市图书馆周日开门吗？")
    assert "图书馆" in unknown or "市图书馆" in unknown
    assert "开门" not in unknown  # a verb: visitors and documents word actions differently


def test_unknown_content_terms_ask_the_store():
    class Store:
        def unknown_terms(self, words):
            return [w for w in words if w not in {"opening", "hours", "city"}]

    assert unknown_content_terms(Store(), "What are the opening hours of the city library?") == [
        "library"
    ]
    assert unknown_content_terms(object(), "anything") == []  # a store that cannot tell


def test_grammar_and_segmentation_pieces_are_not_unknown_topics():
    class Store:
        known = {"正门", "出租车", "出租", "priority", "ticket", "mother", "wait"}

        def unknown_terms(self, words):
            return [w for w in words if w not in self.known]

    # "she" and "doesn" are grammar; a question wrapped in them is not about something new.
    assert (
        unknown_content_terms(
            Store(), "My mother is 70. Can she get a priority ticket so she doesn't have to wait?"
        )
        == []
    )
    # 正门口 is cut into 正门 (known) + 门口: the pieces around a known word are segmentation.
    assert unknown_content_terms(Store(), "出租车能在正门口等我吗？") == []
    # A longer name with no known word inside stays unknown.
    assert unknown_content_terms(Store(), "市图书馆周日开门吗？")


def test_the_word_a_question_asks_about_must_be_known():
    from runtime.answer.vocabulary import unknown_focus

    class Store:
        known = {"hall", "service", "tax", "property", "late", "pay", "atm", "passport"}

        def unknown_terms(self, words):
            return [w for w in words if w not in self.known]

    assert unknown_focus(Store(), "Who is the director of the service hall?") == "director"
    assert unknown_focus(Store(), "What is the penalty if I pay my property tax late?") == (
        "penalty"
    )
    assert unknown_focus(Store(), "Is there an ATM in the hall?") is None  # known
    assert unknown_focus(Store(), "How much is a passport?") is None
    # Other words unknown, the focus known or not where English puts it: not this rule's call.
    assert unknown_focus(Store(), "Where can I get drinking water?") is None
    assert unknown_focus(Store(), "What is it?") is None  # a function word
    assert unknown_focus(Store(), "图书馆是什么？") is None  # English only


def test_a_yes_where_the_source_says_no_is_scored_a_contradiction():
    q = EvalQuestion(
        "x",
        "en",
        "negation",
        "Is the hall open on Sundays?",
        True,
        (("no", "not"), ("closed",)),
        (),
        None,
    )
    wrong = Answer(text="Yes. The hall is closed on Sundays.", language="en", path="extractive")
    right = Answer(text="No. The hall is closed on Sundays.", language="en", path="extractive")
    assert score(q, wrong).contradiction and not score(q, wrong).correct
    assert score(q, right).correct and not score(q, right).contradiction


def test_demo_faq_answers_lead_with_yes_or_no_only_when_every_phrasing_agrees():
    """An answer starting "需要。" fits "需要预约吗？" but says the opposite to the paraphrase
    "不预约能直接去吗？"; such entries must state the fact instead."""
    entries: dict[str, list[dict[str, str]]] = defaultdict(list)
    with DEMO_FAQ.open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            entries[row["id"]].append(row)
    bad = []
    for faq_id, rows in entries.items():
        if answer_polarity(rows[0]["answer"]) is None:
            continue
        qs = [r["question"] for r in rows]
        if any(slot_conflict(a, b) == "negation" for a in qs for b in qs if a < b):
            bad.append(faq_id)
    assert bad == []


@pytest.mark.parametrize(
    ("question", "lang", "expected"),
    [
        # The question is its last sentence; what comes before is the visitor's situation.
        ("I have a pushchair. Is there a lift at that exit?", "en", True),
        ("My mother is 70. Can she get a priority ticket?", "en", True),
        ("Is it free? Where is it?", "en", False),
        # A follow-up's carried topic in brackets (rewrite.py) does not hide the 吗.
        ("周日可以停吗？（停车）", "zh", True),
        ("Is it open on Sundays? (car park)", "en", True),
        ("几点开门？（停车场）", "zh", False),
    ],
)
def test_yes_no_question_read_in_its_last_sentence(question, lang, expected):
    from runtime.answer.check import is_yes_no_question

    assert is_yes_no_question(question, lang) is expected


@pytest.mark.parametrize(
    ("question", "context", "ask"),
    [
        (
            "I have a pushchair. Is there a lift at that exit?",
            "I have a pushchair.",
            "Is there a lift at that exit?",
        ),
        ("我腿脚不好。有轮椅吗？", "我腿脚不好。", "有轮椅吗？"),
        ("Is the hall open on Sundays?", "", "Is the hall open on Sundays?"),
        # a carried topic stays with the question it belongs to
        ("I drive. Is it free? (car park)", "I drive.", "Is it free? (car park)"),
        ("周日可以停吗？（停车）", "", "周日可以停吗？（停车）"),
    ],
)
def test_split_context_separates_the_visitors_situation_from_the_question(question, context, ask):
    from runtime.answer.check import split_context

    assert split_context(question) == (context, ask)


def test_a_followup_with_its_carried_topic_gets_a_verdict():
    v = yes_no(
        "周日可以停吗？（停车）",
        ["每周日和所有法定节假日中心全天休息，停车场同时关闭。"],
        "zh",
    )
    assert v is not None and v.answer == "no"
