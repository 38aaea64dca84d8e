"""Bad input against the real reward server (uvicorn on 127.0.0.1, scripted judge behind it).

Every kind of bad input gets a 4xx naming what was wrong, or — when only one item's content is
bad — a 200 where that item fails with ``error_kind="input"`` and the reason while the other
items of the same request are judged. Never a 500.
"""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from PIL import Image

from rationalrewards import RewardModel
from rationalrewards.backends.openai_http import OpenAIBackend
from rationalrewards.serve import ServerMetrics, ServerThread, create_app
from rationalrewards.testing.judges import pixel_judge
from rationalrewards.testing.scripted_server import ScriptedServer

JSON = {"Content-Type": "application/json"}
# Small limits, so that refusing is cheap to provoke.
MAX_IMAGES = 8
MAX_IMAGE_PIXELS = 1_000_000
MAX_REQUEST_PIXELS = 2_000_000


def png_bytes(level: float = 0.5, size: int = 16) -> bytes:
    v = round(255 * level)
    buf = io.BytesIO()
    Image.new("RGB", (size, size), (v, v, v)).save(buf, format="PNG")
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares ``width x height`` but carries no pixel data: the server must refuse it
    from its header (decoding it would fail with a different error)."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


GOOD = b64(png_bytes())


def items_with(bad: dict[str, Any], at: int = 1, n: int = 3) -> list[dict[str, Any]]:
    """``n`` good items with ``bad`` merged into item ``at``."""
    out: list[dict[str, Any]] = [{"id": f"i{k}", "prompt": "a grey square", "image": GOOD} for k in range(n)]
    out[at] = {**out[at], **bad}
    return out


def body(obj: Any) -> bytes:
    return json.dumps(obj).encode()


@dataclass
class Case:
    """One bad input: the request, and what the server must answer."""

    name: str
    content: bytes
    status: int
    message: str
    kind: str | None = None          # the error body's kind (whole-request refusals)
    bad_item: int | None = None      # per-item failures: the item that fails
    n_items: int = 3
    headers: dict[str, str] = field(default_factory=lambda: dict(JSON))
    detail: dict[str, Any] | None = None  # expected keys of the first details entry


