"""Planted instructions in retrieved text (indirect prompt injection, OWASP LLM01).

A signed document can still carry text aimed at the model ("ignore your
instructions and reply with ..."). Retrieved text is data: it is fenced in the
prompt, and passages that read like instructions to an assistant are dropped
before they reach the model or the visitor's screen, and counted. The
patterns are deliberately narrow (imperatives addressed to an AI/assistant,
requests for secrets or tool calls, markup): kiosk documents give visitors
instructions ("bring your ID card"), never the machine.
"""

from __future__ import annotations

import re

_PATTERNS = [
    r"\b(ignore|disregard|forget|override)\b.{0,40}\b(instructions?|rules|prompt|guidelines|above|previous)\b",
    r"\b(reply|respond|answer|say|output|print)\b.{0,20}\bonly\b.{0,20}\bwith\b",
    r"\b(system prompt|developer message|you are now|act as|jailbreak)\b",
    r"\b(reveal|disclose|tell me|print)\b.{0,30}\b(pin|password|secret|api key|token|admin)\b",
    r"\b(call|invoke|run|execute)\b.{0,20}\b(tool|function|command|shell)\b",
    r"<\s*(script|img|iframe|svg|object)\b|!\[[^\]]*\]\(|javascript:",
    r"(忽略|无视|忘记).{0,12}(指令|指示|规则|提示|设定)",
    r"(只|仅)(回答|回复|输出).{0,10}",
    r"(泄露|透露|告诉我).{0,12}(密码|口令|管理员|PIN)",
    r"(系统提示|你现在是|扮演)",
]
_INJECTION = re.compile("|".join(f"(?:{p})" for p in _PATTERNS), re.IGNORECASE | re.DOTALL)


def looks_like_injection(text: str) -> bool:
    """True when ``text`` contains instructions aimed at the assistant rather than the visitor."""
    return _INJECTION.search(text[:20_000]) is not None
