"""Speech output speed: time to first audio and real-time factor per voice, one run.

Voices: ``hibari-en`` (neural, English), ``espeak-zh`` (espeak-ng through pinyin,
Chinese) and ``espeak-en`` (the English fallback). Each speaks the same
kiosk-style answers (3-4 sentences each, ``--reps`` times):

- ``first_audio_ms``: from the moment the first sentence of the answer is known
  to the moment its audio reaches the sink, through :class:`Speaker`, which
  speaks sentence by sentence (the goal: <= 300 ms);
- reference in the same run, ``whole_answer_ms``: synthesising the whole answer
  before playing anything, which is what the first audio would wait for
  without sentence streaming;
- ``rtf``: synthesis time / audio length over the whole answer.

    .venv/bin/python scripts/bench/tts.py
    .venv/bin/python scripts/bench/tts.py --voices hibari-en --reps 5

Prints a table; writes bench-results/tts.json (or --out) with the machine facts and the
load average before and after (the box may be shared).
"""

from __future__ import annotations

import argparse
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

ANSWERS = {
    "en": [
        "The service hall opens at half past eight on weekdays. "
        "On Thursdays it stays open until eight in "
        "the evening. The ticket machines stop thirty minutes before closing.",
        "Passport applications are handled at windows twelve to fifteen on the second floor. "
        "Please bring "
        "your ID card and one recent photo. The fee can be paid by card or by phone.",
        "You can book an appointment online or at the kiosk. "
        "Appointments are kept for ten minutes. "
        "If you are late, please take a new number at the entrance.",
    ],
    "zh": [
        "滨江市民服务中心周一至周五八点半开门。周四延长服务至晚上八点。取号机在窗口停止服务前三十分钟停止取号。",
        "护照申请在二楼十二至十五号窗口办理。请携带身份证和近期照片一张。费用可以刷卡或用手机支付。",
        "您可以在网上或自助机上预约。预约号保留十分钟。如果迟到，请在入口处重新取号。",
    ],
}


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--voices", default="hibari-en,espeak-zh,espeak-en")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "bench-results" / "tts.json")
    args = ap.parse_args(argv)

    from kiosk_config import load_config
    from runtime.inference.synth_espeak import EspeakSynthesizer
    from runtime.speech.speaker import CollectSink, Speaker

    cfg = load_config()
    load_before = os.getloadavg()
    voices: dict[str, tuple[Any, str]] = {}
    for name in args.voices.split(","):
        if name == "hibari-en":
            from runtime.inference.synth_hibari import HibariSynthesizer

            t0 = time.perf_counter()
            voices[name] = (HibariSynthesizer.from_config(cfg), "en")
            load_ms = (time.perf_counter() - t0) * 1e3
            print(f"hibari-en loaded (with warm-up) in {load_ms:.0f} ms")
        elif name == "espeak-zh":
            voices[name] = (EspeakSynthesizer.from_config(cfg), "zh")
        elif name == "espeak-en":
            voices[name] = (EspeakSynthesizer.from_config(cfg), "en")

    results: dict[str, Any] = {}
    for name, (voice, lang) in voices.items():
        first, whole, rtf, audio_s = [], [], [], []
        voice.synthesize("Warm up." if lang == "en" else "预热。", language=lang)
        for _ in range(args.reps):
            for text in ANSWERS[lang]:
                sink = CollectSink()
                report = Speaker({lang: voice}, sink).speak(text, lang)
                first.append(report.first_audio_ms)
                t0 = time.perf_counter()
                audio = voice.synthesize(text, language=lang)  # reference: the whole answer first
                ms = (time.perf_counter() - t0) * 1e3
                seconds = audio.samples.size / audio.sample_rate
                whole.append(ms)
                rtf.append(ms / 1000 / seconds)
                audio_s.append(seconds)
        results[name] = {
            "first_audio_ms_p50": _pct(first, 50),
            "first_audio_ms_p95": _pct(first, 95),
            "whole_answer_ms_p50": _pct(whole, 50),
            "rtf_p50": _pct(rtf, 50),
            "answer_audio_s_mean": float(np.mean(audio_s)),
            "calls": len(first),
        }

    print(
        f"\nTTS, {args.reps} reps of {len(ANSWERS['en'])} answers per voice; "
        f"load average {load_before[0]:.1f} before"
    )
    print(
        f"{'voice':11s} {'first audio p50':>16s} {'p95':>7s} {'whole answer p50':>17s} "
        f"{'RTF':>6s} {'answer s':>9s}"
    )
    for name, r in results.items():
        print(
            f"{name:11s} {r['first_audio_ms_p50']:13.0f} ms {r['first_audio_ms_p95']:7.0f} "
            f"{r['whole_answer_ms_p50']:14.0f} ms {r['rtf_p50']:6.3f} "
            f"{r['answer_audio_s_mean']:9.1f}"
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
            p: importlib.metadata.version(p) for p in ("hibari-tts", "onnxruntime", "pypinyin")
        },
        "goal": {"first_audio_ms": 300},
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(facts, ensure_ascii=False, indent=2), encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
