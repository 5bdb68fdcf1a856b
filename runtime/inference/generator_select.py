"""Which prepared generator answers visitors on this box, chosen by measurement.

Two tiers exist (models/*.toml, ``accuracy_rank`` in the variant options): the
0.5B default and a 1.5B that is right more often but about three times slower.
Which one fits depends on the box, so each prepared generator is measured
where it runs (``measure_generator``: first-token time at the default context
of about 300 prompt tokens with the system prompt cached, and decode rate) and
the results are kept in ``<data_dir>/generators/measurements.json``.
``choose_generator`` is a pure function of the config and those measurements:
the most accurate candidate whose first token fits the turn deadline and whose
decode rate keeps up with a reader, the faster backend between equals, unless
``[models] generator`` pins one (``"model-id"`` or ``"model-id:backend"``).
`kiosk doctor` shows the choice and its reasons.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from runtime.errors import ConfigError, ModelNotPreparedError
from runtime.inference.base import GenerationRequest, Generator

log = logging.getLogger(__name__)

BACKEND_BY_FORMAT = {"openvino": "openvino", "onnxruntime-genai": "onnxruntime-genai"}
MEASUREMENTS_FILE = "measurements.json"
DEFAULT_CONTEXT_TOKENS = 300
MIN_DECODE_TPS = 8.0  # below this the streamed answer falls behind a reader


@dataclass(frozen=True)
class Candidate:
    """A prepared generator variant that could answer visitors."""

    model_id: str
    variant: str
    backend: str
    accuracy_rank: int
    languages: tuple[str, ...] = ()
    default: bool = False  # the manifest's default tier: what an unmeasured box runs

    @property
    def key(self) -> str:
        return f"{self.model_id}:{self.backend}"


@dataclass(frozen=True)
class Measurement:
    """One generator measured on one box."""

    model_id: str
    backend: str
    variant: str
    first_token_s: float  # at ~prompt_tokens prompt tokens, system prompt already cached
    decode_tps: float
    prompt_tokens: int
    cold_first_token_s: float | None = None  # same prompt, nothing cached
    load_s: float | None = None
    machine: str = ""
    measured_at: float = 0.0
    error: str | None = None  # set when loading or the smoke check failed

    @property
    def key(self) -> str:
        return f"{self.model_id}:{self.backend}"


@dataclass(frozen=True)
class GeneratorChoice:
    model_id: str | None
    backend: str | None
    variant: str | None
    pinned: bool
    reasons: tuple[str, ...]
    measurement: Measurement | None = None
    considered: tuple[str, ...] = field(default_factory=tuple)

    def describe(self) -> dict[str, object]:
        m = self.measurement
        return {
            "generator": f"{self.model_id}:{self.backend}" if self.model_id else "none",
            "pinned": self.pinned,
            "first_token_s": None if m is None else round(m.first_token_s, 3),
            "decode_tokens_per_s": None if m is None else round(m.decode_tps, 1),
            "reasons": list(self.reasons),
        }


def machine_fingerprint(threads: int) -> str:
    """What makes measurements comparable: CPU model, core count, threads used."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu} | {os.cpu_count()} cpus | {threads} threads"


# --- candidates from manifests ------------------------------------------------------


def candidates_from_manifests(
    manifests: dict, cache: Path, *, prepared_only: bool = True
) -> list[Candidate]:
    """Generation variants that a backend here can run, prepared in ``cache``."""
    from runtime.prepare.cache import read_record

    found = []
    for manifest in manifests.values():
        if manifest.task != "generation":
            continue
        for variant in manifest.variants:
            backend = BACKEND_BY_FORMAT.get(variant.format)
            if backend is None:
                continue
            if prepared_only and read_record(cache, manifest.id, variant.name) is None:
                continue
            found.append(
                Candidate(
                    manifest.id,
                    variant.name,
                    backend,
                    int(variant.options.get("accuracy_rank", 0)),
                    tuple(manifest.languages),
                    manifest.default,
                )
            )
    return found


def parse_pin(value: str) -> tuple[str, str | None] | None:
    """``"auto"`` → None; ``"model"`` → (model, None); ``"model:backend"`` → (model, backend)."""
    value = value.strip()
    if not value or value == "auto":
        return None
    model, _, backend = value.partition(":")
    if backend and backend not in BACKEND_BY_FORMAT.values():
        raise ConfigError(
            f"[models] generator = {value!r} names an unknown backend {backend!r}",
            hint="use 'auto', a model id, or model-id:backend with a backend of "
            f"{sorted(set(BACKEND_BY_FORMAT.values()))}",
        )
    return model, backend or None


