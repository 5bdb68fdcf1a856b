"""Streaming voice activity: faster-whisper's bundled Silero VAD (v6 ONNX), fed window by window.

faster-whisper runs Silero over a whole file at once; the model is recurrent
(state ``h``, ``c``) over 512-sample windows, each prefixed with the previous
window's last 64 samples. Carrying that state and context between calls gives
exactly the same probabilities as the whole-file run (checked in
tests/unit/test_speech_vad.py), so a microphone stream can be judged as it
arrives, 32 ms at a time, with no look-ahead.
"""

from __future__ import annotations

import numpy as np

from runtime.errors import BackendUnavailableError

WINDOW = 512  # samples at 16 kHz: 32 ms
CONTEXT = 64
WINDOW_MS = WINDOW * 1000 // 16000


def _silero_session():
    try:
        from faster_whisper.vad import get_vad_model
    except ImportError:
        raise BackendUnavailableError(
            "faster-whisper (for its Silero VAD) is not installed",
            hint="pip install 'kiosk-assistant[speech]'",
        ) from None
    return get_vad_model().session  # cached once per process by faster-whisper


class StreamingVad:
    """Speech probability per 32 ms window of a 16 kHz stream; state carries across calls."""

    def __init__(self, session=None) -> None:
        self._session = session if session is not None else _silero_session()
        self.reset()

    def reset(self) -> None:
        self._h = np.zeros((1, 1, 128), np.float32)
        self._c = np.zeros((1, 1, 128), np.float32)
        self._context = np.zeros(CONTEXT, np.float32)
        self._pending = np.zeros(0, np.float32)

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        """Probabilities for every complete window now available (leftover samples wait for the next
        call)."""
        buf = np.concatenate([self._pending, samples.astype(np.float32, copy=False)])
        n = buf.size // WINDOW
        self._pending = buf[n * WINDOW :]
        if n == 0:
            return np.zeros(0, np.float32)
        windows = buf[: n * WINDOW].reshape(n, WINDOW)
        contexts = np.vstack([self._context[None], windows[:-1, -CONTEXT:]])
        batch = np.concatenate([contexts, windows], axis=1)
        probs, self._h, self._c = self._session.run(
            None, {"input": batch, "h": self._h, "c": self._c}
        )
        self._context = windows[-1, -CONTEXT:].copy()
        return np.asarray(probs, np.float32).reshape(-1)


def speech_probabilities(audio: np.ndarray, session=None) -> np.ndarray:
    """Whole-clip probabilities through the streaming path (used by benchmarks and the endpoint
    study)."""
    return StreamingVad(session)(audio)
