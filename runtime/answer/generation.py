"""Which generator the answer pipeline gets, or none with the reason.

The pipeline works with no generator (cache, FAQ and quoted passages), so a
missing or broken generator is reported, not raised: the caller prints the
reason and serves the fast paths. The choice and the load-time fallback
(a generator that fails to load or answers garbage is skipped for the next)
live in ``runtime.inference.generator_select``.
"""

from __future__ import annotations

import logging
import threading

from runtime.errors import KioskError
from runtime.inference.base import Generator

log = logging.getLogger(__name__)


def load_answer_generator(cfg) -> tuple[Generator | None, str]:
    """(generator or None, one line saying what was loaded or why not).

    With ``[generation] isolation = "process"`` (the default) the generator is
    loaded and run in a supervised worker process (runtime/workers): this waits
    for the worker's "ready" (or its report that nothing can be loaded) for at
    most ``worker_start_timeout_s``, or until a worker crashes while loading.
    """
    if getattr(getattr(cfg, "generation", None), "isolation", "thread") == "process":
        return _load_in_worker(cfg)
    from runtime.inference.generator_select import load_chosen_generator

    try:
        gen, choice = load_chosen_generator(cfg)
    except KioskError as exc:
        return None, f"no generator: {exc.message}"
    except Exception as exc:  # noqa: BLE001 - a backend crash must not stop the kiosk answering
        log.exception("loading the generator failed")
        return None, f"no generator: loading failed ({type(exc).__name__}: {exc})"
    if gen is None:
        return None, "no generator: " + "; ".join(choice.reasons)
    return gen, f"generator {choice.model_id} ({choice.variant}) on {gen.backend}/{gen.device}"


_PRESTARTED: dict[str, Generator] = {}
_PRESTART_LOCK = threading.Lock()


def prestart_answer_generator(cfg) -> None:
    """Start the generator worker now, so that its load overlaps the embedder's and the
    knowledge store's; ``load_answer_generator(cfg)`` then picks it up. No-op in thread mode."""
    if getattr(getattr(cfg, "generation", None), "isolation", "thread") != "process":
        return
    from runtime.workers.supervisor import ProcessGenerator

    key = cfg.model_dump_json()
    with _PRESTART_LOCK:
        if key not in _PRESTARTED:
            _PRESTARTED[key] = ProcessGenerator(cfg).start()


def _load_in_worker(cfg) -> tuple[Generator | None, str]:
    from runtime.workers.supervisor import ProcessGenerator

    with _PRESTART_LOCK:
        gen = _PRESTARTED.pop(cfg.model_dump_json(), None)
    if gen is None:
        gen = ProcessGenerator(cfg).start()
    state = gen.wait_ready(until_crash=True)
    if state == "ready":
        pid = gen.status().get("pid")
        return gen, f"{gen.note} in worker process {pid}"
    if state == "failed":
        gen.close()
        return None, "no generator: " + (gen.last_error or "the worker could not load one")
    # Still loading after the start timeout, or crashed while loading and restarting: keep it;
    # it serves once ready and until then the pipeline answers from the fast paths.
    if gen.last_error:
        return gen, (
            f"generator worker crashed while loading ({gen.last_error}); restarting in the "
            "background, fast paths answer until it is ready"
        )
    return gen, (
        f"generator worker not ready after {gen.settings.start_timeout_s:.0f} s "
        "(still loading); fast paths answer until it is"
    )