# --- the choice ---------------------------------------------------------------------


def choose_generator(
    cfg,
    measurements: Iterable[Measurement],
    *,
    candidates: Sequence[Candidate] | None = None,
    min_decode_tps: float = MIN_DECODE_TPS,
) -> GeneratorChoice:
    """Pick the generator for this box. Pure: reads only ``cfg`` and the arguments.

    ``candidates`` default to the prepared generation variants in the model cache.
    Rules, in order: a pin in ``[models] generator`` wins when it is prepared
    and not broken; candidates must speak every configured kiosk language
    (unless pinned); a candidate fits when its measured first-token time is
    within ``[answer] deadline_ms`` and it decodes at least ``min_decode_tps``;
    among those that fit, the highest accuracy rank wins, then the faster short
    answer (first token + 31 decoded tokens). When none fits, the fastest short
    answer wins (the answer pipeline's degrade ladder covers the deadline).
    Unmeasured candidates are used only when nothing was measured.
    """
    if candidates is None:
        from runtime.prepare.manifest import load_manifests

        candidates = candidates_from_manifests(
            load_manifests(cfg.manifest_dir), cfg.paths.model_cache
        )
    by_key = {}
    for m in measurements:
        by_key[m.key] = m  # the last measurement of a generator counts
    deadline_s = cfg.answer.deadline_ms / 1000.0
    reasons: list[str] = []
    considered = tuple(c.key for c in candidates)

    pin = parse_pin(cfg.models.generator)
    if pin is not None:
        model, backend = pin
        pinned = [
            c
            for c in candidates
            if c.model_id == model and (backend is None or c.backend == backend)
        ]
        if not pinned:
            raise ModelNotPreparedError(
                f"[models] generator = {cfg.models.generator!r} is not a prepared generator here",
                hint=f"prepared: {list(considered) or 'none'}; run: kiosk models prepare {model}",
            )
        usable = [c for c in pinned if not (by_key.get(c.key) and by_key[c.key].error)]
        pool = usable or pinned
        best = min(pool, key=lambda c: _speed_key(by_key.get(c.key)))
        reasons.append(f"pinned by [models] generator = {cfg.models.generator!r}")
        m = by_key.get(best.key)
        if m is not None and m.error:
            reasons.append(f"warning: its last measurement failed: {m.error}")
        elif m is not None and m.first_token_s > deadline_s:
            reasons.append(
                f"warning: first token {m.first_token_s:.2f}s is over the "
                f"{deadline_s:.2f}s deadline"
            )
        return GeneratorChoice(
            best.model_id, best.backend, best.variant, True, tuple(reasons), m, considered
        )

    if not candidates:
        return GeneratorChoice(
            None,
            None,
            None,
            False,
            ("no generator is prepared here (run: kiosk models prepare)",),
            None,
            considered,
        )
    languages = set(cfg.kiosk.languages)
    speaking = [c for c in candidates if languages <= set(c.languages)]
    for c in candidates:
        if c not in speaking:
            reasons.append(
                f"{c.key}: skipped, speaks {list(c.languages)} not all of {sorted(languages)}"
            )
    if not speaking:
        return GeneratorChoice(
            None,
            None,
            None,
            False,
            (*reasons, "no prepared generator speaks the kiosk's languages"),
            None,
            considered,
        )

    measured = [(c, by_key[c.key]) for c in speaking if c.key in by_key]
    broken = [(c, m) for c, m in measured if m.error]
    for c, m in broken:
        reasons.append(f"{c.key}: skipped, measurement failed: {m.error}")
    healthy = [(c, m) for c, m in measured if not m.error]
    if not healthy:
        if measured:  # everything measured is broken: nothing to pick
            unmeasured = [c for c in speaking if c.key not in by_key]
            if not unmeasured:
                return GeneratorChoice(
                    None,
                    None,
                    None,
                    False,
                    (*reasons, "every prepared generator failed"),
                    None,
                    considered,
                )
        else:
            unmeasured = speaking
        # Unmeasured, a bigger tier may miss every deadline on this box: run the
        # default tier until a measurement shows a more accurate one fits.
        best = max(
            unmeasured,
            key=lambda c: (
                c.default,
                -c.accuracy_rank if c.default else c.accuracy_rank,
                c.backend == "openvino",
            ),
        )
        reasons.append(
            f"{best.key}: not measured yet, chosen as the "
            + ("default tier" if best.default else f"most accurate (rank {best.accuracy_rank})")
            + " (run `kiosk doctor --measure` to choose by measurement)"
        )
        return GeneratorChoice(
            best.model_id, best.backend, best.variant, False, tuple(reasons), None, considered
        )

    fits = []
    for c, m in healthy:
        ok_first = m.first_token_s <= deadline_s
        ok_decode = m.decode_tps >= min_decode_tps
        verdict = "fits" if ok_first and ok_decode else "too slow"
        reasons.append(
            f"{c.key}: first token {m.first_token_s:.2f}s at {m.prompt_tokens} tokens "
            f"(deadline {deadline_s:.2f}s), decode {m.decode_tps:.1f} tok/s "
            f"(need {min_decode_tps:.0f}): {verdict}"
        )
        if ok_first and ok_decode:
            fits.append((c, m))
    if fits:
        best_c, best_m = max(fits, key=lambda cm: (cm[0].accuracy_rank, -short_answer_s(cm[1])))
        reasons.append(
            f"chose {best_c.key}: most accurate (rank {best_c.accuracy_rank}) "
            "that fits the deadline"
        )
    else:
        best_c, best_m = min(healthy, key=lambda cm: short_answer_s(cm[1]))
        reasons.append(
            f"chose {best_c.key}: none fits the deadline, so the fastest short answer "
            f"({short_answer_s(best_m):.2f}s for {SHORT_ANSWER_TOKENS} tokens)"
        )
    return GeneratorChoice(
        best_c.model_id, best_c.backend, best_c.variant, False, tuple(reasons), best_m, considered
    )