CASES = [
    # -- one item's content is bad: that item fails, the others are judged ----------------------
    Case("lone surrogate in the prompt", body({"items": items_with({"prompt": "a cat \ud800"})}),
         200, "items[1].prompt: contains an unpaired surrogate (U+D800) at character 6", bad_item=1),
    Case("NUL character in the prompt", body({"items": items_with({"prompt": "a cat\u0000dog"}, at=0)}),
         200, "items[0].prompt: contains a NUL character at character 5", bad_item=0),
    Case("empty prompt", body({"items": items_with({"prompt": "   "}, at=2)}),
         200, "items[2].prompt: is empty", bad_item=2),
    Case("image is not base64", body({"items": items_with({"image": "%%% not base64 %%%"})}),
         200, "items[1].image: not valid base64", bad_item=1),
    Case("image is a URL", body({"items": items_with({"image": "https://example.com/cat.png"})}),
         200, "items[1].image: URLs are not fetched", bad_item=1),
    Case("image is a server path", body({"items": items_with({"image": "/etc/hostname"})}),
         200, "items[1].image: not valid base64", bad_item=1),
    Case("data URL that is not base64", body({"items": items_with({"image": "data:image/png,raw"})}),
         200, "items[1].image: data URL is not base64-encoded", bad_item=1),
    Case("bytes that are not an image", body({"items": items_with({"image": b64(b"just some text")})}),
         200, "items[1].image: not a recognised image file", bad_item=1),
    Case("a format the server does not take (PPM)",
         body({"items": items_with({"image": b64(b"P6 2 2 255\n" + bytes(12))})}),
         200, "items[1].image: not a recognised image file (accepted: PNG, JPEG", bad_item=1),
    Case("truncated PNG", body({"items": items_with({"image": b64(png_bytes(0.3, 64)[:80])})}),
         200, "items[1].image", bad_item=1),
    Case("prompt over the length limit", body({"items": items_with({"prompt": "a" * 16_001})}),
         200, "items[1].prompt: is 16001 characters long, over the limit of 16000", bad_item=1),
    Case("lone surrogate in a source image", body({"items": items_with({"source": ["\ud800" + GOOD]})}),
         200, "items[1].source[0]: not valid base64", bad_item=1),
    # -- the request itself is bad: refused whole, nothing judged ---------------------------------
    Case("deeply nested JSON", b'{"items": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
         400, "nested too deeply", kind="bad_json"),
    Case("body that is not UTF-8", b'{"items": [{"prompt": "caf\xe9", "image": "x"}]}',
         400, "body is not UTF-8 (byte 0xe9 at offset 26)", kind="bad_json"),
    Case("raw NUL byte in the body", b'{"items": [{"prompt": "a\x00b", "image": "x"}]}',
         400, "malformed JSON body: Invalid control character", kind="bad_json"),
    Case("empty body", b"", 400, "malformed JSON body", kind="bad_json"),
    Case("NaN, which is not JSON", b'{"items": [], "scores_only": NaN}', 400, "NaN is not a JSON value",
         kind="bad_json"),
    Case("an integer of 5,000 digits", b'{"items": [], "scores_only": ' + b"1" * 5000 + b"}", 400,
         "malformed JSON body: Exceeds the limit", kind="bad_json"),
    Case("wrong content type", body({"items": items_with({})}), 415, "'text/plain' is not JSON",
         kind="unsupported_media_type", headers={"Content-Type": "text/plain"}),
    Case("a charset that is not UTF-8", body({"items": items_with({})}), 415, "must be UTF-8",
         kind="unsupported_media_type", headers={"Content-Type": "application/json; charset=latin-1"}),
    Case("items is not a list", body({"items": {"prompt": "p", "image": GOOD}}), 422,
         "invalid request: items: Input should be a valid list", kind="invalid",
         detail={"loc": ["items"]}),
    Case("body is not an object", body([{"prompt": "p", "image": GOOD}]), 422,
         "Input should be a valid dictionary", kind="invalid"),
    Case("prompt is not a string", body({"items": items_with({"prompt": 7})}), 422,
         "items.1.prompt: Input should be a valid string", kind="invalid", detail={"loc": ["items", 1, "prompt"]}),
    Case("id over the length limit", body({"items": items_with({"id": "x" * 2000})}), 422,
         "items.1.id: String should have at most 1024 characters", kind="invalid", detail={"loc": ["items", 1, "id"]}),
    Case("too many items", body({"items": [{"prompt": "p", "image": "x"}] * 1000}), 413,
         f"request has 1000 items; this server accepts at most {MAX_IMAGES}", kind="too_many_items",
         detail={"limit": "max_images_per_request", "value": MAX_IMAGES}),
    Case("a source list of 1,000 images", body({"items": items_with({"source": ["x"] * 1000})}), 413,
         "request carries 1003 images", kind="too_many_images", detail={"limit": "max_images_per_request"}),
    Case("one image over the per-image pixel cap",
         body({"items": items_with({"image": b64(png_header_only(7990, 7990))}, at=2)}), 413,
         "items[2].image is 7990x7990 (63840100 pixels), over the per-image limit of 1000000 pixels",
         kind="image_too_large",
         detail={"item": 2, "limit": "max_image_pixels", "value": MAX_IMAGE_PIXELS, "loc": ["items", "2", "image"]}),
    Case("a header beyond the decompression-bomb guard",
         body({"items": items_with({"image": b64(png_header_only(20_000, 20_000))}, at=0)}), 413,
         "items[0].image is larger than the image reader's decompression-bomb guard", kind="image_too_large",
         detail={"item": 0, "limit": "max_image_pixels"}),
    Case("images over the per-request pixel budget",
         body({"items": [{"prompt": "p", "image": b64(png_header_only(1000, 900))} for _ in range(3)]}), 413,
         "request declares 2700000 pixels in 3 images, over the per-request budget of 2000000", kind="too_many_pixels",
         detail={"item": 2, "limit": "max_request_pixels", "value": MAX_REQUEST_PIXELS}),
]


@pytest.fixture(scope="module")
def served():
    """One judge and one server for the whole matrix (each case reads counter deltas)."""
    with ScriptedServer(pixel_judge()) as judge:
        model = RewardModel(OpenAIBackend(judge.base_url, "judge", max_retries=0))
        metrics = ServerMetrics()
        app = create_app(model, max_images_per_request=MAX_IMAGES, max_image_pixels=MAX_IMAGE_PIXELS,
                         max_request_pixels=MAX_REQUEST_PIXELS, max_decoding_pixels=4 * MAX_REQUEST_PIXELS,
                         metrics=metrics)
        with ServerThread(app) as server:
            server.model = model
            yield server, judge, metrics
        model.close()


