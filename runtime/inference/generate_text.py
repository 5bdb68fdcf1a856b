"""Library-free pieces shared by the generator backends.

Each backend library handles stop strings, time limits and chat templates a
little differently (or not at all while streaming), so the rules a caller
relies on live here once: stop strings never reach the caller, not even in
part; a time limit ends the stream after the piece in flight; the system
prompt comes first so its KV cache can be reused. ``looks_like_garbage`` is the
cheap smoke check run on a freshly loaded generator so a broken conversion
falls back instead of answering visitors with noise.
"""

from __future__ import annotations

import queue
import re
import threading
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterator

from runtime.inference.base import GenerationRequest

# --- chat messages ------------------------------------------------------------------


def chat_messages(request: GenerationRequest) -> list[dict[str, str]]:
    """The request as chat messages: the fixed system prompt first, then the user turn."""
    messages = []
    if request.system:
        messages.append({"role": "system", "content": request.system})
    messages.append({"role": "user", "content": request.prompt})
    return messages


# --- stop strings -------------------------------------------------------------------


class StopScanner:
    """Cuts a stream of text pieces at the first stop string.

    Text that might be the start of a stop string is held back until the next
    piece decides it, so the caller never sees a stop string or a piece of one.
    """

    def __init__(self, stops: tuple[str, ...] | list[str]) -> None:
        self.stops = tuple(s for s in stops if s)
        self._held = ""
        self.stopped = False
        self._keep = max((len(s) for s in self.stops), default=1) - 1

    def feed(self, piece: str) -> str:
        """Add a piece; return the text that is now safe to emit ("" when stopped or held)."""
        if self.stopped or not piece:
            return ""
        text = self._held + piece
        cut = min((i for i in (text.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            self._held = ""
            return text[:cut]
        # Hold back the longest tail that is a proper prefix of some stop string.
        hold = 0
        for n in range(min(self._keep, len(text)), 0, -1):
            tail = text[-n:]
            if any(s.startswith(tail) for s in self.stops):
                hold = n
                break
        self._held = text[len(text) - hold :] if hold else ""
        return text[: len(text) - hold]

    def flush(self) -> str:
        """The held-back text, once the stream has ended without a stop."""
        if self.stopped:
            return ""
        held, self._held = self._held, ""
        return held


def deadline_for(request: GenerationRequest, start: float | None = None) -> float | None:
    """Monotonic time after which the stream must end, or None for no time limit."""
    if request.max_time_s is None:
        return None
    return (time.monotonic() if start is None else start) + max(0.0, request.max_time_s)


# --- a blocking generate() turned into an iterator ----------------------------------

_DONE = object()


def threaded_stream(run: Callable[[Callable[[str], bool]], None]) -> Iterator[str]:
    """Iterate the pieces that ``run(emit)`` produces on a worker thread.

    ``run`` calls ``emit(piece)`` for each decoded piece and must stop generating
    soon after ``emit`` returns False (the consumer went away). Errors raised by
    ``run`` are re-raised in the consumer.
    """
    pieces: queue.Queue[object] = queue.Queue()
    cancelled = threading.Event()
    errors: list[BaseException] = []

    def emit(piece: str) -> bool:
        if cancelled.is_set():
            return False
        pieces.put(piece)
        return True

    def worker() -> None:
        try:
            run(emit)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer thread
            errors.append(exc)
        finally:
            pieces.put(_DONE)

    thread = threading.Thread(target=worker, name="generator-stream", daemon=True)
    thread.start()
    try:
        while True:
            item = pieces.get()
            if item is _DONE:
                break
            yield item  # type: ignore[misc]
    finally:
        cancelled.set()
        thread.join()
    if errors:
        raise errors[0]


# --- garbage check ------------------------------------------------------------------

_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN = re.compile(r"[A-Za-z]")


def looks_like_garbage(text: str, *, language: str | None = None) -> bool:
    """True when a short model answer is clearly noise rather than words.

    Catches what broken conversions and wrong quantizations produce: empty
    output, replacement characters or control bytes, the same token or phrase
    over and over, and text in the wrong script for ``language`` ("zh" expects
    Han characters, "en" Latin letters). It is a smoke check for load-time
    fallback, not a quality measure.
    """
    stripped = text.strip()
    if not stripped:
        return True
    if "\ufffd" in stripped:
        return True
    controls = sum(
        1 for c in stripped if unicodedata.category(c) in ("Cc", "Co", "Cs") and c not in "\n\t\r"
    )
    if controls:
        return True
    # Repetition: one character, or one word/n-gram, dominating the text.
    chars = [c for c in stripped if not c.isspace()]
    if len(chars) >= 12:
        top = Counter(chars).most_common(1)[0][1]
        if top / len(chars) > 0.5:
            return True
    words = stripped.split()
    if len(words) >= 8:
        grams = Counter(tuple(words[i : i + 3]) for i in range(len(words) - 2))
        if grams.most_common(1)[0][1] >= max(3, (len(words) - 2) // 3):
            return True
    # Chinese text has few spaces: look for a repeating substring instead.
    if len(stripped) >= 24 and re.search(r"(.{2,12}?)\1{4,}", stripped, flags=re.S):
        return True
    han = len(_HAN.findall(stripped))
    latin = len(_LATIN.findall(stripped))
    letters = han + latin
    if language == "zh" and letters and han / letters < 0.2:
        return True
    if language == "en" and letters and latin / letters < 0.5:
        return True
    if letters == 0 and not any(c.isdigit() for c in stripped):
        return True
    return False