SHORT_ANSWER_TOKENS = 32  # one or two sentences: what a visitor waits for


def short_answer_s(m: Measurement) -> float:
    """Seconds to a short answer: first token plus decoding the rest. Breaks ties between
    backends where one prefills faster and the other decodes faster."""
    if m.error or m.decode_tps <= 0:
        return float("inf")
    return m.first_token_s + (SHORT_ANSWER_TOKENS - 1) / m.decode_tps


def _speed_key(m: Measurement | None) -> tuple[float, float]:
    if m is None or m.error:
        return (float("inf"), 0.0)
    return (m.first_token_s, -m.decode_tps)


# --- measuring ----------------------------------------------------------------------

MEASURE_SYSTEM = (
    "You are the information assistant of a public service hall. Answer the visitor's question "
    "only from the numbered sources. Cite sources like [1]. "
    "If the sources do not answer it, say so. "
    "Reply in the visitor's language, in at most three short sentences."
)
_FILLER = (
    "[{n}] The service hall opens at 8:30 and closes at 17:00 on weekdays; on Saturdays it opens "
    "from 9:00 to 12:00. Passport photos can be taken at the booth near the east entrance "
    "for a fee "
    "of 35 yuan, paid by card or mobile payment. "
)
MEASURE_QUESTION = "Explain in detail when the hall is open on each day and how to pay for photos."


def measurement_prompt(
    gen: Generator, prompt_tokens: int = DEFAULT_CONTEXT_TOKENS
) -> GenerationRequest:
    """A request of about ``prompt_tokens`` tokens (system + passages + question)."""
    count = getattr(gen, "count_tokens", None)
    passages: list[str] = []
    while True:
        text = "Sources:\n" + "".join(passages) + "\nQuestion: " + MEASURE_QUESTION
        size = (
            count(MEASURE_SYSTEM + text) + 20
            if count
            else len((MEASURE_SYSTEM + text).split()) * 4 // 3
        )
        if size >= prompt_tokens or len(passages) > 200:
            return GenerationRequest(prompt=text, system=MEASURE_SYSTEM, max_tokens=48)
        passages.append(_FILLER.format(n=len(passages) + 1))


def timed_stream(gen: Generator, request: GenerationRequest) -> tuple[float, float, str]:
    """(first-piece seconds, total seconds, text)."""
    start = time.perf_counter()
    first = None
    pieces = []
    for piece in gen.stream(request):
        if first is None:
            first = time.perf_counter() - start
        pieces.append(piece)
    total = time.perf_counter() - start
    return (first if first is not None else total), total, "".join(pieces)


