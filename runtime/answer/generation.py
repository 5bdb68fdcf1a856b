"""Which generator the answer pipeline gets, or none with the reason.

The pipeline works with no generator (cache, FAQ and quoted passages), so a
missing or broken generator is reported, not raised: the caller prints the
reason and serves the fast paths. The choice and the load-time fallback
(a generator that fails to load or answers garbage is skipped for the next)
live in ``runtime.inference.generator_select``.
"""

from __future__ import annotations

import logging

from runtime.errors import KioskError
from runtime.inference.base import Generator

log = logging.getLogger(__name__)


def load_answer_generator(cfg) -> tuple[Generator | None, str]:
    """(generator or None, one line saying what was loaded or why not)."""
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
