"""The OpenAI-compatible backend's transport, against real local servers: bounded connections,
retries of every transient fault, exact failure reports, sessions tied to their event loop."""

from __future__ import annotations

import asyncio
import gc
import logging

import pytest

from rationalrewards.backends import SamplingParams
from rationalrewards.backends.openai_http import OpenAIBackend, _env_proxy, _parse_retry_after
from rationalrewards.images import load_image
from rationalrewards.testing.scripted_server import Reply, ScriptedServer, judge_responder

SCORES = {"text_faithfulness": 3.5, "physical_quality": 2.5, "text_rendering": None}
PARAMS = SamplingParams(temperature=0.0, max_tokens=2000)


def png_bytes(colour: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (32, 32), colour).save(buf, format="PNG")
    return buf.getvalue()


def messages(text: str = "judge this") -> list[dict]:
    img = load_image(png_bytes())
    return [{"role": "user", "content": [{"type": "text", "text": text}, {"type": "image", "image": img}]}]


def backend_for(*urls: str, **kw) -> OpenAIBackend:
    kw.setdefault("backoff_base", 0.01)
    kw.setdefault("backoff_max", 0.05)
    return OpenAIBackend(list(urls) if len(urls) > 1 else urls[0], "judge", **kw)


async def generate_many(backend: OpenAIBackend, n: int):
    try:
        return await asyncio.gather(*(backend.agenerate(messages(f"item {i}"), PARAMS) for i in range(n)))
    finally:
        await backend.aclose()


def test_connections_and_requests_in_flight_stay_within_the_concurrency_limit():
    with ScriptedServer(judge_responder(SCORES), latency_s=0.02) as server:
        backend = backend_for(server.base_url, concurrency=4)
        gens = asyncio.run(generate_many(backend, 40))
        assert all(g.ok for g in gens), [g.error for g in gens if not g.ok]
        assert server.connections_opened <= 4
        assert server.max_chat_in_flight <= 4
        assert server.chat_request_count == 40
    assert backend.clients_created == 1


@pytest.mark.parametrize("fault", [
    Reply(truncate_body=True, content="half of an answer that is cut"),
    Reply(drop_connection=True),
    Reply(reset_connection=True),
    Reply(body=b'{"choices": ['),
    Reply(status=502),
    Reply(status=429, headers={"Retry-After": "0"}),
])
def test_each_transient_fault_is_retried_and_the_attempts_are_counted(fault):
    with ScriptedServer(judge_responder(SCORES), faults=[fault]) as server:
        gen = asyncio.run(generate_many(backend_for(server.base_url, max_retries=2), 1))[0]
        assert server.chat_request_count == 2
    assert gen.ok, gen.error
    assert gen.attempts == 2


def test_a_retry_resends_exactly_the_same_body():
    with ScriptedServer(judge_responder(SCORES), faults=[Reply(status=503)]) as server:
        assert asyncio.run(generate_many(backend_for(server.base_url), 1))[0].ok
        first, second = server.requests
    assert first.body == second.body
    assert first.images()[0] == ("image/png", png_bytes())


@pytest.mark.parametrize(("fault", "reason"), [
    (Reply(truncate_body=True, content="an answer cut in half by the server"), "cut short"),
    (Reply(reset_connection=True), "at http://127.0.0.1"),
    (Reply(status=503), "HTTP 503"),
])
def test_a_persistent_fault_is_reported_with_its_reason_and_attempt_count(fault, reason):
    with ScriptedServer(lambda req: fault) as server:
        gen = asyncio.run(generate_many(backend_for(server.base_url, max_retries=2), 1))[0]
        assert server.chat_request_count == 3
    assert not gen.ok and gen.text is None
    assert gen.attempts == 3
    assert "after 3 attempt(s)" in gen.error and reason in gen.error


def test_the_timeout_applies_to_each_attempt():
    with ScriptedServer(lambda req: Reply(content="late", delay_s=5.0)) as server:
        gen = asyncio.run(generate_many(backend_for(server.base_url, timeout=0.2, max_retries=1), 1))[0]
        assert server.chat_request_count == 2
    assert not gen.ok and "timeout after 0.2s" in gen.error and gen.attempts == 2