def measure_generator(
    gen: Generator,
    *,
    variant: str = "",
    prompt_tokens: int = DEFAULT_CONTEXT_TOKENS,
    threads: int = 2,
    load_s: float | None = None,
) -> Measurement:
    """Measure a loaded generator: cold and warm (system prompt cached) first token, decode rate.

    The first run also pays one-off compilation; it is discarded. The warm run
    uses other passages and another question behind the same system prompt, as a
    real next turn does, so only the system prompt can come from the cache.
    """
    request = measurement_prompt(gen, prompt_tokens)
    timed_stream(
        gen, GenerationRequest(prompt="Hello.", system="Warm-up.", max_tokens=4)
    )  # compile, allocate
    cold_first, _, _ = timed_stream(gen, request)
    # A real next turn shares only the system prompt: new passages, new question.
    second = GenerationRequest(
        prompt=request.prompt.replace("Sources:\n", "Sources (updated):\n", 1)
        .replace("8:30", "8:45")
        .replace(
            MEASURE_QUESTION,
            "When does the hall open on Saturday, and what does a photo cost? Explain.",
        ),
        system=request.system,
        max_tokens=request.max_tokens,
    )
    first, total, text = timed_stream(gen, second)
    count = getattr(gen, "count_tokens", None)
    n_tokens = count(text) if count else max(1, len(text.split()))
    decode_tps = (n_tokens - 1) / (total - first) if n_tokens > 1 and total > first else 0.0
    return Measurement(
        model_id=gen.model_id,
        backend=gen.backend,
        variant=variant,
        first_token_s=first,
        decode_tps=decode_tps,
        prompt_tokens=(count(request.system + request.prompt) if count else prompt_tokens),
        cold_first_token_s=cold_first,
        load_s=load_s,
        machine=machine_fingerprint(threads),
        measured_at=time.time(),
    )


# --- storage ------------------------------------------------------------------------


def measurements_path(cfg) -> Path:
    return cfg.paths.data_dir / "generators" / MEASUREMENTS_FILE


def load_measurements(path: Path, *, machine: str | None = None) -> list[Measurement]:
    """Stored measurements (those of another machine are dropped); [] when none or unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        rows = [Measurement(**row) for row in data.get("measurements", [])]
    except FileNotFoundError:
        return []
    except (OSError, ValueError, TypeError) as exc:
        log.warning("ignoring unreadable generator measurements %s: %s", path, exc)
        return []
    return [m for m in rows if machine is None or m.machine == machine]


def save_measurements(path: Path, measurements: Sequence[Measurement]) -> None:
    """Write atomically (temp file + rename) so a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(
        json.dumps({"measurements": [asdict(m) for m in measurements]}, indent=2), encoding="utf-8"
    )
    os.replace(tmp, path)


def load_generator(cfg, candidate: Candidate) -> Generator:
    """Load a prepared candidate with the config's threads."""
    from runtime.prepare.cache import prepared_variant_dir

    folder = prepared_variant_dir(cfg.paths.model_cache, candidate.model_id, candidate.variant)
    if candidate.backend == "openvino":
        from runtime.inference.generate_openvino import OpenVinoGenerator

        return OpenVinoGenerator.load(
            folder,
            threads=cfg.devices.threads,
            model_id=candidate.model_id,
            cache_dir=cfg.compiled_cache_dir,
        )
    from runtime.inference.generate_ortgenai import OrtGenaiGenerator

    return OrtGenaiGenerator.load(folder, threads=cfg.devices.threads, model_id=candidate.model_id)


def measure_prepared(cfg, *, candidates: Sequence[Candidate] | None = None) -> list[Measurement]:
    """Load and measure every prepared generator here, store and return the results.

    A generator that fails to load or answers garbage is recorded with ``error``
    so the choice skips it.
    """
    from runtime.errors import KioskError
    from runtime.inference.generate_text import looks_like_garbage

    if candidates is None:
        from runtime.prepare.manifest import load_manifests

        candidates = candidates_from_manifests(
            load_manifests(cfg.manifest_dir), cfg.paths.model_cache
        )
    machine = machine_fingerprint(cfg.devices.threads)
    pin = parse_pin(cfg.models.generator)
    languages = set(cfg.kiosk.languages)
    # A generator that cannot speak the kiosk's languages is never chosen: don't spend a load on it.
    candidates = [
        c for c in candidates if languages <= set(c.languages) or (pin and pin[0] == c.model_id)
    ]
    results = []
    for c in candidates:
        start = time.perf_counter()
        try:
            gen = load_generator(cfg, c)
            load_s = time.perf_counter() - start
            smoke = gen.generate(GenerationRequest(prompt=SMOKE_QUESTION, max_tokens=24))
            if looks_like_garbage(smoke, language="en"):
                raise ValueError(f"smoke answer looks like garbage: {smoke[:60]!r}")
            results.append(
                measure_generator(
                    gen, variant=c.variant, threads=cfg.devices.threads, load_s=load_s
                )
            )
            gen.close()
        except (KioskError, ValueError, RuntimeError) as exc:
            results.append(
                Measurement(
                    c.model_id,
                    c.backend,
                    c.variant,
                    float("inf"),
                    0.0,
                    0,
                    machine=machine,
                    measured_at=time.time(),
                    error=str(exc).splitlines()[0],
                )
            )
    save_measurements(measurements_path(cfg), results)
    return results


