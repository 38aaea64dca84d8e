"""RewardModel over the OpenAI-compatible backend, against a real local server that misbehaves."""

from __future__ import annotations

import asyncio
import io

import pytest
from PIL import Image, ImageStat

from rationalrewards import RewardModel
from rationalrewards.backends import SamplingParams
from rationalrewards.backends.openai_http import OpenAIBackend
from rationalrewards.testing.scripted_server import (
    RecordedRequest,
    Reply,
    ScriptedServer,
    critique_text,
    judge_responder,
    pairwise_text,
)

T2I_SCORES = {"text_faithfulness": 3.5, "physical_quality": 2.5, "text_rendering": None}


def redness(png: bytes) -> float:
    r, g, b = ImageStat.Stat(Image.open(io.BytesIO(png)).convert("RGB")).mean
    return (r - (g + b) / 2) / 255


def colour_judge(req: RecordedRequest):
    """Prefers red images: Text Faithfulness = 1 + 3 * redness of each judged image."""
    imgs = [data for _, data in req.images()]
    task = "edit" if "Source Image" in req.text("user") else "t2i"
    judged = imgs[1:] if task == "edit" else imgs
    scores = [{"text_faithfulness": 1 + 3 * max(0.0, redness(d)), "image_faithfulness": 3.0,
               "physical_quality": 3.0, "text_rendering": None} for d in judged]
    if "Image A" in req.text("user"):
        return pairwise_text(task, scores[0], scores[1])
    return critique_text(task, scores[0], refined_request="a bright red ball")


@pytest.fixture
def red(tmp_path):
    p = tmp_path / "red.png"
    Image.new("RGB", (64, 64), (230, 20, 20)).save(p)
    return str(p)


@pytest.fixture
def grey(tmp_path):
    p = tmp_path / "grey.png"
    Image.new("RGB", (64, 64), (128, 128, 128)).save(p)
    return str(p)


def fast_backend(server: ScriptedServer, **kw) -> OpenAIBackend:
    kw.setdefault("backoff_base", 0.01)
    kw.setdefault("backoff_max", 0.05)
    return OpenAIBackend(server.base_url, "judge", **kw)


def test_critique_sends_the_released_layout_and_parses_the_answer(red):
    with ScriptedServer(judge_responder(T2I_SCORES)) as server:
        rm = RewardModel(fast_backend(server), sampling=SamplingParams(temperature=0.1, max_tokens=900, seed=7))
        res = rm.critique("a red ball", red)
        rm.close()
        req = server.requests[-1]
    assert res.ok, res.error
    assert res.task == "t2i"
    assert res.scores["text_faithfulness"] == 3.5 and res.scores["text_rendering"] is None
    assert res.reward == pytest.approx(((3.5 + 2.5) / 2 - 1) / 3)
    assert res.refined_request == "a refined request"
    body = req.json
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert body["temperature"] == 0.1 and body["max_tokens"] == 900 and body["seed"] == 7
    assert body["model"] == "judge"
    assert "User Instruction: a red ball" in req.text("user")
    mime, _ = req.images()[0]
    assert mime == "image/png"


def test_edit_critique_sends_source_then_edited_image(red, grey):
    with ScriptedServer(colour_judge) as server:
        rm = RewardModel(fast_backend(server))
        res = rm.critique("make the ball red", red, source=grey)
        rm.close()
        req = server.requests[-1]
    assert res.ok and res.task == "edit"
    assert res.scores["image_faithfulness"] == 3.0
    assert len(req.images()) == 2
    assert redness(req.images()[0][1]) < 0.01 < redness(req.images()[1][1])


def test_transient_faults_are_retried_until_success(red):
    faults = [
        Reply(status=500),
        Reply(status=429, headers={"Retry-After": "0"}),
        Reply(truncate_body=True, content=critique_text("t2i", T2I_SCORES)),
        Reply(drop_connection=True),
    ]
    with ScriptedServer(judge_responder(T2I_SCORES), faults=faults) as server:
        rm = RewardModel(fast_backend(server, max_retries=4))
        res = rm.critique("a red ball", red)
        rm.close()
        assert server.chat_request_count == 5
    assert res.ok, res.error


def test_persistent_failure_is_an_explicit_backend_error_not_a_zero_reward(red):
    with ScriptedServer(lambda req: Reply(status=503)) as server:
        rm = RewardModel(fast_backend(server, max_retries=2))
        res = rm.critique("a red ball", red)
        rm.close()
        assert server.chat_request_count == 3
    assert not res.ok
    assert res.error_kind == "backend"
    assert res.reward is None
    assert "HTTP 503" in res.error and "3 attempt" in res.error


def test_client_errors_are_not_retried(red):
    with ScriptedServer(lambda req: Reply(status=400, body=b'{"error": "bad model"}')) as server:
        rm = RewardModel(fast_backend(server, max_retries=3))
        res = rm.critique("a red ball", red)
        rm.close()
        assert server.chat_request_count == 1
    assert res.error_kind == "backend" and "HTTP 400" in res.error


