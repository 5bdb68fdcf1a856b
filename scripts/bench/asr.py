"""Speech recognition speed and accuracy: the project's settings beside plain faster-whisper, one
run.

Same model (whisper base, CTranslate2 int8, ``--threads`` CPU threads), same clips
(real human speech from ../shared/data/speech whose length is in
``--min-s``..``--max-s``; each clip ``--reps`` times):

- ``plain``: ``WhisperModel.transcribe(audio)`` with faster-whisper's defaults
  (language detection over all 99 languages, beam 5, timestamps, no VAD, the
  encoder run twice: once to detect, once to decode); the reference.
- ``project``: the kiosk's transcriber with the [speech] settings (VAD trim,
  one encoder pass shared by language choice among the kiosk's languages and
  decoding, a short encoder window (speech + 2 s, Mandarin at least 10 s),
  beam 1, no timestamps; an unsure or looping decode is redone the reference
  way: 30 s window, beam 5, timestamps).
- ``project-noesc``: the same without the confidence-gated redo (only loops are
  redone), to show what the redo costs and buys; ``project-beam5``: beam 5;
  ``project-30s``: whisper's fixed 30 s encoder window instead of the short one.

For each: transcription time from the end of the audio (p50/p95; for a file or
a push-to-talk release this is the end-of-speech latency), CPU time, real-time
factor (time / audio length) and the error rate (WER English, CER Mandarin,
pooled, after script and number normalisation). For the streaming path
(``streaming``), each clip plus 1.5 s of silence is sent in 20 ms chunks paced
by the wall clock through :class:`StreamingSession` (Silero VAD, partials, the
early final decode); the latency is from the clip's last speech window to the
final transcript, which includes the endpoint's wait for silence
(``[speech] endpoint_silence_ms``).

    .venv/bin/python scripts/bench/asr.py
    .venv/bin/python scripts/bench/asr.py --reps 5 --min-s 0 --max-s 12

Prints a table; writes bench-results/asr.json (or --out) with the machine facts and
the load average before and after (the box may be shared: wall times drift with
the load, CPU times much less).
"""

from __future__ import annotations

import argparse
import csv
import importlib.metadata
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def _clips(folder: Path, min_s: float, max_s: float):
    from runtime.speech.audio import AudioLimits, read_audio_file

    with (folder / "transcripts.tsv").open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    out = []
    for r in rows:
        audio = read_audio_file(folder / r["file"], AudioLimits())
        seconds = audio.size / 16000
        if min_s <= seconds <= max_s:
            out.append(
                {
                    "file": r["file"],
                    "lang": r["lang"],
                    "reference": r["transcript"],
                    "audio": audio,
                    "seconds": seconds,
                }
            )
    return out


def _timed(fn):
    w0, c0 = time.perf_counter(), time.process_time()
    result = fn()
    return result, (time.perf_counter() - w0) * 1e3, (time.process_time() - c0) * 1e3