SMOKE_QUESTION = "What is the capital of France? Answer in one short sentence."


def doctor_report(cfg, *, measure: bool = False) -> dict[str, object]:
    """What `kiosk doctor` shows about generation: the choice, its reasons and the numbers.

    ``measure=True`` (``kiosk doctor --measure``) measures every prepared
    generator first, which takes about a minute per generator on 2 cores;
    otherwise the stored measurements of this machine are used.
    """
    from runtime.errors import KioskError

    machine = machine_fingerprint(cfg.devices.threads)
    try:
        ms = (
            measure_prepared(cfg)
            if measure
            else load_measurements(measurements_path(cfg), machine=machine)
        )
        choice = choose_generator(cfg, ms)
    except KioskError as exc:
        return {"generator": "none", "error": str(exc), "measurements": []}
    report = choice.describe()
    report["measurements"] = [
        {
            "generator": m.key,
            "first_token_s": None if m.error else round(m.first_token_s, 3),
            "cold_first_token_s": None
            if m.cold_first_token_s is None
            else round(m.cold_first_token_s, 3),
            "decode_tokens_per_s": round(m.decode_tps, 1),
            "prompt_tokens": m.prompt_tokens,
            "error": m.error,
        }
        for m in ms
    ]
    report["measurements_file"] = str(measurements_path(cfg))
    return report


def load_chosen_generator(cfg, *, smoke: bool = True) -> tuple[Generator | None, GeneratorChoice]:
    """Load the chosen generator; if it fails to load or its smoke answer is garbage, fall back.

    Each failure is recorded (in memory, as a measurement with ``error``) and the
    choice is made again without it, so a broken conversion costs one load, not
    the visitor's answer. Returns (None, choice) when nothing usable is left;
    the choice's reasons then say why.
    """
    from runtime.errors import KioskError
    from runtime.inference.generate_text import looks_like_garbage
    from runtime.prepare.manifest import load_manifests

    candidates = candidates_from_manifests(load_manifests(cfg.manifest_dir), cfg.paths.model_cache)
    machine = machine_fingerprint(cfg.devices.threads)
    measurements = load_measurements(measurements_path(cfg), machine=machine)
    failures: list[Measurement] = []
    notes: list[str] = []
    for _ in range(len(candidates) + 1):
        choice = choose_generator(cfg, [*measurements, *failures], candidates=candidates)
        if choice.model_id is None:
            return None, GeneratorChoice(
                None, None, None, choice.pinned, (*notes, *choice.reasons), None, choice.considered
            )
        cand = next(
            c for c in candidates if c.model_id == choice.model_id and c.backend == choice.backend
        )
        if any(
            f.key == cand.key for f in failures
        ):  # a pin on a broken generator: nothing else allowed
            return None, GeneratorChoice(
                None, None, None, True, (*notes, *choice.reasons), None, choice.considered
            )
        try:
            gen = load_generator(cfg, cand)
            if smoke:
                answer = gen.generate(GenerationRequest(prompt=SMOKE_QUESTION, max_tokens=24))
                if looks_like_garbage(answer, language="en"):
                    gen.close()
                    raise ValueError(f"smoke answer looks like garbage: {answer[:60]!r}")
        except (KioskError, ValueError, RuntimeError) as exc:
            reason = str(exc).splitlines()[0]
            log.warning("generator %s failed at load, falling back: %s", cand.key, reason)
            notes.append(f"{cand.key}: failed at load ({reason}); fell back")
            failures.append(
                Measurement(
                    cand.model_id,
                    cand.backend,
                    cand.variant,
                    float("inf"),
                    0.0,
                    0,
                    machine=machine,
                    measured_at=time.time(),
                    error=reason,
                )
            )
            continue
        return gen, GeneratorChoice(
            choice.model_id,
            choice.backend,
            choice.variant,
            choice.pinned,
            (*notes, *choice.reasons),
            choice.measurement,
            choice.considered,
        )
    return None, GeneratorChoice(None, None, None, False, tuple(notes), None, ())