def test_the_matrix_covers_at_least_twelve_kinds_of_bad_input():
    assert len({c.name for c in CASES}) == len(CASES) >= 12


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_a_clear_4xx_or_a_failed_item_never_a_500(served, case: Case):
    server, judge, metrics = served
    judged_before = judge.chat_request_count
    decoded_before = metrics.images_decoded
    r = httpx.post(f"{server.url}/v1/reward", content=case.content, headers=case.headers, timeout=60)
    assert r.status_code == case.status, r.text[:500]
    assert r.headers["content-type"].startswith("application/json")
    payload = r.json()
    if case.bad_item is not None:
        results = payload["results"]
        assert len(results) == case.n_items
        bad = results[case.bad_item]
        assert (bad["ok"], bad["error_kind"], bad["reward"]) == (False, "input", None)
        assert bad["id"] == f"i{case.bad_item}"
        assert case.message in bad["error"]
        others = [x for k, x in enumerate(results) if k != case.bad_item]
        assert all(x["ok"] and x["reward"] is not None for x in others), others
        assert [x["id"] for x in results] == [f"i{k}" for k in range(case.n_items)]
        assert judge.chat_request_count - judged_before == case.n_items - 1
    else:
        assert payload["kind"] == case.kind
        assert case.message in payload["error"], payload["error"]
        assert payload["details"], "a refusal carries a field report"
        if case.detail is not None:
            first = payload["details"][0]
            assert {k: first.get(k) for k in case.detail} == case.detail
        assert judge.chat_request_count == judged_before
        assert metrics.images_decoded == decoded_before, "a refused request decodes nothing"
    assert metrics.request_failure_count("server_error") == 0


def test_a_surrogate_in_an_id_is_echoed_as_a_json_escape_not_a_500(served):
    server, _, _ = served
    items = items_with({"id": "sample-\udfff"})
    r = httpx.post(f"{server.url}/v1/reward", content=body({"items": items}), headers=JSON, timeout=60)
    assert r.status_code == 200
    assert b"sample-\\udfff" in r.content  # valid JSON text; the id round-trips for a Python client
    assert [x["id"] for x in r.json()["results"]] == ["i0", "sample-\udfff", "i2"]
    assert all(x["ok"] for x in r.json()["results"])


def test_compare_items_fail_alone_too(served):
    server, judge, _ = served
    good = {"prompt": "bright", "image_a": b64(png_bytes(0.9)), "image_b": b64(png_bytes(0.1))}
    items = [{**good, "id": "x"}, {**good, "id": "y", "prompt": "bad \ud800"}, {**good, "id": "z", "image_b": "@@"}]
    before = judge.chat_request_count
    r = httpx.post(f"{server.url}/v1/compare", content=body({"items": items}), headers=JSON, timeout=60)
    assert r.status_code == 200, r.text
    x, y, z = r.json()["results"]
    assert x["ok"] and x["winner"] == "A"
    assert (y["ok"], y["error_kind"], y["winner"]) == (False, "input", None) and "unpaired surrogate" in y["error"]
    assert (z["ok"], z["error_kind"]) == (False, "input") and "items[2].image_b: not valid base64" in z["error"]
    assert judge.chat_request_count - before == 1


def test_a_crash_while_judging_one_item_fails_that_item_only(served, monkeypatch):
    """A bug reached by one item (here: the judge client raising) must not turn the request into a
    500: the item fails with the exception named and the others are judged."""
    server, _, _ = served
    model = server.model
    real = model.acritique

    async def flaky(prompt, *args, **kwargs):
        if prompt == "explode":
            raise RuntimeError("boom")
        return await real(prompt, *args, **kwargs)

    monkeypatch.setattr(model, "acritique", flaky)
    r = httpx.post(f"{server.url}/v1/reward", content=body({"items": items_with({"prompt": "explode"})}),
                   headers=JSON, timeout=60)
    assert r.status_code == 200
    results = r.json()["results"]
    assert [x["ok"] for x in results] == [True, False, True]
    assert results[1]["error_kind"] == "backend" and "RuntimeError: boom" in results[1]["error"]