def _stream_realtime(tr, settings, clips, args) -> dict[str, Any]:
    """End of speech → final transcript, measured on the wall clock with a paced sender."""
    from runtime.speech.normalize import error_rate
    from runtime.speech.streaming import StreamingSession
    from runtime.speech.vad import WINDOW, speech_probabilities

    eos, errors, partials_first, per_clip = [], [], 0, {}
    early_start, early_ms, final_extra, busy_at_end = [], [], [], []
    calls: list[tuple[float, float, bool]] = []  # wall start, wall end, reference decode
    timed = tr.transcribe_timed

    def logged(audio, **kw):
        t = time.perf_counter()
        result = timed(audio, **kw)
        calls.append((t, time.perf_counter(), bool(kw.get("reference") or result.escalated)))
        return result

    tr.transcribe_timed = logged
    for clip in clips:
        probs = speech_probabilities(clip["audio"])
        speech_end_s = (int(np.nonzero(probs >= settings.threshold)[0][-1]) + 1) * WINDOW / 16000
        for _ in range(args.reps):
            session = StreamingSession(tr, settings)
            calls.clear()
            audio = np.concatenate([clip["audio"], np.zeros(24000, np.float32)])
            t0 = time.perf_counter()
            final_at, kinds = None, []
            for n, i in enumerate(range(0, audio.size, 320)):
                delay = t0 + (n + 1) * 0.02 - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                for event in session.feed_samples(audio[i : i + 320]):
                    kinds.append(event.kind)
                    if event.kind == "final" and final_at is None:
                        final_at = time.perf_counter()
                        errors.append((clip["reference"], event.text, clip["lang"]))
                        per_clip.setdefault(
                            clip["file"],
                            error_rate(clip["reference"], event.text, clip["lang"]).errors,
                        )
                if final_at is not None:
                    break
            if final_at is None:
                continue
            end = t0 + speech_end_s
            eos.append((final_at - end) * 1e3)
            partials_first += "partial" in kinds[: kinds.index("final")]
            # where the time went: a decode running when speech ended (a partial), the start and
            # length of the early final decode, and what the final added after it (a redo)
            after = [c for c in calls if c[0] >= end and not c[2]]
            busy_at_end.append(max([(c[1] - end) * 1e3 for c in calls if c[0] < end] + [0.0]))
            if after:
                early_start.append((after[0][0] - end) * 1e3)
                early_ms.append((after[0][1] - after[0][0]) * 1e3)
                final_extra.append((final_at - after[0][1]) * 1e3)
    tr.transcribe_timed = timed
    return {
        "latency_ms_p50": _pct(eos, 50),
        "latency_ms_p95": _pct(eos, 95),
        "breakdown_ms_p50": {
            "decode_busy_at_end_of_speech": _pct(busy_at_end, 50),
            "end_of_speech_to_early_decode": _pct(early_start, 50),
            "early_decode": _pct(early_ms, 50),
            "early_decode_to_final": _pct(final_extra, 50),
        },
        "latency_ms_each": [round(x) for x in eos],
        "endpoint_silence_ms": settings.endpoint_silence_ms,
        "speculate_ms": settings.speculate_ms,
        "finals": len(eos),
        "finals_with_partial_first": partials_first,
        "error_rate": _rates(errors),
        "errors_per_clip": per_clip,
        "calls": len(eos),
    }


