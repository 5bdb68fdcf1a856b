"""`kiosk transcribe FILE` and `kiosk speak TEXT`: the speech front end for operators."""

from __future__ import annotations

import json
import time

import click

from runtime.cli import get_config


@click.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option(
    "--language",
    type=click.Choice(["zh", "en"]),
    default=None,
    help="Skip detection and decode in this language (default: detect among [kiosk] languages).",
)
@click.option(
    "--vocabulary",
    multiple=True,
    metavar="TERM",
    help="A name to bias recognition toward (repeatable); the server uses the active pack's.",
)
@click.option(
    "--stream",
    "as_stream",
    is_flag=True,
    help="Replay the file through the streaming session and print partial and final transcripts.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print one JSON object (or one per event with --stream).",
)
@click.pass_context
def transcribe(
    ctx: click.Context,
    file: str,
    language: str | None,
    vocabulary: tuple[str, ...],
    as_stream: bool,
    as_json: bool,
) -> None:
    """Transcribe an audio file (WAV or FLAC; any rate, mono or stereo, within [speech] limits)."""
    from runtime.inference.transcribe_whisper import WhisperTranscriber
    from runtime.speech.audio import AudioLimits, read_audio_file

    cfg = get_config(ctx)
    audio = read_audio_file(
        file, AudioLimits.from_config(cfg.speech)
    )  # checked before the model loads
    transcriber = WhisperTranscriber.from_config(cfg)
    if vocabulary:
        transcriber.set_vocabulary(vocabulary)
    if as_stream:
        _replay(transcriber, cfg, audio, language, as_json)
        return
    t0 = time.perf_counter()
    timed = transcriber.transcribe_timed(audio, language=language)
    elapsed = time.perf_counter() - t0
    tr = timed.transcript
    if as_json:
        click.echo(
            json.dumps(
                {
                    "text": tr.text,
                    "raw_text": timed.raw_text,
                    "language": tr.language,
                    "duration_s": round(tr.duration_s, 3),
                    "elapsed_s": round(elapsed, 3),
                    "escalated": timed.escalated,  # redone the reference way (30 s, beam 5)
                },
                ensure_ascii=False,
            )
        )
    else:
        click.echo(tr.text)
        click.echo(f"[{tr.language}, {tr.duration_s:.1f} s of audio in {elapsed:.2f} s]", err=True)


def _replay(transcriber, cfg, audio, language: str | None, as_json: bool) -> None:
    import numpy as np

    from runtime.speech.audio import float_to_pcm16
    from runtime.speech.streaming import InlineExecutor, StreamingSession, StreamSettings

    settings = StreamSettings.from_config(cfg.speech)
    clock = [0.0]  # a replay is paced by the audio, not the wall clock
    session = StreamingSession(
        transcriber,
        settings,
        clock=lambda: clock[0],
        language=language,
        executor=InlineExecutor(),  # faster than real time: decode in step with the audio
    )
    tail = np.zeros(int(16000 * (settings.endpoint_silence_ms / 1000 + 0.2)), np.float32)
    pcm = float_to_pcm16(np.concatenate([audio, tail])).tobytes()
    step = 640  # 20 ms
    events = []
    for i in range(0, len(pcm), step):
        clock[0] += step / 32000
        events.extend(session.feed(pcm[i : i + step]))
    final = session.end()
    session.close()
    if final.text or not any(e.kind == "final" for e in events):
        events.append(final)
    for e in events:
        if as_json:
            click.echo(json.dumps(e.to_json(), ensure_ascii=False))
        elif e.kind != "speech_start":
            click.echo(f"{e.at_s:6.2f}s {e.kind:7s} {e.text}")


@click.command()
@click.argument("text")
@click.option(
    "--language",
    type=click.Choice(["zh", "en"]),
    default=None,
    help="Voice language (default: zh when the text has Chinese characters, else en).",
)
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write a 16-bit WAV here instead of playing it.",
)
@click.option(
    "--voice",
    type=click.Choice(["auto", "neural", "espeak"]),
    default="auto",
    help="auto: the neural voice for English, espeak-ng for Chinese.",
)
@click.pass_context
def speak(
    ctx: click.Context, text: str, language: str | None, out_path: str | None, voice: str
) -> None:
    """Speak a text sentence by sentence to a WAV file (--out) or the speaker (aplay/paplay)."""
    from runtime.errors import AudioLimitError
    from runtime.speech.audio import write_wav
    from runtime.speech.speaker import CollectSink, CommandSink, Speaker, voices_from_config

    cfg = get_config(ctx)
    if len(text) > cfg.speech.tts_max_chars:
        raise AudioLimitError(
            f"text to speak is {len(text)} characters; the limit is {cfg.speech.tts_max_chars}",
            hint="speak a shorter text, or raise [speech] tts_max_chars",
        )
    if language is None:
        language = "zh" if any("\u3400" <= ch <= "\u9fff" for ch in text) else "en"
    voices = voices_from_config(
        cfg, prefer=voice, note=lambda m: click.echo(f"note: {m}", err=True)
    )
    sink = CollectSink() if out_path else CommandSink()
    report = Speaker(voices, sink, max_chars=cfg.speech.tts_max_chars).speak(text, language)
    if out_path:
        samples, rate = sink.samples()
        write_wav(out_path, samples, rate)
        click.echo(
            f"wrote {out_path}: {samples.size / rate:.2f} s at {rate} Hz, "
            f"{len(report.sentences)} sentence(s)"
        )
    if report.first_audio_ms is not None:
        click.echo(
            f"[{voices[language].model_id}: first audio {report.first_audio_ms:.0f} ms "
            "after the first "
            f"sentence, {report.audio_seconds:.2f} s of speech]",
            err=True,
        )