def test_timeouts_are_retried_then_reported(red):
    with ScriptedServer(lambda req: Reply(content="late", delay_s=2.0)) as server:
        rm = RewardModel(fast_backend(server, timeout=0.2, max_retries=1))
        res = rm.critique("a red ball", red)
        rm.close()
    assert res.error_kind == "backend"
    assert "timeout" in res.error


def test_malformed_json_body_is_retried(red):
    with ScriptedServer(judge_responder(T2I_SCORES), faults=[Reply(body=b'{"choices": [')]) as server:
        rm = RewardModel(fast_backend(server))
        res = rm.critique("a red ball", red)
        rm.close()
    assert res.ok


def test_unparseable_answer_is_a_parse_failure_with_raw_text_kept(red):
    noise = "lorem ipsum tokens tokens ## ## 3.2 blah"
    with ScriptedServer(lambda req: noise) as server:
        rm = RewardModel(fast_backend(server))
        res = rm.critique("a red ball", red)
        rm.close()
    assert not res.ok
    assert res.error_kind == "parse"
    assert res.reward is None
    assert res.raw == noise
    assert "missing dimension" in res.error


def test_truncated_answer_names_max_tokens(red):
    with ScriptedServer(judge_responder(T2I_SCORES)) as server:
        rm = RewardModel(fast_backend(server), sampling=SamplingParams(max_tokens=40))
        res = rm.critique("a red ball", red)
        rm.close()
    assert not res.ok and "max_tokens=40" in res.error


def test_images_are_downscaled_to_the_cap_before_sending(tmp_path):
    big = tmp_path / "big.png"
    Image.new("RGB", (2048, 2048), (200, 10, 10)).save(big)
    with ScriptedServer(judge_responder(T2I_SCORES)) as server:
        rm = RewardModel(fast_backend(server))
        assert rm.critique("x", str(big)).ok
        rm.close()
        _, data = server.requests[-1].images()[0]
    w, h = Image.open(io.BytesIO(data)).size
    assert w * h <= 802_816 and w == h


def test_one_client_and_few_connections_for_many_concurrent_requests(red):
    with ScriptedServer(judge_responder(T2I_SCORES), latency_s=0.05) as server:
        backend = fast_backend(server, concurrency=8)
        rm = RewardModel(backend)
        results = rm.critique_batch([{"id": str(i), "prompt": "a red ball", "image": red} for i in range(40)])
        rm.close()
        assert all(r.ok for r in results)
        assert [r.id for r in results] == [str(i) for i in range(40)]
        assert backend.clients_created == 1
        assert server.connections_opened <= 8


def test_several_base_urls_share_the_load_and_cover_a_dead_server(red):
    with ScriptedServer(judge_responder(T2I_SCORES), latency_s=0.02) as s1, \
            ScriptedServer(judge_responder(T2I_SCORES), latency_s=0.02) as s2:
        backend = OpenAIBackend([s1.base_url, s2.base_url], "judge", concurrency=8, backoff_base=0.01)
        rm = RewardModel(backend)
        results = rm.critique_batch([{"prompt": "x", "image": red} for _ in range(24)])
        assert all(r.ok for r in results)
        assert s1.chat_request_count > 4 and s2.chat_request_count > 4
        dead_url = s2.base_url
        s2.stop()
        backend2 = OpenAIBackend([s1.base_url, dead_url], "judge", concurrency=4, backoff_base=0.01, max_retries=2)
        rm2 = RewardModel(backend2)
        again = rm2.critique_batch([{"prompt": "x", "image": red} for _ in range(8)])
        assert all(r.ok for r in again), [r.error for r in again if not r.ok]
        rm.close()
        rm2.close()


def test_model_name_is_discovered_when_not_given(red):
    with ScriptedServer(judge_responder(T2I_SCORES), model_name="served-judge") as server:
        rm = RewardModel(OpenAIBackend(server.base_url))
        assert rm.ready(5)
        res = rm.critique("x", red)
        rm.close()
        assert server.requests[-1].json["model"] == "served-judge"
    assert res.ok


def test_readiness_check_fails_fast_when_nothing_listens():
    backend = OpenAIBackend("http://127.0.0.1:9/v1", "m")
    rm = RewardModel(backend)
    assert rm.ready(timeout=0.5) is False
    rm.close()


def test_bad_inputs_fail_before_any_request(tmp_path, red):
    with ScriptedServer(judge_responder(T2I_SCORES)) as server:
        rm = RewardModel(fast_backend(server))
        missing = rm.critique("x", str(tmp_path / "missing.png"))
        (tmp_path / "bad.png").write_bytes(b"garbage")
        corrupt = rm.critique("x", str(tmp_path / "bad.png"))
        empty_prompt = rm.critique("   ", red)
        rm.close()
        assert server.chat_request_count == 0
    for res in (missing, corrupt, empty_prompt):
        assert not res.ok and res.error_kind == "input" and res.reward is None
    assert "missing.png" in missing.error
    assert "bad.png" in corrupt.error
    assert "empty" in empty_prompt.error


