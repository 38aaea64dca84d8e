"""The reward server's HTTP contract, in process (httpx.ASGITransport) against a scripted judge."""

from __future__ import annotations

import base64
import io
import json
import random

import httpx
import pytest
from PIL import Image

from rationalrewards import RewardModel
from rationalrewards.backends.openai_http import OpenAIBackend
from rationalrewards.serve import ServerMetrics, create_app
from rationalrewards.testing.judges import pixel_judge
from rationalrewards.testing.scripted_server import RecordedRequest, ScriptedServer

TOKEN = "s3cret"


def png_b64(level: float, size: int = 16, fmt: str = "PNG") -> str:
    v = round(255 * level)
    buf = io.BytesIO()
    Image.new("RGB", (size, size), (v, v, v)).save(buf, format=fmt)
    return base64.b64encode(buf.getvalue()).decode()


def noise_b64(size: int) -> str:
    buf = io.BytesIO()
    Image.frombytes("RGB", (size, size), random.Random(0).randbytes(size * size * 3)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def judge(req: RecordedRequest) -> str:
    return "no idea" if "unparseable" in req.text("user") else pixel_judge()(req)


@pytest.fixture
def judge_server():
    with ScriptedServer(judge) as s:
        yield s


@pytest.fixture
def rm(judge_server):
    model = RewardModel(OpenAIBackend(judge_server.base_url, "judge", max_retries=0))
    yield model
    model.close()


def client_for(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://rr.test")


def auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_results_come_back_in_order_with_every_dimension(rm, judge_server):
    app = create_app(rm, token=TOKEN)
    levels = [0.9, 0.1, 0.5]
    items = [{"id": f"i{k}", "prompt": "a grey square", "image": png_b64(v)} for k, v in enumerate(levels)]
    items.append({"id": "edit", "prompt": "brighten", "image": "data:image/png;base64," + png_b64(0.7),
                  "source": png_b64(0.2)})
    async with client_for(app) as client:
        r = await client.post("/v1/reward", json={"items": items}, headers=auth())
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["id"] for x in results] == ["i0", "i1", "i2", "edit"]
    assert [x["task"] for x in results] == ["t2i", "t2i", "t2i", "edit"]
    assert all(x["ok"] for x in results)
    for x, lv in zip(results, [*levels, 0.7], strict=True):
        assert x["scores"]["text_faithfulness"] == pytest.approx(1 + 3 * lv, abs=0.01)
        assert set(x["scores"]) == {"text_faithfulness", "image_faithfulness", "physical_quality", "text_rendering"}
        assert x["reward"] is not None and x["refined_request"] == "a refined request"
    assert results[3]["scores"]["image_faithfulness"] == 3.0
    assert results[0]["scores"]["image_faithfulness"] is None


async def test_scores_only_is_passed_to_the_judge_as_a_stop_string(rm, judge_server):
    app = create_app(rm)
    async with client_for(app) as client:
        r = await client.post("/v1/reward", json={"items": [{"prompt": "p", "image": png_b64(0.5)}],
                                                  "scores_only": True})
    assert r.status_code == 200
    assert judge_server.requests[-1].json["stop"] == ["# User Request Refinement"]
    assert r.json()["results"][0]["refined_request"] is None


async def test_a_failed_critique_is_a_result_with_a_reason_not_an_error(rm):
    app = create_app(rm)
    async with client_for(app) as client:
        r = await client.post("/v1/reward", json={"items": [
            {"prompt": "unparseable", "image": png_b64(0.5)}, {"prompt": "fine", "image": png_b64(0.5)}]})
        metrics = (await client.get("/metrics")).text
    assert r.status_code == 200
    bad, good = r.json()["results"]
    assert (bad["ok"], bad["error_kind"], bad["reward"]) == (False, "parse", None)
    assert good["ok"]
    assert 'rationalrewards_item_failures_total{endpoint="reward",kind="parse"} 1' in metrics
    assert 'rationalrewards_items_total{endpoint="reward"} 2' in metrics


async def test_missing_or_wrong_token_is_401_but_healthz_is_open(rm, judge_server):
    app = create_app(rm, token=TOKEN)
    body = {"items": [{"prompt": "p", "image": png_b64(0.5)}]}
    async with client_for(app) as client:
        none = await client.post("/v1/reward", json=body)
        wrong = await client.post("/v1/reward", json=body, headers=auth("nope"))
        metrics_denied = await client.get("/metrics")
        health = await client.get("/healthz")
        metrics = await client.get("/metrics", headers=auth())
    assert none.status_code == wrong.status_code == metrics_denied.status_code == 401
    assert none.headers["www-authenticate"] == "Bearer"
    assert none.json()["kind"] == "auth"
    assert judge_server.chat_request_count == 0
    assert health.status_code == 200
    assert health.json()["limits"]["max_images_per_request"] == 64
    assert 'rationalrewards_request_failures_total{endpoint="reward",kind="auth"} 2' in metrics.text
    assert 'rationalrewards_http_requests_total{endpoint="reward",status="401"} 2' in metrics.text


async def test_a_body_over_the_limit_is_413(rm, judge_server):
    app = create_app(rm, max_body_bytes=2000)
    async with client_for(app) as client:
        r = await client.post("/v1/reward", json={"items": [{"prompt": "p", "image": noise_b64(64)}]})
    assert r.status_code == 413
    assert r.json()["kind"] == "too_large" and "2000" in r.json()["error"]
    assert judge_server.chat_request_count == 0


async def test_the_token_is_checked_before_the_body_is_read(rm):
    app = create_app(rm, token=TOKEN, max_body_bytes=2000)
    async with client_for(app) as client:
        r = await client.post("/v1/reward", json={"items": [{"prompt": "p", "image": noise_b64(64)}]})
    assert r.status_code == 401


async def test_too_many_images_in_one_request_is_413(rm, judge_server):
    app = create_app(rm, max_images_per_request=3)
    img = png_b64(0.5)
    items = [{"prompt": "p", "image": img}, {"prompt": "p", "image": img, "source": [img, img]}]
    async with client_for(app) as client:
        r = await client.post("/v1/reward", json={"items": items})
    assert r.status_code == 413
    assert r.json()["kind"] == "too_many_images" and "4 images" in r.json()["error"]
    assert judge_server.chat_request_count == 0


async def test_malformed_json_is_400(rm):
    async with client_for(create_app(rm)) as client:
        r = await client.post("/v1/reward", content=b'{"items": [', headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["kind"] == "bad_json"


@pytest.mark.parametrize(
    ("image", "message"),
    [
        ("%%%not-base64%%%", "not valid base64"),
        ("data:image/png;base64,@@@@", "not valid base64"),
        ("data:image/png,rawbytes", "data URL is not base64-encoded"),
        (base64.b64encode(b"plain text, not an image").decode(), "not a recognised image"),
        ("https://example.com/cat.png", "URLs are not fetched"),
    ],
)
async def test_a_bad_image_fails_its_item_only_naming_the_field(rm, judge_server, image, message):
    items = [{"id": "good", "prompt": "p", "image": png_b64(0.5)}, {"id": "bad", "prompt": "p", "image": image}]
    async with client_for(create_app(rm)) as client:
        r = await client.post("/v1/reward", json={"items": items})
    assert r.status_code == 200, r.text
    good, bad = r.json()["results"]
    assert good["ok"] and good["id"] == "good"
    assert (bad["ok"], bad["error_kind"], bad["id"], bad["reward"]) == (False, "input", "bad", None)
    assert message in bad["error"] and "items[1].image" in bad["error"]
    assert judge_server.chat_request_count == 1


async def test_server_side_paths_are_never_opened(rm, tmp_path, judge_server, monkeypatch):
    secret = tmp_path / "secret.png"
    Image.new("RGB", (8, 8), (255, 255, 255)).save(secret)
    opened: list[str] = []
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda fp, *a, **k: (opened.append(str(fp)), real_open(fp, *a, **k))[1])
    async with client_for(create_app(rm)) as client:
        r = await client.post("/v1/reward", json={"items": [{"prompt": "p", "image": str(secret)},
                                                            {"prompt": "p", "image": "/etc/hostname"}]})
    assert r.status_code == 200
    assert [(x["ok"], x["error_kind"]) for x in r.json()["results"]] == [(False, "input"), (False, "input")]
    assert not any("secret" in o or "hostname" in o for o in opened)
    assert judge_server.chat_request_count == 0


async def test_schema_violations_are_422_with_a_field_report(rm):
    async with client_for(create_app(rm)) as client:
        r = await client.post("/v1/reward", json={"items": [{"prompt": "p"}, {"prompt": 3, "image": "x",
                                                                              "images": []}]})
    assert r.status_code == 422
    locs = [d["loc"] for d in r.json()["details"]]
    assert ["items", 0, "image"] in locs and ["items", 1, "prompt"] in locs and ["items", 1, "images"] in locs


async def test_compare_endpoint_returns_verdicts_in_order(rm):
    items = [{"id": "x", "prompt": "bright", "image_a": png_b64(0.9), "image_b": png_b64(0.1)},
             {"id": "y", "prompt": "bright", "image_a": png_b64(0.2), "image_b": png_b64(0.8)}]
    async with client_for(create_app(rm)) as client:
        r = await client.post("/v1/compare", json={"items": items, "swap": True})
    assert r.status_code == 200, r.text
    res = r.json()["results"]
    assert [(x["id"], x["winner"]) for x in res] == [("x", "A"), ("y", "B")]
    assert len(res[0]["orders"]) == 2


async def test_metrics_are_prometheus_text(rm):
    metrics = ServerMetrics()
    async with client_for(create_app(rm, metrics=metrics)) as client:
        await client.post("/v1/reward", json={"items": [{"prompt": "p", "image": png_b64(0.5)}]})
        await client.post("/v1/reward", content=b"nope")
        text = (await client.get("/metrics")).text
    assert "# TYPE rationalrewards_request_latency_seconds histogram" in text
    assert 'rationalrewards_request_latency_seconds_count{endpoint="reward"} 2' in text
    assert 'rationalrewards_request_latency_seconds_bucket{endpoint="reward",le="+Inf"} 2' in text
    assert 'rationalrewards_http_requests_total{endpoint="reward",status="200"} 1' in text
    assert 'rationalrewards_request_failures_total{endpoint="reward",kind="bad_json"} 1' in text
    assert "rationalrewards_judge_latency_seconds_count 1" in text
    assert metrics.count_failures() == 0


async def test_openapi_schema_documents_the_api(rm):
    async with client_for(create_app(rm, token=TOKEN)) as client:
        schema = (await client.get("/openapi.json")).json()
    paths = schema["paths"]
    assert {"/v1/reward", "/v1/compare", "/healthz", "/metrics"} <= set(paths)
    body_ref = paths["/v1/reward"]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert body_ref == "#/components/schemas/RewardRequest"
    components = schema["components"]["schemas"]
    assert {"RewardRequest", "RewardItem", "CompareRequest", "CritiqueResult", "ErrorResponse"} <= set(components)
    assert {"400", "401", "413", "415", "422", "429"} <= set(paths["/v1/reward"]["post"]["responses"])
    assert "HTTPBearer" in json.dumps(schema["components"].get("securitySchemes", {}))
