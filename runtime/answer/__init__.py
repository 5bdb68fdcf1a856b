"""The answer pipeline: cache → FAQ → rewrite → retrieve → generate → check, under a deadline.

Public facade; the parts live in small private-by-convention modules:

- ``types``      Answer, Source, AnswerEvent, Turn
- ``normalize``  question clean-up and the cache/FAQ key
- ``languages``  the answer language follows the question
- ``cache``      exact + near-duplicate answer cache keyed by pack version
- ``faq``        confident FAQ matches
- ``rewrite``    follow-ups resolved through history; optional HyDE / multi-hop
- ``extractive`` best passage and sentences, quoted with their citation
- ``prompt``     the grounded prompt (retrieved text is data)
- ``check``      claim check of generated text against its source passage
- ``breaker``    circuit breaker per backend
- ``pipeline``   the orchestration with deadlines and a bounded work queue
"""

from __future__ import annotations

from .pipeline import AnswerPipeline, PipelineSettings
from .types import Answer, AnswerEvent, Source, Turn

__all__ = ["Answer", "AnswerEvent", "AnswerPipeline", "PipelineSettings", "Source", "Turn"]