def _rates(pairs):
    from runtime.speech.normalize import corpus_error_rate

    return corpus_error_rate(pairs)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "speech")
    ap.add_argument("--min-s", type=float, default=3.0)
    ap.add_argument(
        "--max-s", type=float, default=9.0, help="default 9: the one English clip in range is 8.7 s"
    )
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--settings", default="plain,project,project-noesc,project-beam5,project-30s")
    ap.add_argument("--no-stream", action="store_true", help="skip the real-time streaming replay")
    ap.add_argument("--out", type=Path, default=ROOT / "bench-results" / "asr.json")
    args = ap.parse_args(argv)

    import dataclasses

    from kiosk_config import load_config
    from runtime.inference.transcribe_whisper import DecodeSettings, WhisperTranscriber
    from runtime.speech.normalize import (
        corpus_error_rate,
        error_rate,
        normalize_transcript,
        score_form,
        tokens,
    )
    from runtime.speech.streaming import StreamSettings

    cfg = load_config()
    cfg.devices.threads = args.threads
    clips = _clips(args.data, args.min_s, args.max_s)
    if not clips:
        print(f"no clips between {args.min_s} and {args.max_s} s in {args.data}", file=sys.stderr)
        return 2
    load_before = os.getloadavg()
    project = DecodeSettings.from_config(cfg.speech)
    tr = WhisperTranscriber.from_config(cfg, settings=project)
    model = tr._model  # the same loaded model for every setting

    def run_plain(audio):
        segments, info = model.transcribe(audio)
        raw = "".join(s.text for s in segments).strip()
        return normalize_transcript(
            raw, script=cfg.kiosk.chinese_script, number_form=cfg.speech.number_form
        )

    escalations: dict[str, int] = {}

    def run_project(settings, name):
        def run(audio):
            tr.settings = settings
            timed = tr.transcribe_timed(audio)
            escalations[name] = escalations.get(name, 0) + timed.escalated
            return timed.transcript.text

        return run

    runners = {
        "plain": run_plain,
        "project": run_project(project, "project"),
        "project-noesc": run_project(
            dataclasses.replace(project, escalate_logprob=None), "project-noesc"
        ),
        "project-beam5": run_project(dataclasses.replace(project, beam_size=5), "project-beam5"),
        "project-30s": run_project(dataclasses.replace(project, short_window=False), "project-30s"),
    }
    chosen = [s for s in args.settings.split(",") if s in runners]
    for clip in clips[:1]:  # warm-up: first calls pay for allocations and the VAD session
        for name in chosen:
            runners[name](clip["audio"])
    escalations.clear()

    results: dict[str, Any] = {}
    for name in chosen:
        wall, cpu, rtf, pairs, texts = [], [], [], [], []
        for rep in range(args.reps):
            for clip in clips:
                text, ms, cpu_ms = _timed(lambda c=clip, run=runners[name]: run(c["audio"]))
                wall.append(ms)
                cpu.append(cpu_ms)
                rtf.append(ms / 1000 / clip["seconds"])
                if rep == 0:
                    pairs.append((clip["reference"], text, clip["lang"]))
                    texts.append({"file": clip["file"], "text": text})
        rates = corpus_error_rate(pairs, script=cfg.kiosk.chinese_script)
        per_clip = {
            c["file"]: error_rate(ref, hyp, lang, script=cfg.kiosk.chinese_script).errors
            for c, (ref, hyp, lang) in zip(clips, pairs, strict=True)
        }
        results[name] = {
            "latency_ms_p50": _pct(wall, 50),
            "latency_ms_p95": _pct(wall, 95),
            "cpu_ms_p50": _pct(cpu, 50),
            "rtf_p50": _pct(rtf, 50),
            "error_rate": rates,
            "errors_per_clip": per_clip,
            **({"escalated_calls": escalations.get(name, 0)} if name != "plain" else {}),
            "texts": texts,
            "calls": len(wall),
        }

    # Streaming, in real time: 20 ms chunks paced by the wall clock through the session (VAD,
    # partials, early final decode), end of speech = the clip's last speech window.
    if not args.no_stream:
        tr.settings = project
        results["streaming"] = _stream_realtime(
            tr, StreamSettings.from_config(cfg.speech), clips, args
        )

    plain_p50 = results.get("plain", {}).get("latency_ms_p50")
    names = ", ".join(f"{c['file']} {c['seconds']:.1f}s" for c in clips)
    print(
        f"\nASR on {len(clips)} clips ({names}), {args.reps} reps, {args.threads} threads; "
        f"load average {load_before[0]:.1f} before"
    )
    print(
        f"{'setting':16s} {'p50 ms':>8s} {'p95 ms':>8s} {'cpu p50':>8s} {'RTF':>6s} "
        f"{'vs plain':>9s}  error rates"
    )
    for name, r in results.items():
        ratio = r["latency_ms_p50"] / plain_p50 if plain_p50 else float("nan")
        rates = " ".join(f"{k} {v:.3f}" for k, v in sorted(r.get("error_rate", {}).items()))
        print(
            f"{name:16s} {r['latency_ms_p50']:8.0f} {r['latency_ms_p95']:8.0f} "
            f"{r.get('cpu_ms_p50', float('nan')):8.0f} "
            f"{r.get('rtf_p50', float('nan')):6.2f} {ratio:9.2f}  {rates}"
        )
    print("\nerrors per clip (rep 1; characters for zh, words for en):")
    print(f"{'clip':44s} {'ref':>4s} " + " ".join(f"{n[:13]:>13s}" for n in results))
    for c in clips:
        ref_len = len(
            tokens(score_form(c["reference"], script=cfg.kiosk.chinese_script), c["lang"])
        )
        cells = " ".join(
            f"{r.get('errors_per_clip', {}).get(c['file'], float('nan')):>13}"
            for r in results.values()
        )
        print(f"{c['file'][:44]:44s} {ref_len:4d} {cells}")
    for name, r in results.items():
        if "escalated_calls" in r:
            print(f"{name}: {r['escalated_calls']} of {r['calls']} calls redone the reference way")
    if "streaming" in results:
        b = results["streaming"]["breakdown_ms_p50"]
        print(
            "streaming, p50 ms after end of speech: decode still running "
            f"{b['decode_busy_at_end_of_speech']:.0f}, early final decode starts "
            f"{b['end_of_speech_to_early_decode']:.0f}, takes {b['early_decode']:.0f}, "
            f"final {b['early_decode_to_final']:.0f} after it"
        )
    facts = {
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_before": load_before,
            "load_after": os.getloadavg(),
        },
        "versions": {
            p: importlib.metadata.version(p)
            for p in ("faster-whisper", "ctranslate2", "onnxruntime", "text2num")
        },
        "model": {
            "id": cfg.models.transcriber,
            "compute_type": cfg.speech.compute_type,
            "threads": args.threads,
        },
        "clips": [
            {"file": c["file"], "lang": c["lang"], "seconds": round(c["seconds"], 2)} for c in clips
        ],
        "reps": args.reps,
        "settings": {"project": dataclasses.asdict(project)},
        "goals": {"latency_vs_plain": 0.5, "eos_p50_ms": 700},
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(facts, ensure_ascii=False, indent=2, default=list), encoding="utf-8"
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
