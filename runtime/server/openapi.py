"""The OpenAPI 3 description served at ``/openapi.json``.

Written as data (not generated from docstrings) so the request bodies carry real
schemas that clients and fuzzers (tests/integration/test_schemathesis.py) can use;
a unit test checks that every HTTP route of the app is described and nothing else.
"""

from __future__ import annotations

from typing import Any

_ERR = {
    "description": "error",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}
_COMMON = {
    "400": _ERR,
    "401": _ERR,
    "403": _ERR,
    "408": _ERR,
    "413": _ERR,
    "415": _ERR,
    "422": _ERR,
    "429": _ERR,
    "503": _ERR,
}


def _json_body(ref: str) -> dict[str, Any]:
    return {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}},
    }


def _ok(desc: str, ctype: str = "application/json", schema: dict | None = None) -> dict[str, Any]:
    return {
        "200": {"description": desc, "content": {ctype: {"schema": schema or {"type": "object"}}}},
        **_COMMON,
    }


def _post(summary: str, body: str, responses: dict, *, admin: bool = False) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "requestBody": _json_body(body),
        "responses": responses,
    }
    if admin:
        op["security"] = [{"adminPin": []}, {"bearer": []}]
    return {"post": op}


def _get(
    summary: str, responses: dict, *, params: list | None = None, admin: bool = False
) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": responses}
    if params:
        op["parameters"] = params
    if admin:
        op["security"] = [{"adminPin": []}, {"bearer": []}]
    return {"get": op}


_MESSAGE = {
    "type": "object",
    "required": ["role", "content"],
    "properties": {
        "role": {"type": "string", "enum": ["system", "developer", "user", "assistant"]},
        "content": {"type": "string", "maxLength": 4000},
    },
}
_TURN = {
    "type": "object",
    "required": ["role", "content"],
    "properties": {
        "role": {"type": "string", "enum": ["user", "assistant"]},
        "content": {"type": "string", "maxLength": 2000},
    },
}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "properties": {
                    "message": {"type": "string"},
                    "type": {"type": "string"},
                    "hint": {"type": ["string", "null"]},
                },
            }
        },
    },
    "ChatRequest": {
        "type": "object",
        "required": ["messages"],
        "properties": {
            "model": {"type": "string", "maxLength": 200},
            "messages": {"type": "array", "minItems": 1, "maxItems": 50, "items": _MESSAGE},
            "stream": {"type": "boolean"},
        },
    },
    "EmbeddingRequest": {
        "type": "object",
        "required": ["input"],
        "properties": {
            "model": {"type": "string"},
            "input": {
                "oneOf": [
                    {"type": "string", "maxLength": 2000},
                    {
                        "type": "array",
                        "minItems": 1,
                        "maxItems": 64,
                        "items": {"type": "string", "maxLength": 2000},
                    },
                ]
            },
            "encoding_format": {"type": "string", "enum": ["float", "base64"]},
        },
    },
    "AskRequest": {
        "type": "object",
        "required": ["question"],
        "properties": {
            "question": {"type": "string", "maxLength": 2000},
            "history": {"type": "array", "maxItems": 20, "items": _TURN},
            "session": {"type": "string", "maxLength": 64},
            "stream": {"type": "boolean"},
        },
    },
    "SessionRequest": {
        "type": "object",
        "required": ["session"],
        "properties": {"session": {"type": "string", "maxLength": 64}},
    },
    "SpeakRequest": {
        "type": "object",
        "required": ["text"],
        "properties": {
            "text": {"type": "string", "minLength": 1, "maxLength": 2000},
            "language": {"type": "string", "enum": ["zh", "en"]},
        },
    },
    "Empty": {"type": "object"},
}


def build_spec(version: str = "0") -> dict[str, Any]:
    paths: dict[str, Any] = {
        "/healthz": _get(
            "Readiness: 503 while loading, then 200 with device placement and active knowledge",
            {
                "200": {"description": "ready"},
                "503": {"description": "loading or failed"},
                **{k: v for k, v in _COMMON.items() if k != "503"},
            },
        ),
        "/metrics": _get("Prometheus metrics", _ok("metrics", "text/plain", {"type": "string"})),
        "/openapi.json": _get("This description", _ok("OpenAPI 3 document")),
        "/v1/models": _get("Models (OpenAI-compatible)", _ok("model list")),
        "/v1/chat/completions": _post(
            "Answer the last user message (OpenAI-compatible; "
            "stream=true: server-sent events ending in [DONE]); "
            "extra fields: sources, kiosk",
            "ChatRequest",
            {
                "200": {
                    "description": "completion",
                    "content": {
                        "application/json": {"schema": {"type": "object"}},
                        "text/event-stream": {"schema": {"type": "string"}},
                    },
                },
                **_COMMON,
            },
        ),
        "/v1/embeddings": _post(
            "Embed texts (OpenAI-compatible)", "EmbeddingRequest", _ok("embeddings")
        ),
        "/v1/kiosk/ask": _post(
            "Answer a kiosk question: JSON, or with stream=true server-sent events "
            "sources/partial/replace/path/done",
            "AskRequest",
            {
                "200": {
                    "description": "answer",
                    "content": {
                        "application/json": {"schema": {"type": "object"}},
                        "text/event-stream": {"schema": {"type": "string"}},
                    },
                },
                **_COMMON,
            },
        ),
        "/v1/kiosk/faq": _get(
            "Static FAQ entries",
            _ok("entries"),
            params=[
                {
                    "name": "lang",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string", "enum": ["zh", "en"]},
                }
            ],
        ),
        "/v1/kiosk/session/reset": _post(
            "Forget a session's history", "SessionRequest", _ok("reset")
        ),
        "/v1/kiosk/speak": _post(
            "Speak a text (16-bit WAV)",
            "SpeakRequest",
            _ok("audio", "audio/wav", {"type": "string", "format": "binary"}),
        ),
        "/v1/admin/packs": _get("Pack status, trust and sync progress", _ok("status"), admin=True),
        "/v1/admin/packs/upload": {
            "post": {
                "summary": "Upload and install a signed .kpack (raw body)",
                "security": [{"adminPin": []}, {"bearer": []}],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/octet-stream": {
                            "schema": {"type": "string", "format": "binary"}
                        }
                    },
                },
                "responses": _ok("installed"),
            }
        },
        "/v1/admin/packs/rollback": _post(
            "Make the previous pack active", "Empty", _ok("active"), admin=True
        ),
        "/v1/admin/packs/sync": _post(
            "Start one pack sync",
            "Empty",
            {"202": {"description": "started"}, **_COMMON},
            admin=True,
        ),
        "/v1/admin/unanswered": _get(
            "Recent unanswered questions (from the audit log)",
            _ok("turns"),
            admin=True,
            params=[
                {
                    "name": "limit",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                }
            ],
        ),
        "/v1/admin/config": _get(
            "Running configuration, secrets masked", _ok("config"), admin=True
        ),
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "kiosk-assistant",
            "version": version,
            "description": "Offline kiosk answers with citations. "
            "WebSocket /v1/kiosk/voice is described in "
            "docs/server.md (OpenAPI does not describe WebSockets).",
        },
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "adminPin": {"type": "apiKey", "in": "header", "name": "X-Admin-Pin"},
            },
        },
    }
