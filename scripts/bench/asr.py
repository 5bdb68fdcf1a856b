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
(``[speech] endpoint_silence_ms``). Per clip it prints where that time went:
VAD lag (windows still above the hysteresis threshold after the last speech
window), a decode still running at the end of speech (and which kind), when
the early final decode started and how long its encoder and decoder took, the
wait after it, redos, decodes called off, and premature endpoints (more than
one final for a one-question clip; every final's text is scored, so a cut
question also costs errors).

    .venv/bin/python scripts/bench/asr.py
    .venv/bin/python scripts/bench/asr.py --reps 5 --min-s 0 --max-s 12
    .venv/bin/python scripts/bench/asr.py --settings none --preview-step 12   # streaming only

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
    """End of speech → final transcript, measured on the wall clock with a paced sender, and where
    the time went, per clip."""
    import threading

    from runtime.errors import DecodeCancelledError
    from runtime.speech.normalize import error_rate
    from runtime.speech.streaming import StreamingSession
    from runtime.speech.vad import WINDOW, WINDOW_MS, speech_probabilities

    eos, errors, partials_first, per_clip, rows = [], [], 0, {}, []
    calls: list[dict[str, Any]] = []  # every decode: wall start/end, kind, cancelled, split
    lock = threading.Lock()
    timed = tr.transcribe_timed

    def logged(audio, **kw):
        kind = "reference" if kw.get("reference") else ("preview" if kw.get("preview") else "fast")
        call = {"start": time.perf_counter(), "kind": kind, "cancelled": False}
        try:
            result = timed(audio, **kw)
        except DecodeCancelledError:
            call["cancelled"] = True
            raise
        finally:
            call["end"] = time.perf_counter()
            with lock:
                calls.append(call)
        call.update(
            encode_ms=result.encode_ms, decode_ms=result.decode_ms, escalated=result.escalated
        )
        return result

    tr.transcribe_timed = logged
    for clip in clips:
        probs = speech_probabilities(clip["audio"])
        last = int(np.nonzero(probs >= settings.threshold)[0][-1])
        first_silent = last + 1
        while first_silent < probs.size and probs[first_silent] >= settings.neg_threshold:
            first_silent += 1
        speech_end_s = (last + 1) * WINDOW / 16000
        # VAD lag: windows still above the hysteresis threshold after the last speech window
        vad_lag_ms = (first_silent - last - 1) * WINDOW_MS
        for _ in range(args.reps):
            session = StreamingSession(tr, settings)
            with lock:
                calls.clear()
            audio = np.concatenate([clip["audio"], np.zeros(24000, np.float32)])
            t0 = time.perf_counter()
            finals, kinds = [], []
            for n, i in enumerate(range(0, audio.size, 320)):
                delay = t0 + (n + 1) * 0.02 - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                for event in session.feed_samples(audio[i : i + 320]):
                    kinds.append(event.kind)
                    if event.kind == "final":
                        finals.append((time.perf_counter(), event))
            cancelled = session.cancelled_decodes
            session.close()
            if not finals:
                continue
            final_at = finals[-1][0]
            text = (
                " ".join(e.text for _, e in finals)
                if clip["lang"] == "en"
                else "".join(e.text for _, e in finals)
            )
            errors.append((clip["reference"], text, clip["lang"]))
            per_clip.setdefault(
                clip["file"], error_rate(clip["reference"], text, clip["lang"]).errors
            )
            end = t0 + speech_end_s
            latency = (final_at - end) * 1e3
            eos.append(latency)
            partials_first += "partial" in kinds[: kinds.index("final")]
            with lock:
                done = [c for c in calls if "end" in c]
            running = [c for c in done if c["start"] < end < c["end"]]
            busy = max([(c["end"] - end) * 1e3 for c in running] + [0.0])
            busy_kind = ",".join(sorted({c["kind"] for c in running})) or "-"
            early = [c for c in done if c["start"] >= end and c["kind"] == "fast"]
            e0 = early[0] if early else None
            rows.append(
                {
                    "file": clip["file"],
                    "latency_ms": latency,
                    "vad_lag_ms": vad_lag_ms,
                    "busy_at_end_ms": busy,
                    "busy_kind": busy_kind,
                    "early_start_ms": (e0["start"] - end) * 1e3 if e0 else float("nan"),
                    "early_ms": (e0["end"] - e0["start"]) * 1e3 if e0 else float("nan"),
                    "encode_ms": e0.get("encode_ms", float("nan")) if e0 else float("nan"),
                    "decode_ms": e0.get("decode_ms", float("nan")) if e0 else float("nan"),
                    "after_early_ms": (final_at - e0["end"]) * 1e3 if e0 else float("nan"),
                    "redo": any(c["kind"] == "reference" for c in done if c["start"] >= end),
                    "cancelled": cancelled,
                    "premature_endpoints": len(finals) - 1,
                }
            )
    tr.transcribe_timed = timed

    def med(key, subset=rows):
        return _pct([r[key] for r in subset if r[key] == r[key]], 50)

    per_clip_rows = {}
    for clip in clips:
        mine = [r for r in rows if r["file"] == clip["file"]]
        per_clip_rows[clip["file"]] = {
            "latency_ms_each": [round(r["latency_ms"]) for r in mine],
            **{
                k: med(k, mine)
                for k in (
                    "vad_lag_ms",
                    "busy_at_end_ms",
                    "early_start_ms",
                    "early_ms",
                    "encode_ms",
                    "decode_ms",
                    "after_early_ms",
                )
            },
            "redos": sum(r["redo"] for r in mine),
            "busy_kinds": [r["busy_kind"] for r in mine],
            "cancelled_decodes": sum(r["cancelled"] for r in mine),
            "premature_endpoints": sum(r["premature_endpoints"] for r in mine),
            "errors": per_clip.get(clip["file"]),
        }
    return {
        "latency_ms_p50": _pct(eos, 50),
        "latency_ms_p95": _pct(eos, 95),
        "breakdown_ms_p50": {
            "vad_lag": med("vad_lag_ms"),
            "decode_busy_at_end_of_speech": med("busy_at_end_ms"),
            "end_of_speech_to_early_decode": med("early_start_ms"),
            "early_decode": med("early_ms"),
            "early_decode_encoder": med("encode_ms"),
            "early_decode_decoder": med("decode_ms"),
            "early_decode_to_final": med("after_early_ms"),
        },
        "per_clip": per_clip_rows,
        "latency_ms_each": [round(x) for x in eos],
        "endpoint_silence_ms": settings.endpoint_silence_ms,
        "speculate_ms": settings.speculate_ms,
        "tail_ms": settings.tail_ms,
        "finals": len(eos),
        "finals_with_partial_first": partials_first,
        "premature_endpoints": sum(r["premature_endpoints"] for r in rows),
        "redos": sum(r["redo"] for r in rows),
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
    ap.add_argument(
        "--preview-step",
        type=int,
        default=None,
        help="tokens per cancellable step of a streaming partial (0: one uncancellable call)",
    )
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
    if args.preview_step is not None:
        import runtime.inference.transcribe_whisper as tw

        tw.PREVIEW_STEP = args.preview_step
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
    chosen = [s for s in args.settings.split(",") if s in runners]  # "none": streaming only
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
        st = results["streaming"]
        b = st["breakdown_ms_p50"]
        print(
            f"\nstreaming (endpoint {st['endpoint_silence_ms']} ms, early decode after "
            f"{st['speculate_ms']} ms of silence, tail {st['tail_ms']} ms), p50 ms after the end "
            f"of speech: VAD lag {b['vad_lag']:.0f}, decode still running "
            f"{b['decode_busy_at_end_of_speech']:.0f}, early final decode starts "
            f"{b['end_of_speech_to_early_decode']:.0f}, takes {b['early_decode']:.0f} (encoder "
            f"{b['early_decode_encoder']:.0f}, decoder {b['early_decode_decoder']:.0f}), final "
            f"{b['early_decode_to_final']:.0f} after it; {st['redos']} redos, "
            f"{st['premature_endpoints']} premature endpoints in {st['finals']} utterances"
        )
        print(
            f"{'clip':44s} {'latency ms each':>18s} {'lag':>4s} {'busy':>5s} {'start':>5s} "
            f"{'early':>5s} {'enc':>4s} {'dec':>4s} {'after':>5s} {'redo':>4s} {'canc':>4s} "
            f"{'cut':>3s} {'err':>3s}"
        )
        for file, r in st["per_clip"].items():
            each = ",".join(str(x) for x in r["latency_ms_each"])
            print(
                f"{file[:44]:44s} {each:>18s} {r['vad_lag_ms']:4.0f} {r['busy_at_end_ms']:5.0f} "
                f"{r['early_start_ms']:5.0f} {r['early_ms']:5.0f} {r['encode_ms']:4.0f} "
                f"{r['decode_ms']:4.0f} {r['after_early_ms']:5.0f} {r['redos']:4d} "
                f"{r['cancelled_decodes']:4d} {r['premature_endpoints']:3d} {r['errors']!s:>3s}"
                f"  busy: {','.join(r['busy_kinds'])}"
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
