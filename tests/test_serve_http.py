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
from rationalrewards.rl.scripted import pixel_judge
from rationalrewards.serve import RemoteReward, RemoteRewardError, ServerThread, create_app
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
