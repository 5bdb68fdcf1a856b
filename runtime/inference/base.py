"""Base classes, one per model kind. Each has one core method; the rest is built on it."""

from __future__ import annotations

import abc
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np


class ModelRunner(abc.ABC):
    """What every loaded model says about itself (shown by /healthz and `kiosk doctor`)."""

    kind: ClassVar[str] = "model"
    model_id: str
    backend: str  # library name: "onnxruntime", "openvino", "numpy", ...
    device: str  # "CPU", "GPU", "NPU" (or "GPU.0" style names from the backend)

    def describe(self) -> dict[str, str]:
        return {
            "kind": self.kind,
            "model": self.model_id,
            "backend": self.backend,
            "device": self.device,
        }

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release native resources. Safe to call twice."""


class Embedder(ModelRunner):
    """Text → L2-normalised float32 vectors in one space for all supported languages."""

    kind = "embedder"
    dim: int

    @abc.abstractmethod
    def embed_batch(self, texts: Sequence[str]) -> np.ndarray:
        """Return an array of shape (len(texts), dim), float32, each row of unit length."""

    def embed(self, text: str) -> np.ndarray:
        return self.embed_batch([text])[0]


@dataclass(frozen=True)
class GenerationRequest:
    """One generation call. Greedy unless temperature > 0."""

    prompt: str
    max_tokens: int = 128
    stop: tuple[str, ...] = ()
    max_time_s: float | None = None
    temperature: float = 0.0
    system: str | None = None  # fixed system prompt whose KV cache a backend may reuse
    extra: dict[str, object] = field(default_factory=dict)


class Generator(ModelRunner):
    """Prompt → streamed text pieces."""

    kind = "generator"

    @abc.abstractmethod
    def stream(self, request: GenerationRequest) -> Iterator[str]:
        """Yield text pieces as they are decoded; stop at a stop string, max tokens or max time."""

    def generate(self, request: GenerationRequest) -> str:
        return "".join(self.stream(request))


@dataclass(frozen=True)
class Transcript:
    text: str
    language: str
    duration_s: float
    segments: tuple[tuple[float, float, str], ...] = ()


class Transcriber(ModelRunner):
    """16 kHz mono float32 audio → text."""

    kind = "transcriber"

    @abc.abstractmethod
    def transcribe(
        self, audio: np.ndarray, *, language: str | None = None, prompt: str | None = None
    ) -> Transcript:
        ...


@dataclass(frozen=True)
class SpeechAudio:
    samples: np.ndarray  # int16 mono
    sample_rate: int


class Synthesizer(ModelRunner):
    """Text in one language → speech audio."""

    kind = "synthesizer"
    languages: tuple[str, ...]

    @abc.abstractmethod
    def synthesize(self, text: str, *, language: str) -> SpeechAudio:
        ...


class Reranker(ModelRunner):
    """(query, passages) → one relevance score per passage, higher is better."""

    kind = "reranker"

    @abc.abstractmethod
    def score(self, query: str, passages: Sequence[str]) -> np.ndarray:
        ...
