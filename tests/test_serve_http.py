"""The reward server on a real uvicorn socket (loopback), its client, and the CLI command."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time

import httpx
import pytest
from PIL import Image
from typer.testing import CliRunner

from rationalrewards import RewardModel
from rationalrewards.backends.openai_http import OpenAIBackend
from rationalrewards.cli.main import app as cli_app
from rationalrewards.rl import RationalReward
from rationalrewards.serve import RemoteReward, RemoteRewardError, ServerThread, create_app
from rationalrewards.testing.judges import pixel_judge
from rationalrewards.testing.scripted_server import RecordedRequest, ScriptedServer

TOKEN = "t0k3n"


def grey(level: float, size: int = 16) -> Image.Image:
    v = round(255 * level)
    return Image.new("RGB", (size, size), (v, v, v))


@pytest.fixture
def judge_server():
    with ScriptedServer(pixel_judge()) as s:
        yield s


@pytest.fixture
def rm(judge_server):
    model = RewardModel(OpenAIBackend(judge_server.base_url, "judge", max_retries=0))
    yield model
    model.close()


def test_remote_reward_over_a_real_loopback_server(rm):
    with ServerThread(create_app(rm, token=TOKEN)) as server:
        assert server.url.startswith("http://127.0.0.1:")
        remote = RemoteReward(server.url, token=TOKEN)
        results = remote.critique_batch([("p", grey(0.8), None), ("p", grey(0.2), grey(0.5), "edit-1")])
        remote_batch = RationalReward(remote)([grey(0.3), grey(0.6)], ["p", "p"])
        local_batch = RationalReward(rm)([grey(0.3), grey(0.6)], ["p", "p"])
        remote.close()
    assert [r.task for r in results] == ["t2i", "edit"] and results[1].id == "edit-1"
    assert results[0].scores["text_faithfulness"] == pytest.approx(1 + 3 * 0.8, abs=0.01)
    assert remote_batch.valid == [True, True]
    assert remote_batch.rewards == pytest.approx(local_batch.rewards)


def test_items_of_concurrent_requests_reach_the_judge_together():
    """4 clients x 4 items: the judge must see all 16 critiques in flight at once (it refuses to
    answer any of them until all have arrived, so a serialising server would time out)."""
    expected = 16
    state = {"arrived": 0, "event": None}

    async def barrier_judge(req: RecordedRequest) -> str:
        if state["event"] is None:
            state["event"] = asyncio.Event()
        state["arrived"] += 1
        if state["arrived"] >= expected:
            state["event"].set()
        await asyncio.wait_for(state["event"].wait(), timeout=20)
        return pixel_judge()(req)

    with ScriptedServer(barrier_judge) as judge:
        model = RewardModel(OpenAIBackend(judge.base_url, "judge", max_retries=0, concurrency=64))
        with ServerThread(create_app(model)) as server:
            remote = RemoteReward(server.url)

            async def four_clients() -> list[list]:
                return await asyncio.gather(*(
                    remote.acritique_items([(f"p{c}", grey(0.1 * i + 0.05 * c), None, f"{c}-{i}") for i in range(4)])
                    for c in range(4)))

            batches = asyncio.run(four_clients())
        model.close()
    assert state["arrived"] == expected
    for c, batch in enumerate(batches):
        assert [r.id for r in batch] == [f"{c}-{i}" for i in range(4)]
        assert all(r.ok for r in batch)


def test_client_splits_a_batch_to_fit_the_server_limits(rm, judge_server):
    with ServerThread(create_app(rm, max_images_per_request=3)) as server:
        remote = RemoteReward(server.url)
        items = [("p", grey(i / 10), None, str(i)) for i in range(7)]
        results = asyncio.run(remote.acritique_items(items))
        sent = remote.requests_sent
    assert [r.id for r in results] == [str(i) for i in range(7)]
    assert all(r.ok for r in results)
    assert sent == 3  # 3 + 3 + 1 images
    assert [round(r.scores["text_faithfulness"], 1) for r in results] == [round(1 + 0.3 * i, 1) for i in range(7)]


def test_a_wrong_token_raises_instead_of_masking_every_sample(rm):
    with ServerThread(create_app(rm, token=TOKEN)) as server:
        remote = RemoteReward(server.url, token="wrong")
        with pytest.raises(RemoteRewardError, match="401"):
            remote.critique("p", grey(0.5))
        remote.close()


class _FailFirst:
    """ASGI wrapper answering 503 to the first ``n`` reward requests."""

    def __init__(self, app, n: int) -> None:
        self.app, self.n = app, n

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"] == "/v1/reward" and self.n > 0:
            self.n -= 1
            await send({"type": "http.response.start", "status": 503,
                        "headers": [(b"content-type", b"application/json"), (b"retry-after", b"0")]})
            await send({"type": "http.response.body", "body": b'{"error": "warming up", "kind": "server_error"}'})
            return
        await self.app(scope, receive, send)


def test_transient_server_errors_are_retried_and_persistent_ones_become_backend_failures(rm):
    with ServerThread(_FailFirst(create_app(rm), n=2)) as server:
        ok = RemoteReward(server.url, max_retries=2, backoff_base=0.01).critique("p", grey(0.5))
    with ServerThread(_FailFirst(create_app(rm), n=10)) as server:
        failed = RemoteReward(server.url, max_retries=1, backoff_base=0.01).critique("p", grey(0.5))
    assert ok.ok
    assert not failed.ok and failed.error_kind == "backend" and "503" in failed.error and "warming up" in failed.error


def test_an_unreachable_server_is_a_backend_failure():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    res = RemoteReward(f"http://127.0.0.1:{port}", max_retries=0, timeout=2).critique("p", grey(0.5))
    assert not res.ok and res.error_kind == "backend"


def test_a_streamed_body_over_the_limit_is_413(rm, judge_server):
    with ServerThread(create_app(rm, max_body_bytes=16_384)) as server:
        def chunks():
            yield b'{"items": [{"prompt": "p", "image": "'
            for _ in range(8):
                yield b"A" * 4096
            yield b'"}]}'

        r = httpx.post(f"{server.url}/v1/reward", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["kind"] == "too_large"
    assert judge_server.chat_request_count == 0


def test_cli_refuses_a_public_address_without_a_token():
    result = CliRunner().invoke(cli_app, ["serve", "--host", "0.0.0.0", "--base-url", "http://127.0.0.1:9/v1",
                                          "--model", "m"], env={"RATIONALREWARDS_TOKEN": ""})
    assert result.exit_code == 2
    assert "without a token" in result.output


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_serve_answers_rewards(judge_server, monkeypatch):
    port = _free_port()
    monkeypatch.setenv("RATIONALREWARDS_TOKEN", TOKEN)  # read by both the server and the client
    env = dict(os.environ)
    proc = subprocess.Popen(
        [sys.executable, "-c", "from rationalrewards.cli.main import main; main()", "serve",
         "--base-url", judge_server.base_url, "--model", "judge", "--port", str(port), "--log-level", "warning"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, "server did not come up"
            time.sleep(0.2)
        remote = RemoteReward(url)
        res = remote.critique("p", grey(0.9))
        remote.close()
        assert res.ok and res.scores["text_faithfulness"] == pytest.approx(3.7, abs=0.01)
        assert httpx.post(f"{url}/v1/reward", json={"items": []}).status_code == 401
    finally:
        proc.terminate()
        proc.wait(timeout=15)


# -- what a request may cost: pixels read from headers, budgets, 413 / 429 ---------------------

def png_header_only(width: int, height: int) -> bytes:
    """A PNG declaring ``width x height`` with no pixel data (decoding it would fail differently)."""
    import struct
    import zlib

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IEND", b""))


def b64_of(img: Image.Image, fmt: str = "PNG") -> str:
    import base64
    import io

    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return base64.b64encode(buf.getvalue()).decode()


def wait_until(condition, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def post_json(url: str, obj: dict, **kwargs) -> httpx.Response:
    import json

    return httpx.post(url, content=json.dumps(obj).encode(), headers={"Content-Type": "application/json"},
                      timeout=60, **kwargs)


def test_giant_images_are_refused_from_their_headers_without_decoding(rm, judge_server):
    """The reported burn: four concurrent requests of 8 images of 7990 x 7990. Each is refused
    (413, naming the first such image) from the headers alone; nothing is decoded or judged."""
    import base64
    from concurrent.futures import ThreadPoolExecutor

    from rationalrewards.serve import ServerMetrics

    metrics = ServerMetrics()
    giant = base64.b64encode(png_header_only(7990, 7990)).decode()
    with ServerThread(create_app(rm, metrics=metrics)) as server:
        body = {"items": [{"id": str(k), "prompt": "p", "image": giant} for k in range(8)]}
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda _: post_json(f"{server.url}/v1/reward", body), range(4)))
        within = post_json(f"{server.url}/v1/reward", {"items": [{"prompt": "p", "image": b64_of(grey(0.5))}]})
        health = httpx.get(f"{server.url}/healthz").json()
    for r in answers:
        assert r.status_code == 413
        err = r.json()
        assert err["kind"] == "image_too_large"
        assert err["error"].startswith("items[0].image is 7990x7990 (63840100 pixels), over the per-image limit of "
                                       "16000000 pixels (--max-image-megapixels)")
        assert err["details"][0] == {"loc": ["items", "0", "image"], "item": 0, "limit": "max_image_pixels",
                                     "value": 16_000_000, "pixels": 63_840_100,
                                     "msg": "image over the per-image pixel limit"}
    assert metrics.images_decoded == 1  # the one request within budget
    assert within.status_code == 200 and within.json()["results"][0]["ok"]
    assert judge_server.chat_request_count == 1
    assert health["limits"] == {"max_body_bytes": 64 * 1024 * 1024, "max_images_per_request": 64,
                                "max_image_pixels": 16_000_000, "max_request_pixels": 64_000_000,
                                "max_decoding_pixels": 256_000_000}


@pytest.fixture
def gated_decoding(monkeypatch):
    """Hold every image decode until ``gate`` is set; ``entered`` tells that one has started."""
    import threading

    from rationalrewards.serve import app as app_module

    gate, entered = threading.Event(), threading.Event()
    real = app_module.prepare_image

    def held(*args, **kwargs):
        entered.set()
        assert gate.wait(30), "test never released the decode gate"
        return real(*args, **kwargs)

    monkeypatch.setattr(app_module, "prepare_image", held)
    yield gate, entered
    gate.set()


def test_concurrent_requests_over_the_decode_budget_get_429_and_do_not_decode(rm, judge_server, gated_decoding):
    from concurrent.futures import ThreadPoolExecutor

    from rationalrewards.serve import ServerMetrics

    gate, entered = gated_decoding
    metrics = ServerMetrics()
    # Each request declares 2 x 600 x 600 = 720,000 pixels; the whole server may decode 1,000,000.
    app = create_app(rm, metrics=metrics, max_image_pixels=1_000_000, max_request_pixels=1_000_000,
                     max_decoding_pixels=1_000_000, decode_wait_s=0)
    body = {"items": [{"prompt": "p", "image": b64_of(grey(0.2, 600))}, {"prompt": "p", "image": b64_of(grey(0.7, 600))}]}
    with ServerThread(app) as server, ThreadPoolExecutor(4) as pool:
        first = pool.submit(post_json, f"{server.url}/v1/reward", body)
        assert entered.wait(30)
        assert metrics.decoding_pixels == 720_000
        others = list(pool.map(lambda _: post_json(f"{server.url}/v1/reward", body), range(3)))
        gate.set()
        done = first.result()
        again = post_json(f"{server.url}/v1/reward", body)  # the budget was given back
    for r in others:
        assert r.status_code == 429
        assert r.headers["retry-after"] == "1"
        err = r.json()
        assert err["kind"] == "busy"
        assert "720000 of its 1000000-pixel budget in use, --max-decoding-megapixels" in err["error"]
        assert "this request needs 720000 pixels; retry after 1 s" in err["error"]
        assert err["details"][0]["limit"] == "max_decoding_pixels"
    assert done.status_code == again.status_code == 200
    assert all(x["ok"] for x in done.json()["results"] + again.json()["results"])
    assert metrics.images_decoded == 4  # the first request's 2 and the last one's 2: the refused decoded none
    assert metrics.request_failure_count("busy") == 3
    assert metrics.decoding_pixels == 0


def test_a_request_waits_for_the_decode_budget_within_decode_wait(rm, gated_decoding):
    from concurrent.futures import ThreadPoolExecutor

    from rationalrewards.serve import ServerMetrics

    gate, entered = gated_decoding
    metrics = ServerMetrics()
    app = create_app(rm, metrics=metrics, max_image_pixels=500_000, max_request_pixels=500_000,
                     max_decoding_pixels=500_000, decode_wait_s=60)
    body = {"items": [{"prompt": "p", "image": b64_of(grey(0.4, 600))}]}
    with ServerThread(app) as server, ThreadPoolExecutor(2) as pool:
        first = pool.submit(post_json, f"{server.url}/v1/reward", body)
        assert entered.wait(30)
        second = pool.submit(post_json, f"{server.url}/v1/reward", body)
        wait_until(lambda: metrics.decode_waiting == 1, "the second request to wait for the budget")
        assert metrics.images_decoded == 0
        gate.set()
        answers = [first.result(), second.result()]
    assert [r.status_code for r in answers] == [200, 200]
    assert metrics.images_decoded == 2 and metrics.decode_waiting == 0


def test_a_large_jpeg_within_budget_is_downscaled_to_the_judge_cap(rm, judge_server):
    from rationalrewards.serve import ServerMetrics

    metrics = ServerMetrics()
    big = Image.new("RGB", (3000, 2000), (200, 200, 200))
    with ServerThread(create_app(rm, metrics=metrics)) as server:
        r = post_json(f"{server.url}/v1/reward", {"items": [{"prompt": "p", "image": b64_of(big, "JPEG")}]})
    assert r.status_code == 200 and r.json()["results"][0]["ok"]
    assert metrics.decoded_pixels == 6_000_000
    (_, sent), = judge_server.requests[-1].images("user")
    import io

    w, h = Image.open(io.BytesIO(sent)).size
    assert w * h <= rm.max_pixels and abs(w / h - 1.5) < 0.01


def test_remote_reward_waits_out_a_busy_server(rm, gated_decoding):
    """429 + Retry-After is retried by the client, which then gets its critique."""
    from concurrent.futures import ThreadPoolExecutor

    from rationalrewards.serve import ServerMetrics

    gate, entered = gated_decoding
    metrics = ServerMetrics()
    app = create_app(rm, metrics=metrics, max_image_pixels=500_000, max_request_pixels=500_000,
                     max_decoding_pixels=500_000, decode_wait_s=0)
    with ServerThread(app) as server, ThreadPoolExecutor(2) as pool:
        blocker = pool.submit(post_json, f"{server.url}/v1/reward",
                              {"items": [{"prompt": "p", "image": b64_of(grey(0.4, 600))}]})
        assert entered.wait(30)
        remote = RemoteReward(server.url, max_retries=30, backoff_base=0.01, max_pixels=None)
        waiting = pool.submit(remote.critique, "p", grey(0.8, 600))
        wait_until(lambda: metrics.request_failure_count("busy") >= 1, "the client to be told the server is busy")
        gate.set()
        res = waiting.result()
        remote.close()
        assert blocker.result().status_code == 200
    assert res.ok and res.scores["text_faithfulness"] == pytest.approx(1 + 3 * 0.8, abs=0.01)


def test_remote_reward_fails_a_bad_prompt_alone_and_never_raises(rm, judge_server):
    with ServerThread(create_app(rm)) as server:
        remote = RemoteReward(server.url)
        results = remote.critique_batch([("fine", grey(0.3), None, "a"), ("bad \ud800 text", grey(0.5), None, "b"),
                                         ("", grey(0.5), None, "c"), ("fine", grey(0.7), None, "d")])
        remote.close()
    assert [r.id for r in results] == ["a", "b", "c", "d"]
    assert [r.ok for r in results] == [True, False, False, True]
    assert results[1].error_kind == "input" and "unpaired surrogate (U+D800)" in results[1].error
    assert results[2].error_kind == "input" and "is empty" in results[2].error
    assert judge_server.chat_request_count == 2


def test_remote_reward_splits_a_request_the_server_finds_too_big(rm, judge_server):
    """A client configured for bigger requests than the server takes (413 too_many_images) halves
    the request until it fits, instead of failing every item."""
    with ServerThread(create_app(rm, max_images_per_request=2)) as server:
        remote = RemoteReward(server.url, max_images_per_request=8)
        results = remote.critique_batch([("p", grey(i / 10), None, str(i)) for i in range(5)])
        remote.close()
    assert [r.id for r in results] == [str(i) for i in range(5)]
    assert all(r.ok for r in results)
    assert judge_server.chat_request_count == 5


def test_remote_reward_drops_only_the_image_the_server_refuses(rm, judge_server):
    """An image over the server's per-image cap (the client sends it unscaled here) fails alone; the
    other items of its request are sent again and judged."""
    with ServerThread(create_app(rm, max_image_pixels=10_000, max_request_pixels=100_000)) as server:
        remote = RemoteReward(server.url, max_pixels=None)
        results = remote.critique_batch([("p", grey(0.2, 64), None, "small"), ("p", grey(0.5, 200), None, "huge"),
                                         ("p", grey(0.8, 64), None, "small2")])
        remote.close()
    assert [r.ok for r in results] == [True, False, True]
    assert results[1].error_kind == "input" and "HTTP 413" in results[1].error
    assert "items[1].image is 200x200 (40000 pixels), over the per-image limit of 10000" in results[1].error
    assert judge_server.chat_request_count == 2


def test_cli_rejects_inconsistent_pixel_limits():
    result = CliRunner().invoke(cli_app, ["serve", "--base-url", "http://127.0.0.1:9/v1", "--model", "m",
                                          "--max-image-megapixels", "1", "--max-request-megapixels", "8",
                                          "--max-decoding-megapixels", "4"])
    assert result.exit_code == 2
    assert "--max-decoding-megapixels (4) must be at least --max-request-megapixels (8)" in " ".join(result.output.split())
    out_of_range = CliRunner().invoke(cli_app, ["serve", "--base-url", "http://127.0.0.1:9/v1", "--model", "m",
                                                "--max-image-megapixels", "100"])
    assert out_of_range.exit_code == 2 and "--max-image-megapixels" in out_of_range.output


def test_cli_serve_concurrency_bounds_critiques_in_flight_at_the_judge():
    """`serve --concurrency 2`: however many items arrive, the judge never holds more than 2. The
    judge holds the first critique until a second is in flight, so a limit of 1 (or a serialising
    server) would time out rather than pass."""
    state = {"in_flight": 0, "peak": 0, "event": None}

    async def pair_judge(req: RecordedRequest) -> str:
        if state["event"] is None:
            state["event"] = asyncio.Event()
        state["in_flight"] += 1
        state["peak"] = max(state["peak"], state["in_flight"])
        if state["peak"] >= 2:
            state["event"].set()
        try:
            await asyncio.wait_for(state["event"].wait(), timeout=30)
            return pixel_judge()(req)
        finally:
            state["in_flight"] -= 1

    with ScriptedServer(pair_judge) as judge:
        port = _free_port()
        proc = subprocess.Popen(
            [sys.executable, "-c", "from rationalrewards.cli.main import main; main()", "serve",
             "--base-url", judge.base_url, "--model", "judge", "--port", str(port), "--log-level", "warning",
             "--concurrency", "2", "--max-retries", "0"],
            env={**os.environ, "RATIONALREWARDS_TOKEN": ""}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            url = f"http://127.0.0.1:{port}"

            def up() -> bool:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                try:
                    return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
                except httpx.HTTPError:
                    return False

            wait_until(up, "the server to come up", timeout=60)
            remote = RemoteReward(url)
            results = remote.critique_batch([("p", grey(i / 10), None, str(i)) for i in range(8)])
            remote.close()
        finally:
            proc.terminate()
            proc.wait(timeout=15)
    assert all(r.ok for r in results)
    assert judge.chat_request_count == 8
    assert judge.max_chat_in_flight == 2
