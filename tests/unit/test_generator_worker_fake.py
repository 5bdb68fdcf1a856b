"""A scripted generator for the worker-process tests, built in the child by its factory path.

Not a test module by itself (it has no tests); the worker tests put this folder on the
child's PYTHONPATH and name ``test_generator_worker_fake:make`` as the factory.

Modes: ``ok`` (say ``text`` word by word), ``echo`` (say the prompt back), ``raise``
(a backend error, the worker lives on), ``hang`` (block inside stream, ignoring cancels,
while the process still answers pings), ``freeze`` (SIGSTOP itself: no pongs either),
``memory`` (allocate ``alloc_mb`` at once: hits the worker's memory cap).
``load_fail`` makes loading raise; ``load_delay_s`` slows loading down.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

from runtime.errors import InferenceError
from runtime.inference.base import GenerationRequest, Generator


class ScriptedGenerator(Generator):
    backend = "scripted"
    device = "CPU"
    model_id = "scripted-generator"

    def __init__(
        self, *, mode: str = "ok", text: str = "", piece_delay_s: float = 0.0, alloc_mb: int = 0
    ):
        self.mode = mode
        self.text = text or "The hall is closed on Sundays and on public holidays."
        self.piece_delay_s = piece_delay_s
        self.alloc_mb = alloc_mb
        self.requests = 0

    def stream(self, request: GenerationRequest) -> Iterator[str]:
        self.requests += 1
        if self.mode == "raise":
            raise InferenceError("scripted backend failure")
        if self.mode == "hang":
            time.sleep(3600)
        if self.mode == "freeze":
            os.kill(os.getpid(), signal.SIGSTOP)
        if self.mode == "memory":
            block = bytearray(self.alloc_mb * 1024 * 1024)
            yield str(len(block))
            return
        text = self.text
        if self.mode == "echo":
            text = (
                f"system={request.system} prompt={request.prompt} "
                f"max_tokens={request.max_tokens} request={self.requests}"
            )
        words = text.split(" ")
        for n, word in enumerate(words[: max(1, request.max_tokens)]):
            if self.piece_delay_s:
                time.sleep(self.piece_delay_s)
            yield (" " if n else "") + word


def make(*, load_fail: bool = False, load_delay_s: float = 0.0, **kwargs) -> ScriptedGenerator:
    if load_delay_s:
        time.sleep(load_delay_s)
    if load_fail:
        raise InferenceError("scripted load failure", hint="none: this is a test")
    return ScriptedGenerator(**kwargs)
