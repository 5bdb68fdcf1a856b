"""English neural voice: hibari-tts (Apache-2.0), a 7.9 MB int8 ONNX voice distilled from
Kokoro-82M.

The ONNX file comes from the prepared model cache (models/hibari-en.toml pins its
sha256); the phonemizer (lexicons, out-of-vocabulary net, tagger) is the
installed ``hibari`` package, pinned in the speech extra. Only the bundled voice
is used: hibari downloads its other voices from the internet on first use, which
this class never asks for (it always passes an explicit model path).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from runtime.errors import BackendUnavailableError, InferenceError
from runtime.inference.base import SpeechAudio, Synthesizer

log = logging.getLogger(__name__)

VARIANT = "onnx-int8"


class HibariSynthesizer(Synthesizer):
    """Text in English → 24 kHz int16 speech, sentence by sentence."""

    backend = "onnxruntime"
    device = "CPU"
    languages = ("en",)

    def __init__(
        self,
        model_path: Path,
        *,
        model_id: str = "hibari-en",
        threads: int = 1,
        seed: int | None = 0,
        warm_up: bool = True,
    ):
        try:
            from hibari import Hibari
        except ImportError:
            raise BackendUnavailableError(
                "hibari-tts is not installed",
                hint="pip install 'kiosk-assistant[speech]' (hibari-tts==0.2.1)",
            ) from None
        self.model_id = model_id
        self.seed = seed
        try:
            self._tts = Hibari(
                model=str(model_path), threads=threads
            )  # explicit path: no download, ever
        except Exception as exc:  # onnxruntime raises its own exception types
            raise InferenceError(
                f"voice {model_id} failed to load from {model_path}: {exc}",
                hint=f"run: kiosk models prepare {model_id} --force",
            ) from exc
        self.sample_rate = int(self._tts.sample_rate)
        if warm_up:
            # hibari loads its lexicons and tagger on first use (about a second); do it at load time
            # so the first sentence of the first answer is not the one that pays for it.
            self._tts("Ready.", seed=0)

    @classmethod
    def from_config(cls, cfg) -> HibariSynthesizer:
        from runtime.prepare.cache import prepared_variant_dir

        folder = prepared_variant_dir(cfg.paths.model_cache, cfg.models.synthesizer_en, VARIANT)
        return cls(folder / "hibari.onnx", model_id=cfg.models.synthesizer_en, threads=1)

    def split_sentences(self, text: str) -> list[str]:
        return self._tts.split_sentences(text)

    def _pcm(self, wav: np.ndarray) -> np.ndarray:
        return (np.clip(wav, -1.0, 1.0) * 32767.0).astype(np.int16)

    def stream(self, text: str) -> Iterator[SpeechAudio]:
        """One chunk of audio per sentence, each as soon as it is synthesised."""
        try:
            for wav in self._tts.stream(text, seed=self.seed):
                yield SpeechAudio(self._pcm(wav), self.sample_rate)
        except (RuntimeError, ValueError, KeyError) as exc:
            raise InferenceError(f"voice {self.model_id} failed on {text[:40]!r}: {exc}") from exc

    def synthesize(self, text: str, *, language: str = "en") -> SpeechAudio:
        if language != "en":
            raise InferenceError(
                f"voice {self.model_id} speaks English only, not {language!r}",
                hint="use the espeak-ng voice for Chinese",
            )
        parts = [a.samples for a in self.stream(text)]
        samples = np.concatenate(parts) if parts else np.zeros(0, np.int16)
        return SpeechAudio(samples, self.sample_rate)