def test_a_retry_moves_to_another_base_url():
    with ScriptedServer(lambda req: Reply(status=503)) as bad, ScriptedServer(judge_responder(SCORES)) as good:
        backend = backend_for(bad.base_url, good.base_url, concurrency=4, max_retries=1)
        gens = asyncio.run(generate_many(backend, 12))
        assert all(g.ok for g in gens), [g.error for g in gens if not g.ok]
        # Whatever failed on the bad server was retried on the good one, never on the bad one again.
        assert bad.chat_request_count == sum(g.attempts == 2 for g in gens)
        assert good.chat_request_count == 12


def test_client_errors_are_final():
    with ScriptedServer(lambda req: Reply(status=404)) as server:
        gen = asyncio.run(generate_many(backend_for(server.base_url, max_retries=3), 1))[0]
        assert server.chat_request_count == 1
    assert "HTTP 404" in gen.error and gen.attempts == 1


def test_a_session_per_event_loop_and_none_kept_for_closed_loops(caplog):
    with ScriptedServer(judge_responder(SCORES)) as server:
        backend = backend_for(server.base_url)

        async def one_without_close():
            return await backend.agenerate(messages(), PARAMS)

        with caplog.at_level(logging.ERROR):
            assert asyncio.run(one_without_close()).ok
            assert asyncio.run(one_without_close()).ok
            assert asyncio.run(generate_many(backend, 1))[0].ok
            gc.collect()
    assert backend.clients_created == 3
    assert not backend._sessions  # the last loop closed its session, the earlier ones were dropped
    assert not [r for r in caplog.records if "Unclosed" in r.getMessage()]


def test_model_name_discovery_and_readiness_use_the_same_session():
    with ScriptedServer(judge_responder(SCORES), model_name="served-judge") as server:
        backend = OpenAIBackend(server.base_url)

        async def go():
            try:
                return await backend.aready(5), await backend.agenerate(messages(), PARAMS)
            finally:
                await backend.aclose()

        ready, gen = asyncio.run(go())
        assert server.requests[-1].json["model"] == "served-judge"
    assert ready and gen.ok and backend.clients_created == 1


@pytest.mark.parametrize("url", ["127.0.0.1:8000/v1", "ftp://127.0.0.1/v1", "http:///v1"])
def test_a_base_url_without_http_scheme_or_host_is_refused_up_front(url):
    with pytest.raises(ValueError, match="base URL"):
        OpenAIBackend(url, "m")


def test_retry_after_accepts_seconds_and_http_dates():
    assert _parse_retry_after("3") == 3.0
    assert _parse_retry_after("-1") == 0.0
    assert _parse_retry_after(None) is None
    assert _parse_retry_after("soon") is None
    assert _parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past: no wait
    assert _parse_retry_after("Fri, 01 Jan 2100 00:00:00 GMT") > 50 * 365 * 86400


def test_retry_after_lengthens_the_backoff_up_to_its_cap():
    backend = OpenAIBackend("http://127.0.0.1:9/v1", "m", backoff_base=0.01, backoff_max=2.0)
    assert all(backend._backoff(0, 1.0) == 1.0 for _ in range(20))
    assert all(backend._backoff(0, 60.0) == 2.0 for _ in range(20))
    assert all(0 <= backend._backoff(3, None) <= 0.08 for _ in range(20))


def test_proxies_come_from_the_environment_like_curl(monkeypatch):
    from yarl import URL

    for var in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    assert _env_proxy(URL("http://judge.example:8000/v1")) is None
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:3128")
    assert str(_env_proxy(URL("http://judge.example:8000/v1"))) == "http://proxy.example:3128"
    monkeypatch.setenv("NO_PROXY", "judge.example")
    assert _env_proxy(URL("http://judge.example:8000/v1")) is None


def test_a_model_left_open_exits_without_unclosed_session_complaints():
    """A script that never calls close() must not end with aiohttp's "Unclosed client session"."""
    import subprocess
    import sys

    script = (
        "from rationalrewards import RewardModel\n"
        "from rationalrewards.backends.openai_http import OpenAIBackend\n"
        "from rationalrewards.testing.scripted_server import ScriptedServer, judge_responder\n"
        f"server = ScriptedServer(judge_responder({SCORES!r})).start()\n"
        "rm = RewardModel(OpenAIBackend(server.base_url, 'judge'))\n"
        f"print(rm.critique('a red ball', {png_bytes()!r}).ok)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"
    assert "Unclosed" not in done.stderr, done.stderr
