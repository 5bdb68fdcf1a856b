"""Fuzz every operation of the served OpenAPI description against a running service.

Schemathesis generates valid and invalid requests from /openapi.json; the service must never
answer 5xx (other than documented 503 "busy/loading"), and responses must match the description
(status codes and content types). Bounded: a few dozen examples per operation.
"""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")

from fakes import FakeGenerator  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.specs.openapi.checks import content_type_conformance, status_code_conformance  # noqa: E402
from server_helpers import make_config, make_pipeline, running_server  # noqa: E402

from runtime.server.service_app import build_service_app, uvicorn_options  # noqa: E402

pytestmark = pytest.mark.network_loopback


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    pipeline = make_pipeline(tmp, generator=FakeGenerator(lambda r: "The hall opens at 09:00 [1]."))
    cfg = make_config(tmp, admin_pin="13579")
    app = build_service_app(
        cfg, get_pipeline=lambda: pipeline, get_synthesizer=lambda lang: _ToneSynth()
    )
    with running_server(app, **uvicorn_options(cfg)) as url:
        yield url
    pipeline.close()


def no_unexpected_server_error(ctx, response, case):
    """Like schemathesis's not_a_server_error, except the documented 503 (loading / busy / a
    subsystem not configured), which must still carry the service's JSON error body."""
    if response.status_code >= 500:
        assert response.status_code == 503, (
            f"server error {response.status_code}: {response.text[:200]}"
        )
        assert response.json()["error"]["message"]
    return None


class _ToneSynth:
    """A tiny synthesizer (a beep per character) so /v1/kiosk/speak is exercised end to end."""

    model_id, backend, device, languages = "tone", "numpy", "CPU", ("zh", "en")

    def synthesize(self, text: str, *, language: str):
        import numpy as np

        from runtime.inference.base import SpeechAudio

        t = np.arange(int(16000 * 0.02 * max(1, len(text)))) / 16000
        return SpeechAudio((np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16), 16000)


def _operations(url: str):
    schema = schemathesis.openapi.from_url(url + "/openapi.json")
    ops = []
    for result in schema.get_all_operations():
        ops.append(result.ok())
    return ops


def test_no_server_errors_and_responses_match_the_description(served):
    """Every operation, bounded examples each (schemathesis's pytest plugin is not used: it does
    not support pytest 9 yet; the strategies and checks are the same)."""
    from hypothesis import given
    from hypothesis import strategies as st

    ops = _operations(served)
    assert len(ops) >= 15
    seen: dict[str, set[int]] = {}

    def fuzz(op) -> None:
        strategy = op.as_strategy()

        @settings(
            max_examples=20, deadline=None, suppress_health_check=list(HealthCheck), database=None
        )
        @given(data=st.data())
        def run(data):
            case = data.draw(strategy)
            response = case.call(timeout=30)
            seen.setdefault(op.label, set()).add(response.status_code)
            case.validate_response(
                response,
                checks=[
                    no_unexpected_server_error,
                    status_code_conformance,
                    content_type_conformance,
                ],
            )

        run()

    for op in ops:
        fuzz(op)
    assert all(code < 500 or code == 503 for codes in seen.values() for code in codes)
    # The fuzzer reached the real handlers, not only the validation errors.
    assert 200 in seen["POST /v1/kiosk/ask"] and 200 in seen["POST /v1/chat/completions"]


def test_description_covers_every_http_route(served):
    import httpx

    from runtime.server.openapi import build_spec

    spec = httpx.get(served + "/openapi.json").json()
    assert spec == build_spec(spec["info"]["version"])
    # Every HTTP route of a freshly built app is described, and every described path exists.
    from starlette.routing import Route

    from runtime.server.service_app import build_service_app

    cfg = make_config(__import__("pathlib").Path("/nonexistent"))
    cfg.audit.enabled = False
    app = build_service_app(cfg, get_pipeline=lambda: None)
    routes = {r.path for r in app.routes if isinstance(r, Route)}
    assert routes == set(spec["paths"])
