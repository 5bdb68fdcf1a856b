"""Speech front end: safe audio decoding, streaming VAD sessions, normalisation, speaking.

- ``audio``: untrusted WAV / FLAC / PCM → 16 kHz mono float32, limits checked before allocation
- ``normalize``: one Chinese script, numbers as the knowledge writes them, CER/WER
- ``vad`` / ``streaming``: the per-connection session a WebSocket endpoint drives
- ``speaker``: sentence-by-sentence speech of a streamed answer, interruptible and mutable

The models themselves live in ``runtime/inference/`` (transcribe_whisper, synth_hibari,
synth_espeak); see docs/speech.md.
"""
