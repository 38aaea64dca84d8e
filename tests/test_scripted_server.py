"""The scripted OpenAI-compatible server: protocol, fault injection, recording, judge text."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import socket
import time

import httpx
import pytest
from PIL import Image

from rationalrewards import parse_comparison, parse_critique
from rationalrewards.testing.scripted_server import (
    RecordedRequest,
    Reply,
    ScriptedServer,
    _parse_json,
    critique_text,
    cycle_responder,
    default_responder,
    detect_mode,
    detect_task,
    pairwise_text,
)

T2I = {"text_faithfulness": 3.5, "physical_quality": 2.25, "text_rendering": None}
EDIT = {"text_faithfulness": 4.0, "image_faithfulness": 1.5, "physical_quality": 3.0, "text_rendering": 2.0}


def png_bytes(colour: tuple[int, int, int] = (200, 30, 30), size: int = 32) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buf, format="PNG")
    return buf.getvalue()


def data_url(png: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(png).decode()


def chat_body(text: str = "User Instruction: a red ball\nYou are provided with one image:", **extra) -> dict:
    return {"model": "judge", "messages": [{"role": "user", "content": text}], **extra}


def content_of(response: httpx.Response) -> str:
    return response.json()["choices"][0]["message"]["content"]


@pytest.fixture
def server():
    with ScriptedServer(lambda req: "hello world") as s:
        yield s


# ---------------------------------------------------------------------------- endpoints


def test_models_health_and_unknown_paths(server):
    with httpx.Client(base_url=server.base_url) as client:
        models = client.get("/models")
        assert models.status_code == 200
        assert models.json()["object"] == "list"
        assert [m["id"] for m in models.json()["data"]] == ["scripted-judge"]
        assert client.get(f"{server.root_url}/health").status_code == 200
        missing = client.get("/nope")
        assert missing.status_code == 404 and "error" in missing.json()
        assert client.get("/chat/completions").status_code == 405
        assert client.post("/images/generations", json={"prompt": "x"}).status_code == 404
    assert server.base_url == f"http://127.0.0.1:{server.port}/v1"
    assert server.requests == []  # only chat completions are listed here...
    assert len(server.all_requests) == 5  # ...everything is in all_requests


def test_normal_completion_shape_and_recording(server):
    with httpx.Client(base_url=server.base_url) as client:
        r = client.post("/chat/completions", json=chat_body(), headers={"X-Trace": "abc"})
    assert r.status_code == 200
    data = r.json()
    assert data["object"] == "chat.completion" and data["id"] and isinstance(data["created"], int)
    assert data["model"] == "judge"  # echoes the requested model, like vLLM
    (choice,) = data["choices"]
    assert choice["index"] == 0 and choice["finish_reason"] == "stop"
    assert choice["message"] == {"role": "assistant", "content": "hello world"}
    usage = data["usage"]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    (req,) = server.requests
    assert req.method == "POST" and req.path == "/v1/chat/completions"
    assert req.headers["x-trace"] == "abc"  # lower-cased keys
    assert req.json == chat_body() and json.loads(req.body) == chat_body()
    assert req.texts() == [chat_body()["messages"][0]["content"]]
    assert req.connection_id == 1 and req.received_at <= time.monotonic()
    assert server.chat_request_count == 1


def test_model_name_and_usage_override():
    with ScriptedServer(lambda req: Reply(content="x", usage={"prompt_tokens": 7, "completion_tokens": 1,
                                                              "total_tokens": 8}),
                        model_name="served") as s, httpx.Client(base_url=s.base_url) as client:
        assert client.get("/models").json()["data"][0]["id"] == "served"
        body = chat_body()
        del body["model"]
        data = client.post("/chat/completions", json=body).json()
        assert data["model"] == "served" and data["usage"]["total_tokens"] == 8


def test_stop_and_max_tokens(server):
    server.set_responder(lambda req: "alpha # Summary: beta\n# User Request Refinement: gamma")
    with httpx.Client(base_url=server.base_url) as client:
        r = client.post("/chat/completions", json=chat_body(stop="# User Request Refinement"))
        assert content_of(r) == "alpha # Summary: beta\n"
        assert r.json()["choices"][0]["finish_reason"] == "stop"
        # A list: the earliest match wins, whatever its position in the list.
        r = client.post("/chat/completions", json=chat_body(stop=["gamma", "beta"]))
        assert content_of(r) == "alpha # Summary: "
        r = client.post("/chat/completions", json=chat_body(stop=["not there"]))
        assert content_of(r).endswith("gamma")
        r = client.post("/chat/completions", json=chat_body(max_tokens=2))
        assert content_of(r) == "alpha # "  # ~4 characters per token
        assert r.json()["choices"][0]["finish_reason"] == "length"
        r = client.post("/chat/completions", json=chat_body(max_completion_tokens=1))
        assert content_of(r) == "alph" and r.json()["choices"][0]["finish_reason"] == "length"
        r = client.post("/chat/completions", json=chat_body(max_tokens=1000))
        assert r.json()["choices"][0]["finish_reason"] == "stop"


def test_stream_and_malformed_requests_are_400(server):
    with httpx.Client(base_url=server.base_url) as client:
        r = client.post("/chat/completions", json=chat_body(stream=True))
        assert r.status_code == 400 and "stream" in r.json()["error"]["message"]
        r = client.post("/chat/completions", content=b'{"messages": [', headers={"Content-Type": "application/json"})
        assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
        assert client.post("/chat/completions", json={"model": "m"}).status_code == 400
        assert client.post("/chat/completions", json=[1, 2]).status_code == 400
        # The connection survives a 400: the next request is answered normally on it.
        assert content_of(client.post("/chat/completions", json=chat_body())) == "hello world"
    bad = server.requests[1]
    assert bad.json is None and bad.body == b'{"messages": ['
    assert server.connections_opened == 1


def test_raw_protocol_errors_close_the_connection(server):
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"NOT AN HTTP REQUEST\r\n\r\n")
        reply = sock.recv(4096)
        assert reply.startswith(b"HTTP/1.1 400 ")
        assert sock.recv(4096) == b""  # closed after the error
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"GET /v1/models HTTP/1.0\r\n\r\n")  # HTTP/1.0: close unless keep-alive
        chunks = []
        while chunk := sock.recv(4096):
            chunks.append(chunk)
        head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
        assert b"Connection: close" in head and json.loads(body)["object"] == "list"


# ---------------------------------------------------------------------------- faults


def test_fault_queue_in_order_then_responder():
    faults = [
        Reply(status=500),
        Reply(status=429, headers={"Retry-After": "0"}, content="slow down"),
        Reply(content="late", delay_s=0.3),
        Reply(content="x" * 1000, truncate_body=True),
        Reply(drop_connection=True),
        Reply(body=b'{"choices": ['),
        Reply(reset_connection=True),
    ]
    with ScriptedServer(lambda req: "fine", faults=faults) as s, httpx.Client(base_url=s.base_url) as client:
        assert s.pending_faults == 7
        post = lambda: client.post("/chat/completions", json=chat_body())  # noqa: E731
        r = post()
        assert r.status_code == 500 and r.json()["error"]["type"] == "server_error"
        r = post()
        assert r.status_code == 429 and r.headers["retry-after"] == "0"
        assert r.json()["error"]["message"] == "slow down"
        t0 = time.perf_counter()
        assert content_of(post()) == "late"
        assert time.perf_counter() - t0 >= 0.3
        with pytest.raises(httpx.RemoteProtocolError):
            post()
        with pytest.raises(httpx.RemoteProtocolError):
            post()
        r = post()
        assert r.status_code == 200
        with pytest.raises(json.JSONDecodeError):
            r.json()
        with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
            post()
        assert content_of(post()) == "fine"
        assert s.pending_faults == 0
        s.queue_faults(Reply(status=503), Reply(status=502))
        assert [post().status_code for _ in range(3)] == [503, 502, 200]
        assert s.chat_request_count == 11 and not s.errors


async def test_latency_overlaps_across_concurrent_requests():
    n = 40
    with ScriptedServer(lambda req: "ok", latency_s=0.3) as s:
        limits = httpx.Limits(max_connections=n)
        async with httpx.AsyncClient(base_url=s.base_url, limits=limits) as client:
            rs = await asyncio.gather(*(client.post("/chat/completions", json=chat_body()) for _ in range(n)))
        # Every request was held by the server at the same moment: latency never serialises them.
        assert s.max_chat_in_flight == n
    assert all(content_of(r) == "ok" for r in rs)


async def test_timeout_against_delay_and_async_responder():
    async def slow(req: RecordedRequest) -> Reply:
        await asyncio.sleep(0)  # responders may be coroutines
        return Reply(content="too late", delay_s=2.0)

    with ScriptedServer(slow) as s:
        async with httpx.AsyncClient(base_url=s.base_url, timeout=0.2) as client:
            with pytest.raises(httpx.ReadTimeout):
                await client.post("/chat/completions", json=chat_body())


def test_responder_errors_become_500_and_are_kept():
    def broken(req):
        raise KeyError("oops")

    with ScriptedServer(broken) as s, httpx.Client(base_url=s.base_url) as client:
        r = client.post("/chat/completions", json=chat_body())
        assert r.status_code == 500 and "KeyError" in r.json()["error"]["message"]
        s.set_responder(lambda req: 42)  # type: ignore[arg-type,return-value]
        assert client.post("/chat/completions", json=chat_body()).status_code == 500
        assert [type(e) for e in s.errors] == [KeyError, TypeError]


def test_cycle_responder():
    respond = cycle_responder("a", Reply(status=500), "b")
    with ScriptedServer(respond) as s, httpx.Client(base_url=s.base_url) as client:
        got = [client.post("/chat/completions", json=chat_body()) for _ in range(4)]
    assert [r.status_code for r in got] == [200, 500, 200, 200]
    assert content_of(got[0]) == "a" and content_of(got[2]) == "b" and content_of(got[3]) == "a"


# ---------------------------------------------------------------------------- recording


def test_recorded_texts_and_images():
    red, blue = png_bytes((220, 20, 20)), png_bytes((20, 20, 220), size=48)
    body = {
        "model": "judge",
        "messages": [
            {"role": "system", "content": "You are an evaluator."},
            {"role": "user", "content": [
                {"type": "text", "text": "User Instruction: x\n1. Generated Image A "},
                {"type": "image_url", "image_url": {"url": data_url(red)}},
                {"type": "text", "text": "\n2. Generated Image B "},
                {"type": "image_url", "image_url": {"url": data_url(blue, "image/jpeg")}},
                {"type": "image_url", "image_url": {"url": "https://example.invalid/c.png"}},
            ]},
        ],
    }
    with ScriptedServer(lambda req: "ok") as s, httpx.Client(base_url=s.base_url) as client:
        client.post("/chat/completions", json=body)
        # Some encoders escape "/" as "\/": the body must still round-trip exactly.
        client.post("/chat/completions", content=json.dumps(body).replace("/", "\\/").encode(),
                    headers={"Content-Type": "application/json"})
    for req in s.requests:
        assert req.json == body
        assert req.texts() == ["You are an evaluator.", "User Instruction: x\n1. Generated Image A ",
                               "\n2. Generated Image B "]
        assert req.texts("user") == req.texts()[1:]
        assert req.count_images() == 3 and req.image_urls()[2] == "https://example.invalid/c.png"
        assert req.images() == [("image/png", red), ("image/jpeg", blue)]
        assert Image.open(io.BytesIO(req.images()[1][1])).size == (48, 48)
        assert detect_mode(req) == "pairwise" and detect_task(req) == "t2i"


def test_large_images_are_kept_exactly():
    # Above the size where the server cuts payloads out of the JSON before parsing.
    noisy = Image.effect_noise((256, 256), 60).convert("RGB")
    buf = io.BytesIO()
    noisy.save(buf, format="PNG")
    png = buf.getvalue()
    assert len(png) > 50_000
    body = chat_body()
    body["messages"][0]["content"] = [{"type": "text", "text": "1. Source Image "},
                                      {"type": "image_url", "image_url": {"url": data_url(png)}}]
    with ScriptedServer(lambda req: "ok") as s, httpx.Client(base_url=s.base_url) as client:
        client.post("/chat/completions", json=body)
    (req,) = s.requests
    assert req.json == body and req.images() == [("image/png", png)] and detect_task(req) == "edit"


def test_record_false_keeps_only_counts():
    with ScriptedServer(lambda req: "ok", record=False) as s, httpx.Client(base_url=s.base_url) as client:
        for _ in range(3):
            client.post("/chat/completions", json=chat_body())
        client.get("/models")
    assert s.requests == [] and s.all_requests == []
    assert s.chat_request_count == 3 and s.request_count == 4


def test_chunked_request_body(server):
    payload = json.dumps(chat_body()).encode()

    def chunks():
        yield payload[:10]
        yield payload[10:]

    with httpx.Client(base_url=server.base_url) as client:
        r = client.post("/chat/completions", content=chunks(), headers={"Content-Type": "application/json"})
    assert content_of(r) == "hello world"
    assert server.requests[0].headers["transfer-encoding"] == "chunked"
    assert server.requests[0].json == chat_body()


@pytest.mark.parametrize("text", [
    '{"a": "data:image/png;base64,' + "QUJD" * 3000 + '"}',
    '{"t": "he said \\"data:image/png;base64,' + "QUJD" * 3000 + '\\" ok"}',
    '{"t": "x\\\\", "u": "data:a;base64,' + "QUJD" * 3000 + '"}',
    '["data:a;base64,' + "QUJD" * 3000 + '", "data:b;base64,' + "QUJD" * 1500 + '", {"k": "data:c;base64,x"}]',
    '{"a": "data:image/png;base64,' + "QUJD" * 3000 + '\\u00e9"}',
])
def test_fast_json_parse_equals_json_loads(text):
    assert _parse_json(text.encode()) == json.loads(text)


@pytest.mark.parametrize("text", [
    '{"a": "data:x;base64,' + "QUJD" * 3000 + '"',
    '{"a": "data:x;base64,' + "QUJD" * 3000 + '" "b"}',
    '{"a":"x"data:image/png;base64,' + "QUJD" * 3000 + '"}',
])
def test_fast_json_parse_rejects_invalid_json(text):
    with pytest.raises(ValueError):
        _parse_json(text.encode())


# ---------------------------------------------------------------------------- connections


def test_keep_alive_reuses_one_connection(server):
    with httpx.Client(base_url=server.base_url) as client:
        for _ in range(50):
            assert client.post("/chat/completions", json=chat_body()).status_code == 200
    assert server.connections_opened == 1
    assert {r.connection_id for r in server.requests} == {1}


async def test_async_client_connection_reuse():
    with ScriptedServer(lambda req: "ok", latency_s=0.01) as s:
        async with httpx.AsyncClient(base_url=s.base_url, limits=httpx.Limits(max_connections=8)) as client:
            for _ in range(4):
                rs = await asyncio.gather(*(client.post("/chat/completions", json=chat_body()) for _ in range(16)))
                assert all(r.status_code == 200 for r in rs)
        assert s.chat_request_count == 64
        assert s.connections_opened <= 8


def test_connection_close_is_honoured(server):
    with httpx.Client(base_url=server.base_url, headers={"Connection": "close"}) as client:
        for _ in range(3):
            r = client.post("/chat/completions", json=chat_body())
            assert r.headers["connection"] == "close"
    assert server.connections_opened == 3
    server.set_responder(lambda req: Reply(content="bye", headers={"Connection": "close"}))
    with httpx.Client(base_url=server.base_url) as client:
        for _ in range(2):
            assert content_of(client.post("/chat/completions", json=chat_body())) == "bye"
    assert server.connections_opened == 5


def test_stop_releases_the_port_and_cancels_inflight():
    s = ScriptedServer(lambda req: Reply(content="never", delay_s=30)).start()
    port = s.port
    client = httpx.Client(base_url=s.base_url, timeout=120)
    import threading

    def stop_once_held() -> None:
        s.wait_for_requests(1, timeout=60)
        s.stop()

    threading.Thread(target=stop_once_held).start()
    # Stop while the request sleeps: the client must see the connection go, not wait for a timeout.
    with pytest.raises(httpx.TransportError) as info:
        client.post("/chat/completions", json=chat_body())
    assert not isinstance(info.value, httpx.TimeoutException)
    client.close()
    s.stop()  # idempotent
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))  # free again
    with ScriptedServer(port=port) as again:  # and a new server can take it
        assert again.port == port


def test_start_errors_and_loopback_only():
    with ScriptedServer() as s, pytest.raises(OSError):
        ScriptedServer(port=s.port).start()
    with pytest.raises(ValueError):
        ScriptedServer(host="0.0.0.0")
    s = ScriptedServer().start()
    with pytest.raises(RuntimeError):
        s.start()
    s.stop()


def test_wait_for_requests():
    import threading

    with ScriptedServer(lambda req: "ok") as s:
        def later():
            time.sleep(0.1)
            httpx.post(f"{s.base_url}/chat/completions", json=chat_body())

        threading.Thread(target=later).start()
        assert len(s.wait_for_requests(1, timeout=5)) == 1
        with pytest.raises(TimeoutError):
            s.wait_for_requests(2, timeout=0.1)


# ---------------------------------------------------------------------------- images endpoint


def test_image_generation_endpoint():
    png = png_bytes()
    calls = []

    def images(req):
        calls.append(req.json["prompt"])
        if len(calls) == 2:
            return Reply(status=500)
        return png

    with ScriptedServer(image_responder=images) as s, httpx.Client(base_url=s.base_url) as client:
        r = client.post("/images/generations", json={"prompt": "a red ball", "response_format": "b64_json"})
        assert r.status_code == 200 and isinstance(r.json()["created"], int)
        assert base64.b64decode(r.json()["data"][0]["b64_json"]) == png
        assert client.post("/images/generations", json={"prompt": "again"}).status_code == 500
        assert client.post("/images/generations", content=b"{", headers={"Content-Type": "application/json"}
                           ).status_code == 400
        assert [r.json["prompt"] for r in s.image_requests[:2]] == ["a red ball", "again"]
        s.set_image_responder(None)
        assert client.post("/images/generations", json={"prompt": "x"}).status_code == 404
    assert s.requests == [] and calls == ["a red ball", "again"]


# ---------------------------------------------------------------------------- judge text


@pytest.mark.parametrize(("task", "scores"), [("t2i", T2I), ("edit", EDIT)])
def test_critique_text_parses(task, scores):
    text = critique_text(task, scores, refined_request="a bright red ball on grass")
    res = parse_critique(text, task)
    assert res.ok, res.error
    assert {k: v for k, v in res.scores.items() if k in scores} == scores
    assert res.refined_request == "a bright red ball on grass"
    assert all(res.justifications[k] for k in scores)
    assert "N/A" in text or None not in scores.values()
    assert parse_critique(critique_text(task, scores, think=True), task).ok


def test_critique_text_format_details():
    text = critique_text("t2i", T2I, refined_request=None, summary="Good but blurry.")
    assert text.rstrip().endswith("# Summary: Good but blurry.")
    assert "Refine" not in text
    lines = text.splitlines()
    assert lines[0] == "# User Request Analysis" and "# Detailed Judgement" in lines
    assert "1. Text Faithfulness:" in lines and "2. Physical and Visual Quality:" in lines
    assert "3. Text Rendering:" in lines and "## Score: N/A" in lines
    res = parse_critique(text, "t2i")
    assert res.ok and res.refined_request is None and res.summary == "Good but blurry."
    edit = critique_text("edit", EDIT).splitlines()
    assert edit.index("2. Image Faithfulness:") < edit.index("3. Physical and Visual Quality:") \
        < edit.index("4. Text Rendering:")
    # Leaving a dimension out scripts a truncated answer; a typo is an error.
    partial = critique_text("t2i", {"text_faithfulness": 3.0, "physical_quality": 3.0})
    assert not parse_critique(partial, "t2i").ok
    with pytest.raises(ValueError):
        critique_text("t2i", {"text_faithfulnes": 3.0})


@pytest.mark.parametrize(("task", "a", "b", "winner"), [
    ("t2i", T2I, {**T2I, "text_faithfulness": 2.0}, "A"),
    ("edit", {**EDIT, "physical_quality": 1.0}, EDIT, "B"),
    ("t2i", T2I, T2I, "tie"),
])
def test_pairwise_text_parses(task, a, b, winner):
    text = pairwise_text(task, a, b, summary="Compared.")
    assert text.rstrip().endswith("# Summary: Compared.")
    res = parse_comparison(text, task)
    assert res.ok, res.error
    assert res.winner == winner
    assert {k: v for k, v in res.scores_a.items() if k in a} == a
    if task == "t2i":
        assert "## Winner: N/A" in text  # text rendering N/A on both sides
    with pytest.raises(ValueError):
        pairwise_text(task, a, {"text_faithfulness": 3.0})


def test_detection_and_default_responder():
    def req(text: str) -> RecordedRequest:
        body = {"messages": [{"role": "system", "content": "Image A and Source Image are not in the user text"},
                             {"role": "user", "content": [{"type": "text", "text": text}]}]}
        return RecordedRequest("POST", "/v1/chat/completions", {}, b"", body, 0.0, 1)

    cases = {
        "You are provided with one image:\n1. Generated Image ": ("t2i", "pointwise"),
        "1. Source Image \n2. Edited Image ": ("edit", "pointwise"),
        "1. Generated Image A \n2. Generated Image B ": ("t2i", "pairwise"),
        "1. Source Image \n2. Edited Image A \n3. Edited Image B ": ("edit", "pairwise"),
    }
    for text, (task, mode) in cases.items():
        r = req(text)
        assert (detect_task(r), detect_mode(r)) == (task, mode)
        answer = default_responder(r)
        assert isinstance(answer, str)
        parsed = parse_comparison(answer, task) if mode == "pairwise" else parse_critique(answer, task)
        assert parsed.ok, parsed.error
