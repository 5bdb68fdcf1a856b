"""Script and number normalisation of transcripts, and error rates scored after it."""

from __future__ import annotations

import pytest

from runtime.speech.normalize import (
    chinese_numbers_to_arabic,
    convert_script,
    corpus_error_rate,
    english_numbers_to_arabic,
    error_rate,
    normalize_transcript,
    score_form,
)


def test_traditional_output_is_shown_in_simplified():
    assert normalize_transcript("換一首歌") == "换一首歌"
    assert normalize_transcript("廣州市房地產") == "广州市房地产"


def test_traditional_kiosk_gets_traditional():
    assert normalize_transcript("广州市房地产", script="traditional") == "廣州市房地產"
    assert convert_script("", "traditional") == ""


@pytest.mark.parametrize(
    "spoken,written",
    [
        ("三十分钟", "30分钟"),
        ("十分钟", "10分钟"),
        ("八十八号", "88号"),
        ("一百零五元", "105元"),
        ("两万三千人", "23000人"),
        ("零五七一八八零零", "05718800"),  # leading zero kept: a phone number, not a quantity
        ("二零二四年", "2024年"),
        ("三点五公里", "3.5公里"),
        ("十一", "11"),
    ],
)
def test_numbers_take_the_knowledge_form(spoken, written):
    assert chinese_numbers_to_arabic(spoken) == written


@pytest.mark.parametrize(
    "text",
    ["十分感谢", "万一出现问题", "一楼服务台", "请稍等一下", "两个人", "一二线城市", "千万不要"],
)
def test_words_that_are_not_numbers_stay(text):
    assert chinese_numbers_to_arabic(text) == text


def test_number_form_keep_leaves_numerals():
    assert normalize_transcript("三十分钟", number_form="keep") == "三十分钟"


def test_fullwidth_digits_and_spaces_normalised():
    assert normalize_transcript("  ３号  窗口 ") == "3号 窗口"


def test_range_written_either_way_scores_the_same():
    assert score_form("1-2線城市") == score_form("一二线城市") == "12线城市"
    assert error_rate("一二线城市", "1-2線城市", "zh").errors == 0


def test_cer_counts_character_edits_after_normalisation():
    er = error_rate("广州市房地产中介协会分析", "廣州市佛地產中間協會分析", "zh")
    assert (er.errors, er.reference_length, er.name) == (2, 12, "CER")
    assert er.rate == pytest.approx(2 / 12)


def test_wer_ignores_case_and_punctuation_but_not_words():
    assert (
        error_rate("And so my fellow Americans", "and so, my fellow Americans!", "en").errors == 0
    )
    er = error_rate("ask not what your country can do", "ask what your country can do for", "en")
    assert (er.errors, er.reference_length, er.name) == (2, 7, "WER")


def test_empty_hypothesis_is_all_deletions():
    assert error_rate("甚至出现", "", "zh").rate == 1.0


def test_corpus_rate_pools_by_language():
    rates = corpus_error_rate(
        [("ab cd", "ab cd", "en"), ("ab cd", "ab", "en"), ("甚至出现", "甚至", "zh")]
    )
    assert rates["en"] == pytest.approx(1 / 4)
    assert rates["zh"] == pytest.approx(2 / 4)


@pytest.mark.parametrize(
    "spoken,written",
    [
        ("it costs twenty five dollars", "it costs 25 dollars"),
        ("Twenty-five people", "25 people"),
        ("come back at three thirty.", "come back at 3:30."),
        ("from eight thirty to five thirty", "from 8:30 to 5:30"),
        ("Four forty-five p.m.", "4:45 p.m."),
        ("at nine oh five", "at 9:05"),
        ("The office opens at nine am", "The office opens at 9 am"),
        ("until two pm", "until 2 pm"),
        ("at twelve o'clock", "at 12:00"),
        ("room one hundred and five", "room 105"),
        ("two point five kilometres", "2.5 kilometres"),
        ("call zero five seven one eight eight zero zero", "call 05718800"),
        ("call oh five seven one", "call 0571"),
        ("Window three please", "Window 3 please"),
    ],
)
def test_english_number_words_take_the_knowledge_form(spoken, written):
    assert english_numbers_to_arabic(spoken) == written


@pytest.mark.parametrize(
    "text",
    [
        "I want one ticket",  # a lone one/two stays a word
        "one of them",
        "It was the first great sorrow of his life",
        "page 3 30",  # digits the recogniser wrote are not re-read as a time
        "at 9 am",
        "请到三号窗口",
    ],
)
def test_english_words_that_are_not_rewritten(text):
    assert english_numbers_to_arabic(text) == text


def test_normalize_transcript_applies_english_numbers_only_in_arabic_form():
    assert normalize_transcript("Opens at nine am, closes at five thirty") == (
        "Opens at 9 am, closes at 5:30"
    )
    assert normalize_transcript("at five thirty", number_form="keep") == "at five thirty"


def test_english_numbers_score_alike_written_either_way():
    assert error_rate("The fee is 25 dollars", "the fee is twenty five dollars", "en").errors == 0
    assert score_form("Three thirty") == "3 30" == score_form("3:30")
