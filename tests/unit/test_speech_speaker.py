"""Speaking streamed answers: sentence cutting, pipelining, interrupt and mute (fake voice, no sound
card)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from runtime.inference.base import SpeechAudio, Synthesizer
from runtime.speech.speaker import CollectSink, SentenceSplitter, Speaker


class ToneVoice(Synthesizer):
    """0.1 s of tone per character; records what it was asked to say."""

    model_id = "tone"
    backend = "numpy"
    device = "CPU"
    languages = ("en", "zh")

    def __init__(self) -> None:
        self.said: list[str] = []

    def synthesize(self, text: str, *, language: str) -> SpeechAudio:
        self.said.append(text)
        n = 1600 * len(text)
        return SpeechAudio((np.sin(np.arange(n) / 3) * 8000).astype(np.int16), 16000)


def test_splitter_cuts_streamed_text_at_sentence_ends():
    s = SentenceSplitter()
    out = []
    for piece in [
        "The office opens at 8.",
        "30 on weekdays. Bring your",
        " ID card! 请",
        "到三号窗口。谢谢",
    ]:
        out += s.feed(piece)
    out += s.flush()
    # "8.30" is not a sentence end (no space after the dot); Chinese and Western ends both cut
    assert out == [
        "The office opens at 8.30 on weekdays.",
        "Bring your ID card!",
        "请到三号窗口。",
        "谢谢",
    ]


def test_splitter_cuts_run_on_text_at_a_clause():
    s = SentenceSplitter(max_chars=20)
    out = s.feed("请携带身份证，户口本，以及近期照片两张，还有申请表格")
    assert out and out[0].endswith("，") and len(out[0]) <= 20


def test_first_sentence_is_spoken_before_the_answer_is_complete():
    voice = ToneVoice()
    sink = CollectSink()
    played_first = threading.Event()
    original = sink.play

    def play(audio, stop):
        original(audio, stop)
        played_first.set()

    sink.play = play  # type: ignore[method-assign]

    def answer():
        yield "Hello there. "
        # the generator is still "thinking": the first sentence must already be audible
        assert played_first.wait(5), (
            "first sentence was not played while the answer was still streaming"
        )
        yield "The second sentence."

    report = Speaker({"en": voice}, sink).speak_stream(answer(), "en")
    assert voice.said == ["Hello there.", "The second sentence."]
    assert len(sink.chunks) == 2 and report.first_audio_ms is not None
    assert report.audio_seconds == pytest.approx(0.1 * (12 + 20))


def test_interrupt_stops_playback_and_drops_queued_sentences():
    voice = ToneVoice()
    sink = CollectSink(realtime=True)  # each chunk "plays" for its duration
    speaker = Speaker({"en": voice}, sink)
    text = " ".join(["This sentence takes a few seconds to say."] * 5)
    timer = threading.Timer(0.3, speaker.interrupt)
    timer.start()
    t0 = time.perf_counter()
    report = speaker.speak(text, "en")
    elapsed = time.perf_counter() - t0
    timer.join()
    assert report.interrupted
    assert len(sink.chunks) < 5
    assert elapsed < 4.0  # the first chunk alone is 4.2 s long: it was cut short


def test_muted_speaker_synthesises_nothing_until_unmuted():
    voice = ToneVoice()
    sink = CollectSink()
    speaker = Speaker({"en": voice}, sink, muted=True)
    report = speaker.speak("Nothing to hear. Still nothing.", "en")
    assert report.muted and voice.said == [] and sink.chunks == []
    speaker.set_muted(False)
    speaker.speak("Now audible.", "en")
    assert voice.said == ["Now audible."]


def test_mute_during_an_answer_stops_it():
    voice = ToneVoice()
    sink = CollectSink(realtime=True)
    speaker = Speaker({"en": voice}, sink)
    threading.Timer(0.2, speaker.set_muted, args=(True,)).start()
    report = speaker.speak("One long sentence to be muted right away. Another one.", "en")
    assert report.interrupted and report.muted and len(sink.chunks) <= 1


def test_language_picks_the_voice_and_text_is_capped():
    en, zh = ToneVoice(), ToneVoice()
    sink = CollectSink()
    speaker = Speaker({"en": en, "zh": zh}, sink, max_chars=10)
    speaker.speak("请到三号窗口办理。然后等候叫号。", "zh")
    assert en.said == [] and "".join(zh.said) == "请到三号窗口办理。然"  # 10 characters


def test_a_failing_voice_raises_to_the_caller():
    class Broken(ToneVoice):
        def synthesize(self, text, *, language):
            raise RuntimeError("voice crashed")

    with pytest.raises(RuntimeError, match="voice crashed"):
        Speaker({"en": Broken()}, CollectSink()).speak("Hello. World.", "en")
