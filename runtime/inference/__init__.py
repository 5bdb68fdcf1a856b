"""Model runners: one small base class per model kind, one module per library.

Nothing outside this package imports onnxruntime, openvino, openvino_genai,
onnxruntime_genai or faster_whisper. Backends are imported lazily so a box
without one of them still starts; `kiosk doctor` says what is missing.
"""

from .base import Embedder, GenerationRequest, Generator, Reranker, Synthesizer, Transcriber

__all__ = ["Embedder", "GenerationRequest", "Generator", "Reranker", "Synthesizer", "Transcriber"]