def test_batch_keeps_going_past_bad_items(tmp_path, red):
    with ScriptedServer(judge_responder(T2I_SCORES)) as server:
        rm = RewardModel(fast_backend(server))
        res = rm.critique_batch([
            {"id": "a", "prompt": "x", "image": red},
            {"id": "b", "prompt": "x", "image": str(tmp_path / "nope.png")},
            {"id": "c", "prompt": "x", "image": red},
        ])
        rm.close()
    assert [r.ok for r in res] == [True, False, True]
    assert res[1].error_kind == "input"


def test_pairwise_compare_follows_the_scores(red, grey):
    with ScriptedServer(colour_judge) as server:
        rm = RewardModel(fast_backend(server))
        ab = rm.compare("a red ball", red, grey)
        ba = rm.compare("a red ball", grey, red)
        req = server.requests[0]
        rm.close()
    assert ab.ok and ab.winner == "A" and ab.reward_a > ab.reward_b
    assert ba.winner == "B"
    assert [m["role"] for m in req.json["messages"]] == ["user"]
    assert "1. Generated Image A" in req.text("user")


def test_swap_keeps_a_consistent_verdict_and_flags_position_bias(red, grey):
    with ScriptedServer(colour_judge) as server:
        rm = RewardModel(fast_backend(server))
        res = rm.compare("a red ball", grey, red, swap=True)
        rm.close()
        assert server.chat_request_count == 2
    assert res.ok and res.winner == "B"
    assert len(res.orders) == 2 and res.orders[1].winner == "B"
    assert res.position_consistent is True

    always_first = lambda req: pairwise_text("t2i", {"text_faithfulness": 4, "physical_quality": 4, "text_rendering": None},  # noqa: E731
                                             {"text_faithfulness": 2, "physical_quality": 2, "text_rendering": None})
    with ScriptedServer(always_first) as server:
        rm = RewardModel(fast_backend(server))
        biased = rm.compare("a red ball", grey, red, swap=True)
        single = rm.compare("a red ball", grey, red)
        rm.close()
    assert single.winner == "A"
    assert biased.winner == "tie" and biased.position_consistent is False


def test_swap_with_one_failed_order_is_not_ok(red, grey):
    replies = iter([pairwise_text("t2i", T2I_SCORES, T2I_SCORES), "garbage"])
    with ScriptedServer(lambda req: next(replies)) as server:
        rm = RewardModel(fast_backend(server, concurrency=1))
        res = rm.compare("x", red, grey, swap=True)
        rm.close()
    assert not res.ok and res.winner is None and res.reward_a is None
    assert "order" in res.error


def test_pointwise_compare_critiques_each_image_and_stops_before_refinement(red, grey):
    with ScriptedServer(colour_judge) as server:
        rm = RewardModel(fast_backend(server))
        res = rm.compare("a red ball", grey, red, mode="pointwise")
        rm.close()
        reqs = server.requests
    assert res.ok and res.mode == "pointwise" and res.winner == "B"
    assert len(reqs) == 2
    assert all("# User Request Refinement" in r.json["stop"] for r in reqs)


def test_pairwise_tie_tolerance(red, grey):
    close = lambda req: pairwise_text("t2i", {"text_faithfulness": 3.0, "physical_quality": 3.0, "text_rendering": None},  # noqa: E731
                                      {"text_faithfulness": 3.1, "physical_quality": 3.0, "text_rendering": None})
    with ScriptedServer(close) as server:
        rm = RewardModel(fast_backend(server))
        strict = rm.compare("x", red, grey)
        tolerant = rm.compare("x", red, grey, tie_tolerance=0.15)
        rm.close()
    assert strict.winner == "B" and tolerant.winner == "tie"


def test_response_cache_avoids_paying_twice(tmp_path, red):
    with ScriptedServer(judge_responder(T2I_SCORES)) as server:
        rm = RewardModel.from_openai(server.base_url, "judge", cache=tmp_path / "cache")
        first = rm.critique("a red ball", red)
        second = rm.critique("a red ball", red)
        other = rm.critique("a blue ball", red)
        rm.close()
        assert server.chat_request_count == 2
    assert first.ok and second.ok and other.ok
    assert second.usage.cached and not first.usage.cached
    assert second.scores == first.scores


def test_failures_are_not_cached(tmp_path, red):
    with ScriptedServer(judge_responder(T2I_SCORES), faults=[Reply(status=400)]) as server:
        rm = RewardModel.from_openai(server.base_url, "judge", cache=tmp_path / "cache")
        assert not rm.critique("a red ball", red).ok
        assert rm.critique("a red ball", red).ok
        rm.close()
        assert server.chat_request_count == 2


async def test_async_api_runs_on_the_callers_loop(red):
    with ScriptedServer(judge_responder(T2I_SCORES)) as server:
        rm = RewardModel(fast_backend(server))
        results = await asyncio.gather(*(rm.acritique("a red ball", red, id=str(i)) for i in range(5)))
        await rm.aclose()
    assert all(r.ok for r in results)
