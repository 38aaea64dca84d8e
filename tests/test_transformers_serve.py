"""`transformers serve` can serve the tiny Qwen3-VL folder offline on 127.0.0.1."""

from __future__ import annotations

import base64
import io
import pathlib
from collections.abc import Iterator

import pytest

pytest.importorskip("torch")
pytest.importorskip("torchvision")
pytest.importorskip("fastapi")  # transformers[serving]
pytest.importorskip("uvicorn")

import httpx
from PIL import Image

from rationalrewards.testing.servers import (
    ServeProcess,
    live_group_members,
    start_transformers_serve,
    stop_transformers_serve,
    transformers_serve,
)
from rationalrewards.testing.tiny_models import build_tiny_qwen3vl

pytestmark = pytest.mark.slow  # ~10 s: the server process imports torch and transformers


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return build_tiny_qwen3vl(tmp_path_factory.mktemp("serve") / "qwen3vl")


def _png_data_url(size: tuple[int, int]) -> str:
    buf = io.BytesIO()
    Image.new("RGB", size, (30, 160, 60)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _chat(client: httpx.Client, base_url: str, content: list[dict], **extra) -> httpx.Response:
    body = {"messages": [{"role": "user", "content": content}], "max_tokens": 8, **extra}
    return client.post(f"{base_url}/chat/completions", json=body)


@pytest.fixture(scope="module")
def server(tiny_path: pathlib.Path) -> Iterator[ServeProcess]:
    proc, _ = start_transformers_serve(tiny_path, device="cpu")
    yield proc
    stop_transformers_serve(proc)
    assert proc.returncode is not None
    assert not proc.log_path.exists()
    # stop_transformers_serve returns only once the whole group is gone (zombies aside: an orphan
    # is reaped by whoever adopts it, which may be a PID 1 that never reaps).
    assert live_group_members(proc.pid) == []


def test_chat_completion_with_image(tiny_path: pathlib.Path, server: ServeProcess) -> None:
    base_url = server.base_url
    assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/v1")
    with httpx.Client(timeout=60, trust_env=False) as client:
        models = client.get(f"{base_url}/models").json()["data"]
        assert [m["id"] for m in models] == [str(tiny_path.resolve())] == [server.model]

        text = {"type": "text", "text": "Score the text faithfulness of this image."}
        small = {"type": "image_url", "image_url": {"url": _png_data_url((32, 32))}}
        large = {"type": "image_url", "image_url": {"url": _png_data_url((128, 128))}}
        # The pinned model's id (the absolute folder path) is accepted...
        resp = _chat(client, base_url, [large, text], model=server.model)
        assert resp.status_code == 200, resp.text
        data = resp.json()
        assert data["object"] == "chat.completion"
        choice = data["choices"][0]
        assert choice["message"]["role"] == "assistant"
        assert isinstance(choice["message"]["content"], str)
        assert choice["finish_reason"] in {"stop", "length"}
        assert 1 <= data["usage"]["completion_tokens"] <= 8

        # ...and so is no model at all. The image really reaches the processor: a 128x128 image
        # costs 16 visual tokens, a 32x32 one a single token.
        small_resp = _chat(client, base_url, [small, text])
        assert small_resp.status_code == 200, small_resp.text
        assert data["usage"]["prompt_tokens"] - small_resp.json()["usage"]["prompt_tokens"] == 15

        # Any other name is refused: the server is pinned to the folder it was started with.
        assert _chat(client, base_url, [text], model="tiny-qwen3vl").status_code == 400


@pytest.mark.xfail(
    reason="transformers 5.24 serve passes the processor as generate(tokenizer=...): 'stop' gives HTTP 500 for VLMs",
    strict=False,
)
def test_stop_field_with_multimodal_model(server: ServeProcess) -> None:
    with httpx.Client(timeout=60, trust_env=False) as client:
        resp = _chat(client, server.base_url, [{"type": "text", "text": "hi"}], stop=["a"])
    assert resp.status_code == 200, resp.text


def test_context_manager_kills_server_on_error(tiny_path: pathlib.Path) -> None:
    seen: dict[str, str] = {}
    with pytest.raises(ZeroDivisionError) as info, transformers_serve(tiny_path, device="cpu") as base_url:
        seen["url"] = base_url
        assert httpx.get(base_url.removesuffix("/v1") + "/health", trust_env=False).status_code == 200
        _ = 1 / 0
    with pytest.raises(httpx.TransportError):
        httpx.get(seen["url"] + "/models", trust_env=False, timeout=2)
    notes = getattr(info.value, "__notes__", [])
    assert any("transformers serve log" in note for note in notes)


def test_startup_failure_reports_log(tiny_path: pathlib.Path) -> None:
    # A bad flag makes the CLI exit right after its imports: the cheapest way to exercise the
    # "server died during startup" path, which a broken checkpoint would take too.
    with pytest.raises(RuntimeError, match=r"exited with code 2(.|\n)*no-such-flag"):
        start_transformers_serve(tiny_path, extra_args=["--no-such-flag"])


def test_reward_model_talks_to_a_real_openai_compatible_server(server: ServeProcess, tmp_path: pathlib.Path) -> None:
    """Our HTTP backend end to end against `transformers serve`: the tiny model's noise comes back
    as an honest parse failure with the raw text, and a pairwise call goes through too."""
    from rationalrewards import RewardModel
    from rationalrewards.backends import SamplingParams

    img = tmp_path / "ball.png"
    Image.new("RGB", (64, 64), (200, 30, 30)).save(img)
    rm = RewardModel.from_openai(server.base_url, server.model, sampling=SamplingParams(max_tokens=12))
    assert rm.ready(timeout=30)
    res = rm.critique("a red ball", img)
    pair = rm.compare("a red ball", img, img)
    rm.close()
    assert res.error_kind == "parse" and not res.ok and res.reward is None
    assert res.raw and res.usage.completion_tokens >= 1
    assert pair.error_kind == "parse" and pair.winner is None
    assert pair.usage.prompt_tokens > 0 and pair.usage.completion_tokens >= 1
