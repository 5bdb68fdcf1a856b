"""What kind of answer a question asks for, and whether a sentence states one.

"Which window...?" is answered by a sentence naming a window, "what time...?" by
one stating a clock time, "how much...?" by an amount of money. Classic
question answering weighs candidate sentences by this expected answer type;
the extractive quote does the same, so that of two sentences sharing the
question's words, the one that actually holds the answer is quoted.

Types are checked most specific first; a question may have none (then no
sentence gets a bonus).
"""

from __future__ import annotations

import functools
import re

from runtime.knowledge.text import normalize

_QUESTION = {
    "money": re.compile(
        r"\b(cost|costs|fee|fees|price|charge|charges|pay)\b|how much"
        r"|多少钱|费用|收费|多少元|交多少|付多少",
        re.I,
    ),
    "place": re.compile(
        r"\bwhere\b|which (window|floor|counter|desk|room|entrance|exit|level)"
        r"|what (floor|window|level)"
        r"|哪里|哪儿|在哪|哪个窗口|几号窗口|几楼|哪一?层|什么地方|哪个柜台",
        re.I,
    ),
    # Before "time": "多长时间" asks how long, and "17:30" does not answer it.
    "duration": re.compile(r"\bhow long\b|多久|多长时间|多长", re.I),
    "time": re.compile(
        r"\bwhat time\b|\bwhen\b|until what time|how (late|early)|\bhours\b"
        r"|几点|什么时候|何时|时间",
        re.I,
    ),
    "number": re.compile(r"\bhow many\b|多少|几个|几天|几位|几岁", re.I),
    "documents": re.compile(
        r"\b(what|which) (documents?|papers?)\b|\bwhat (do|should|must) (i|we) (need to )?bring\b"
        r"|\bwhat do (i|we) need\b|带什么|带哪些|什么材料|哪些材料|什么证件|哪些证件",
        re.I,
    ),
}

# A question about how to pay, not how much: "pay with a cheque", "pay in cash", "用现金付".
_PAY_METHOD = re.compile(
    r"\bpay(ing)? (with|by|in|using)\b|用.{0,6}(付|支付|缴|交)|现金|刷卡|扫码支付", re.I
)
_MONEY = r"[$¥￥]\s*\d|\d+(?:\.\d+)?\s*(?:yuan|rmb|cny|元|块)"
# A floor: what a where-question's answer needs besides a window (with_floor_heading).
_FLOOR = (
    r"\b\d+(?:st|nd|rd|th)\s+floor|\b(ground|first|second|third|fourth|fifth)\s+floor"
    r"|\bbasement\b|\bb1\b|\b[b1-9]f\b|[一二三四五\d]\s*楼|[一二三四五\d]\s*层|地下"
)

_STATES = {
    "money": re.compile(_MONEY, re.I),
    # "Do I have to pay for it?" is answered by "free of charge" as well as by an amount; "How
    # much is it?" is not answered by "free passport photos" (the photos are not what is asked).
    "charge": re.compile(_MONEY + r"|\bfree\b|no charge|no fee|免费|不收费|不收取", re.I),
    "place": re.compile(r"\bwindows?\s+\d|\d+\s*号?窗口|" + _FLOOR, re.I),
    "time": re.compile(
        r"(?<!\d)\d{1,2}[:：.]\d\d(?!\d)|\d{1,2}\s*(?:am|pm|a\.m\.|p\.m\.)|\d{1,2}\s*点"
        # "closed all day on Sundays" answers "what are the hours on Sundays?" too
        r"|\bclosed\b|休息|闭馆|关闭|不开放|不对外",
        re.I,
    ),
    # An amount of time: "30 minutes", "7个工作日", "half an hour" (not "当天": "当天现场取号"
    # names no length).
    "duration": re.compile(
        r"\d+\s*(?:-|–|to)?\s*\d*\s*(?:minutes?|mins?|hours?|days?|working days?|weeks?|months?"
        r"|years?)\b|half an hour|\d+\s*(?:分钟|小时|个?工作日|天|周|个月|年)|半小时",
        re.I,
    ),
    # A document a visitor brings: an ID card, a booklet, a photo, a certificate, a form.
    "documents": re.compile(
        r"\b(id|identity) (card|document)|passport|booklet|photo|certificate|licen[cs]e\b"
        r"|\bpermit\b|\bform\b|\bcopy\b|\boriginal\b"
        r"|身份证|户口|照片|证明|证书|执照|许可证|驾驶证|护照|居住证|原件|复印件|申请表|材料",
        re.I,
    ),
    "number": re.compile(
        r"\d|[一二三四五六七八九十两]|\b(one|two|three|four|five|six|seven|eight|nine|ten|eleven"
        r"|twelve|twenty|thirty|forty|fifty|hundred)\b",
        re.I,
    ),
}
_FLOOR_RX = re.compile(_FLOOR, re.I)
_CJK_CHAR = re.compile(r"[\u3400-\u9fff]")

