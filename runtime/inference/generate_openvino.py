"""Generator on OpenVINO GenAI's LLMPipeline.

Why OpenVINO: it reaches Intel GPUs and NPUs with the same files, and on x86
CPUs it is the one backend that needs no torch to prepare. The fixed system
prompt's KV cache is reused by the default (stateful) pipeline itself: it
keeps the KV cache of the previous call and, when the next prompt starts with
the same tokens, prefills only the rest. Prompts are built with the model's
chat template, system prompt first, so consecutive turns share that prefix.
Measured on 2 cores (docs/generation.md): turns 2 and 3 behind a 320-token
system prompt got their first token in 0.37-0.48 s against 2.6 s cold. The
alternative, paged attention with ``enable_prefix_caching``
(``paged_attention=True``), was slower on CPU in every run here (prefill and
decode), so it is off by default.

A model folder holds an OpenVINO IR (``openvino_model.xml``) with tokenizer
and detokenizer IRs, as written by the ``openvino-genai-gguf`` recipe; a
folder holding a single ``*.gguf`` file OpenVINO GenAI can read also loads.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from runtime.errors import BackendUnavailableError, InferenceError, ModelNotPreparedError
from runtime.inference.base import GenerationRequest, Generator
from runtime.inference.generate_text import (
    StopScanner,
    chat_messages,
    deadline_for,
    threaded_stream,
)

log = logging.getLogger(__name__)


def _genai():
    try:
        import openvino_genai
    except ImportError as exc:
        raise BackendUnavailableError(
            f"OpenVINO GenAI cannot be imported ({exc})",
            hint="install the openvino extra: pip install 'kiosk-assistant[openvino]'",
        ) from None
    return openvino_genai


def model_path(model_dir: Path) -> Path:
    """What LLMPipeline is given: the folder with an IR, or the one GGUF file in it."""
    if (model_dir / "openvino_model.xml").is_file():
        return model_dir
    ggufs = sorted(model_dir.glob("*.gguf"))
    if len(ggufs) == 1:
        return ggufs[0]
    raise ModelNotPreparedError(
        f"{model_dir} holds no OpenVINO model (openvino_model.xml) and no single GGUF file",
        hint="run: kiosk models prepare <model-id> --variant openvino-int4",
    )


class OpenVinoGenerator(Generator):
    backend = "openvino"

    def __init__(
        self, pipeline, tokenizer, *, model_id: str, device: str, paged_attention: bool
    ) -> None:
        self._pipe = pipeline
        self._tokenizer = tokenizer
        self._lock = threading.Lock()  # one generate() at a time per pipeline
        self.model_id = model_id
        self.device = device
        self.paged_attention = paged_attention

    @classmethod
    def load(
        cls,
        model_dir: Path,
        *,
        device: str = "CPU",
        threads: int = 2,
        cache_dir: Path | None = None,
        paged_attention: bool = False,
        kv_cache_gb: float = 1.0,
        model_id: str | None = None,
    ) -> OpenVinoGenerator:
        """Load a prepared model. ``paged_attention`` switches to the continuous-batching
        pipeline with a prefix cache of ``kv_cache_gb`` (slower on CPU here; see above)."""
        genai = _genai()
        path = model_path(Path(model_dir))
        props: dict[str, object] = {}
        if device.upper().startswith("CPU"):
            props["INFERENCE_NUM_THREADS"] = int(threads)
        if cache_dir is not None and not device.upper().startswith("CPU"):
            Path(cache_dir).mkdir(parents=True, exist_ok=True)
            props["CACHE_DIR"] = str(cache_dir)
        if paged_attention:
            scheduler = genai.SchedulerConfig()
            scheduler.enable_prefix_caching = True
            scheduler.cache_size = max(1, int(round(kv_cache_gb)))
            props["scheduler_config"] = scheduler
        try:
            pipe = genai.LLMPipeline(str(path), device, **props)
        except RuntimeError as exc:
            raise InferenceError(
                f"OpenVINO GenAI could not load {path} on {device}: "
                f"{str(exc).splitlines()[0][:300]}",
                hint="prepare the model again (kiosk models prepare --force) or try another device",
            ) from None
        return cls(
            pipe,
            pipe.get_tokenizer(),
            model_id=model_id or Path(model_dir).parent.name,
            device=device,
            paged_attention=paged_attention,
        )

    def render_prompt(self, request: GenerationRequest) -> str:
        """The request through the model's own chat template, ready for generation."""
        return self._tokenizer.apply_chat_template(
            chat_messages(request), add_generation_prompt=True
        )

    def count_tokens(self, text: str) -> int:
        return int(self._tokenizer.encode(text, add_special_tokens=False).input_ids.get_shape()[-1])

    def stream(self, request: GenerationRequest) -> Iterator[str]:
        genai = _genai()
        prompt = self.render_prompt(request)
        config = genai.GenerationConfig()
        config.max_new_tokens = max(1, int(request.max_tokens))
        config.apply_chat_template = False
        if request.temperature > 0:
            config.do_sample = True
            config.temperature = float(request.temperature)
        if request.stop:
            config.stop_strings = set(request.stop)
            config.include_stop_str_in_output = True  # the scanner below cuts it, also mid-stream
        scanner = StopScanner(request.stop)
        deadline = deadline_for(request)
        stop_status = genai.StreamingStatus.STOP
        running = genai.StreamingStatus.RUNNING

        def run(emit) -> None:
            def on_piece(piece: str):
                text = scanner.feed(piece)
                if text and not emit(text):
                    return stop_status
                if scanner.stopped or (deadline is not None and time.monotonic() >= deadline):
                    return stop_status
                return running

            with self._lock:
                try:
                    self._pipe.generate(prompt, config, on_piece)
                except RuntimeError as exc:
                    raise InferenceError(
                        f"OpenVINO GenAI failed while generating with {self.model_id}: "
                        f"{str(exc)[:300]}",
                        hint="the generator will be restarted; check `kiosk doctor`",
                    ) from None
            tail = scanner.flush()
            if tail:
                emit(tail)

        yield from threaded_stream(run)

    def close(self) -> None:
        self._pipe = None
