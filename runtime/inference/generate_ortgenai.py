"""Generator on onnxruntime-genai.

Why onnxruntime-genai: on 2 x86 cores it decodes the int4 Qwen models faster
than OpenVINO (45-50 against 33-39 tokens/s for the 0.5B), though it prefills
more slowly. Its generator keeps the KV cache between calls and can rewind it
(``Generator.rewind_to``), so each request rewinds to the longest token prefix
it shares with the previous one (at least the fixed system prompt) and
prefills only the rest.

A model folder is what the onnxruntime-genai model builder writes
(``genai_config.json``, ``model.onnx``, tokenizer files), produced by the
``ortgenai-builder`` recipe.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from runtime.errors import BackendUnavailableError, InferenceError, ModelNotPreparedError
from runtime.inference.base import GenerationRequest, Generator
from runtime.inference.generate_text import StopScanner, chat_messages, deadline_for

log = logging.getLogger(__name__)


def _og():
    try:
        import onnxruntime_genai
    except ImportError as exc:
        raise BackendUnavailableError(
            f"onnxruntime-genai cannot be imported ({exc})",
            hint="install the onnxruntime-genai extra: pip install 'kiosk-assistant[ortgenai]'",
        ) from None
    return onnxruntime_genai


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class OrtGenaiGenerator(Generator):
    backend = "onnxruntime-genai"

    def __init__(
        self,
        model,
        tokenizer,
        *,
        model_id: str,
        device: str,
        context_tokens: int,
        reuse_prefix: bool,
    ) -> None:
        self._model = model
        self._tokenizer = tokenizer
        self._lock = threading.Lock()
        self._state = None  # og.Generator holding the KV cache of ``_cached`` tokens
        self._cached: list[int] = []
        self._sampling = False
        self.model_id = model_id
        self.device = device
        self.context_tokens = context_tokens
        self.reuse_prefix = reuse_prefix
        self.last_prefill_tokens = 0  # tokens prefilled by the last request (tests, benchmarks)

    @classmethod
    def load(
        cls,
        model_dir: Path,
        *,
        device: str = "CPU",
        threads: int = 2,
        context_tokens: int = 4096,
        reuse_prefix: bool = True,
        model_id: str | None = None,
    ) -> OrtGenaiGenerator:
        og = _og()
        model_dir = Path(model_dir)
        if not (model_dir / "genai_config.json").is_file():
            raise ModelNotPreparedError(
                f"{model_dir} holds no onnxruntime-genai model (genai_config.json)",
                hint="run: kiosk models prepare <model-id> --variant ortgenai-int4",
            )
        if not device.upper().startswith("CPU"):
            raise InferenceError(
                f"the onnxruntime-genai generator runs on CPU only here, not {device}",
                hint="use the OpenVINO generator for GPU and NPU",
            )
        try:
            config = og.Config(str(model_dir))
            config.clear_providers()
            config.overlay(
                json.dumps(
                    {
                        "model": {
                            "decoder": {
                                "session_options": {
                                    "intra_op_num_threads": int(threads),
                                    "inter_op_num_threads": 1,
                                }
                            }
                        }
                    }
                )
            )
            model = og.Model(config)
            tokenizer = og.Tokenizer(model)
        except Exception as exc:  # noqa: BLE001 - onnxruntime-genai raises plain RuntimeError/OrtException
            raise InferenceError(
                f"onnxruntime-genai could not load {model_dir}: {str(exc).splitlines()[0][:300]}",
                hint="prepare it again: kiosk models prepare MODEL --variant ortgenai-int4 --force",
            ) from None
        return cls(
            model,
            tokenizer,
            model_id=model_id or model_dir.parent.name,
            device="CPU",
            context_tokens=context_tokens,
            reuse_prefix=reuse_prefix,
        )

    def render_prompt(self, request: GenerationRequest) -> str:
        return self._tokenizer.apply_chat_template(
            json.dumps(chat_messages(request), ensure_ascii=False), add_generation_prompt=True
        )

    def count_tokens(self, text: str) -> int:
        return len(self._tokenizer.encode(text))

    def _fresh_state(self, sampling: bool, temperature: float):
        og = _og()
        params = og.GeneratorParams(self._model)
        options: dict[str, object] = {"max_length": self.context_tokens, "do_sample": sampling}
        if sampling:
            options["temperature"] = temperature
        params.set_search_options(**options)
        self._cached = []
        self._sampling = sampling
        return og.Generator(self._model, params)

    def _prefill(self, tokens: list[int], request: GenerationRequest):
        """Bring the KV cache to ``tokens``, reusing the longest prefix already cached."""
        sampling = request.temperature > 0
        state = self._state
        keep = (
            _common_prefix(self._cached, tokens) if (state is not None and self.reuse_prefix) else 0
        )
        keep = min(keep, len(tokens) - 1)  # at least one new token so there are logits to sample
        if state is None or sampling != self._sampling or sampling or keep == 0:
            state = self._fresh_state(sampling, request.temperature)
            keep = 0
        elif keep < len(self._cached):
            state.rewind_to(keep)
        self._state = state
        new = tokens[keep:]
        self.last_prefill_tokens = len(new)
        state.append_tokens(new)
        self._cached = list(tokens)
        return state

    def stream(self, request: GenerationRequest) -> Iterator[str]:
        start = time.monotonic()
        deadline = deadline_for(request, start)
        tokens = [int(t) for t in self._tokenizer.encode(self.render_prompt(request))]
        budget = self.context_tokens - len(tokens)
        if budget <= 0:
            raise InferenceError(
                f"the prompt has {len(tokens)} tokens; {self.model_id} is loaded with a context of "
                f"{self.context_tokens}",
                hint="shorten the retrieved context or raise context_tokens",
            )
        max_new = min(max(1, int(request.max_tokens)), budget)
        scanner = StopScanner(request.stop)
        with self._lock:
            try:
                state = self._prefill(tokens, request)
                decoder = self._tokenizer.create_stream()
                for _ in range(max_new):
                    if state.is_done():
                        break
                    state.generate_next_token()
                    token = int(state.get_next_tokens()[0])
                    self._cached.append(token)
                    text = scanner.feed(decoder.decode(token))
                    if text:
                        yield text
                    if scanner.stopped or (deadline is not None and time.monotonic() >= deadline):
                        break
                tail = scanner.flush()
                if tail:
                    yield tail
            except GeneratorExit:
                raise
            except Exception as exc:  # noqa: BLE001 - native errors surface as RuntimeError
                self._state, self._cached = None, []
                raise InferenceError(
                    f"onnxruntime-genai failed while generating with {self.model_id}: "
                    f"{str(exc)[:300]}",
                    hint="the generator will be restarted; check `kiosk doctor`",
                ) from None
            finally:
                # A consumer that stopped early leaves the state consistent: keep what it holds.
                if self._state is not None:
                    self._cached = self._cached[: int(self._state.token_count())]

    def close(self) -> None:
        self._state = None
        self._model = None