TYPES = (*_QUESTION, "charge")


def answer_type(question: str) -> str | None:
    """The kind of answer ``question`` asks for (money, place, time, number; "charge" for a
    yes/no question about paying), or None."""
    from .check import is_yes_no_question  # here: check imports extractive, which imports us

    for name, rx in _QUESTION.items():
        if rx.search(question):
            if name == "money" and _PAY_METHOD.search(question):
                return None  # "Can I pay with a cheque?" asks how to pay, not how much
            if name == "money":
                lang = "zh" if _CJK_CHAR.search(question) else "en"
                if is_yes_no_question(question, lang):
                    return "charge"
            return name
    return None


def states(sentence: str, kind: str | None) -> bool:
    """Whether ``sentence`` states an answer of ``kind`` (False for no kind)."""
    if kind is None:
        return False
    return _STATES[kind].search(normalize(sentence)) is not None


# Stems (English, as extractive.terms gives them) and Chinese words that only say which kind
# of answer is wanted ("what time", "how many days", "多少钱"): a sentence that states an
# answer of that kind covers them, though it seldom repeats them ("Thursday | 08:30–20:00").
_ASKING_WORDS = {
    "money": frozenset(
        "cost fee price charg pay much 多少 多少钱 钱 费用 收费 多少元 交多少 付多少".split()
    ),
    "place": frozenset(
        "where window floor counter desk room level 哪里 哪儿 几楼 哪个 在哪".split()
    ),
    "time": frozenset("time hour when late earli 几点 时间 什么 时候 什么时候 何时".split()),
    "number": frozenset("mani day 多少 几个 几天".split()),
    "duration": frozenset("long take 多长 多久 多长时间 长时间 时间 要多久".split()),
    "documents": frozenset(
        "document paper bring need 带 什么 材料 证件 哪些 需要 带什么 什么材料 哪些材料".split()
    ),
}


@functools.lru_cache(maxsize=1)
def all_asking_words() -> frozenset[str]:
    """The words that ask for any kind of answer."""
    return frozenset().union(*_ASKING_WORDS.values())


def asking_words(kind: str | None) -> frozenset[str]:
    """The question's words that ask for an answer of ``kind`` rather than name its subject."""
    return _ASKING_WORDS.get("money" if kind == "charge" else kind or "", frozenset())


# "How many terminals ...?", "有几台自助终端？": the counted thing is the question's focus; a
# sentence that states a number without naming it counts something else.
_FOCUS = re.compile(
    r"\bhow many\s+([a-z-]+(?:\s+[a-z-]+)?)|(?:几|多少)(?:个|台|位|部|间|种|处|家|张)?"
    r"([\u3400-\u9fff]{2,4})",
    re.I,
)


def focus_words(question: str) -> str:
    """The words naming what a "how many" question counts ("" when it counts nothing); for
    English the two words after "how many", of which the caller keeps the content words."""
    m = _FOCUS.search(question)
    if m is None:
        return ""
    return m.group(1) or m.group(2) or ""


def with_floor_heading(question: str, quote: str, heading: str) -> str:
    """The quote with its section heading in front when the visitor asks where something is,
    the heading names the floor ("四楼（4F）") and the quote does not ("401–402号窗口...")."""
    if answer_type(question) != "place" or not heading:
        return quote
    if _FLOOR_RX.search(normalize(quote)) or not _FLOOR_RX.search(normalize(heading)):
        return quote
    sep = "：" if _CJK_CHAR.search(heading) else ": "
    return f"{heading}{sep}{quote}"
