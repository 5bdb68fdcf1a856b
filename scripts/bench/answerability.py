#!/usr/bin/env python
"""Can a local generator tell a quote that answers the question from one that does not?

The relevance gate passes near-topic questions whose quote does not hold the answer (RGB:
0 of 44 refused; `kiosk eval answers --benchmark zh-rgb`). A reader model could judge
"does this passage answer this question?". This measures that judge: the pipeline answers
every question of the chosen sets without a generator, then each prepared GGUF model reads
(question, shown quote) and its next-token logits for yes and no are compared (one prefill,
no decoding). A quote is good when the scorer counts its facts as shown. Reported per model
and set: AUC of the yes-minus-no score, good against bad and good against uncovered, and the
time per judgement, beside the reference: the sentence encoder's cosine between question and
quote (what the gate already has, at a millisecond).

    .venv/bin/python scripts/bench/answerability.py
    .venv/bin/python scripts/bench/answerability.py --sets fresh2 --limit 30 \
        --models qwen2.5-coder-0.5b-instruct
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

SETS = {
    "dev": "grounded",
    "heldout": "heldout",
    "fresh": "fresh",
    "fresh2": "fresh2",
    "fresh3": "fresh3",
}
PROMPTS = {
    "zh": (
        "你判断一段资料能不能回答访客的问题。",
        "资料：{text}\n问题：{q}\n这段资料里有这个问题的答案吗？只回答“是”或“否”。",
        "是",
        "否",
    ),
    "en": (
        "You judge whether a passage answers a visitor's question.",
        "Passage: {text}\nQuestion: {q}\nDoes the passage contain the answer to the question? "
        "Answer only Yes or No.",
        "Yes",
        "No",
    ),
}


def collect(sets: list[str], limit: int | None, data_dir: Path | None) -> list[dict]:
    """Every answered (not refused) question with the quote shown and whether it is good."""
    from kiosk_config import load_config
    from runtime.answer.evaluate import load_questions, score
    from runtime.answer.pipeline import AnswerPipeline
    from runtime.answer.service import build_service

    svc = build_service(load_config(), with_generator=False)
    items = []
    for name in sets:
        if name == "rgb":
            from runtime.answer.rgb import build_rgb_store, load_rgb
            from runtime.commands.shared_data import shared_data_dir

            rgb = load_rgb(shared_data_dir(data_dir))
            qs = rgb.questions
            scratch = tempfile.TemporaryDirectory(prefix="kiosk-rgb-")  # gone at exit
            p = AnswerPipeline(
                build_rgb_store(rgb, svc.pipeline.embedder, Path(scratch.name), say=lambda m: None),
                svc.pipeline.embedder,
                None,
                settings=svc.pipeline.settings,
                staff_handoff=svc.pipeline.staff_handoff,
            )
        else:
            qs = load_questions(ROOT / "kiosk_config/demo/eval" / f"{SETS[name]}_questions.jsonl")
            p = svc.pipeline
        n = 0
        for q in qs:
            p.cache.clear()
            a = p.answer(q.question, q.history)
            if a.path not in ("extractive", "faq"):
                continue
            started = time.perf_counter()
            qv, tv = svc.pipeline.embedder.embed_batch([a.rewritten or q.question, a.text])
            cosine = float(qv @ tv / ((qv @ qv) ** 0.5 * (tv @ tv) ** 0.5))
            items.append(
                {
                    "set": name,
                    "id": q.id,
                    "question": a.rewritten or q.question,
                    "lang": a.language,
                    "text": a.text,
                    "answerable": q.answerable,
                    "good": bool(score(q, a).facts),
                    "cosine": (cosine, (time.perf_counter() - started) * 1000),
                }
            )
            n += 1
            if limit and n >= limit:
                break
    return items


def judge(model_path: Path, items: list[dict], threads: int) -> list[tuple[float, float]]:
    """(yes-minus-no logit, ms) per item, with llama.cpp reading the GGUF weights."""
    import numpy as np
    from llama_cpp import Llama

    llm = Llama(
        model_path=str(model_path), n_ctx=1024, n_threads=threads, logits_all=True, verbose=False
    )

    def token(word: str) -> int:
        return llm.tokenize(word.encode(), add_bos=False, special=False)[0]

    out = []
    for it in items:
        system, user, yes, no = PROMPTS.get(it["lang"], PROMPTS["en"])
        prompt = (
            f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n"
            f"{user.format(text=it['text'][:600], q=it['question'])}<|im_end|>\n"
            "<|im_start|>assistant\n"
        )
        tokens = llm.tokenize(prompt.encode(), add_bos=False, special=True)
        started = time.perf_counter()
        llm.reset()
        llm.eval(tokens)
        row = np.asarray(llm.scores[llm.n_tokens - 1])
        out.append(
            (float(row[token(yes)] - row[token(no)]), (time.perf_counter() - started) * 1000)
        )
    return out


def auc(pos: list[float], neg: list[float]) -> float | None:
    if not pos or not neg:
        return None
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return round(wins / (len(pos) * len(neg)), 3)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default="fresh2,rgb", help="dev,heldout,fresh,fresh2,fresh3,rgb")
    ap.add_argument("--limit", type=int, default=60, help="answered questions per set")
    ap.add_argument("--models", default="qwen2.5-coder-0.5b-instruct,qwen2.5-coder-1.5b-instruct")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--data-dir", type=Path, default=None, help="default: $KIOSK_SHARED_DATA, ../shared/data"
    )
    ap.add_argument("--out", type=Path, default=ROOT / "bench-results" / "answerability.json")
    args = ap.parse_args()

    from kiosk_config import load_config
    from runtime.prepare.cache import prepared_variant_dir

    sets = [s for s in args.sets.split(",") if s]
    items = collect(sets, args.limit, args.data_dir)
    print(f"{len(items)} answered questions from {', '.join(sets)}", file=sys.stderr)
    cache = load_config().paths.model_cache
    results = []
    judges = [("reference: encoder cosine", None)]
    judges += [(m, m) for m in args.models.split(",") if m]
    for label, model in judges:
        if model is None:
            scored = [it["cosine"] for it in items]
        else:
            folder = prepared_variant_dir(cache, model, "gguf")
            print(f"judging with {model} (llama.cpp) ...", file=sys.stderr, flush=True)
            scored = judge(next(folder.glob("*.gguf")), items, args.threads)
        for name in [*sets, "all"]:
            rows = [
                (it, s) for it, s in zip(items, scored, strict=True) if name in ("all", it["set"])
            ]
            good = [s for it, (s, _) in rows if it["good"]]
            bad = [s for it, (s, _) in rows if not it["good"]]
            uncovered = [s for it, (s, _) in rows if not it["answerable"]]
            results.append(
                {
                    "model": label,
                    "set": name,
                    "good": len(good),
                    "bad": len(bad),
                    "uncovered": len(uncovered),
                    "auc_good_vs_bad": auc(good, bad),
                    "auc_good_vs_uncovered": auc(good, uncovered),
                    "ms_p50": round(statistics.median(ms for _, (_, ms) in rows), 1),
                }
            )
    print(
        f"{'model':32} {'set':8} {'good':>5} {'bad':>5} {'unc':>5} {'AUC g/b':>8} "
        f"{'AUC g/u':>8} {'ms p50':>8}"
    )
    for r in results:
        print(
            f"{r['model']:32} {r['set']:8} {r['good']:5} {r['bad']:5} {r['uncovered']:5} "
            f"{r['auc_good_vs_bad']!s:>8} {r['auc_good_vs_uncovered']!s:>8} {r['ms_p50']:8}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for it in items:
        it.pop("cosine")
    args.out.write_text(
        json.dumps({"items": items, "results": results}, indent=2, ensure_ascii=False)
    )
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
