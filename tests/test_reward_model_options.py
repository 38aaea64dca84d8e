"""``RewardModel.from_options``: every option reaches the code it names.

Checked against a real local HTTP server (``ScriptedServer``) by what the server saw: the number
of requests in flight at once, the sampling fields of each body, the size of the image sent,
the number of attempts. No timing assertions.
"""

from __future__ import annotations

import asyncio
import io
import time

import pytest
from PIL import Image

from rationalrewards import RewardModel
from rationalrewards.backends import SamplingParams
from rationalrewards.testing.scripted_server import RecordedRequest, Reply, ScriptedServer, critique_text

SCORES = {"text_faithfulness": 3.5, "physical_quality": 2.5, "text_rendering": None}
NA_TF = {"text_faithfulness": None, "physical_quality": 2.5, "text_rendering": None}


@pytest.fixture
def red(tmp_path):
    p = tmp_path / "red.png"
    Image.new("RGB", (64, 64), (230, 20, 20)).save(p)
    return str(p)


def gated_judge(holder: dict[str, ScriptedServer], at_least: int):
    """Hold each answer until the server has seen ``at_least`` requests in flight at once (or a
    5 s deadline passes), so a limit of N is actually reached and any excess would show."""

    async def respond(_req: RecordedRequest) -> str:
        deadline = time.monotonic() + 5.0
        while holder["server"].max_chat_in_flight < at_least and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        return critique_text("t2i", SCORES)

    return respond


@pytest.mark.parametrize("limit", [1, 2, 5])
def test_concurrency_limits_the_requests_in_flight_at_the_server(red, limit):
    holder: dict[str, ScriptedServer] = {}
    with ScriptedServer(gated_judge(holder, limit)) as server:
        holder["server"] = server
        rm = RewardModel.from_options(base_url=server.base_url, model="judge", concurrency=limit)
        try:
            # The batch itself may run 12 at once: only the backend's limit holds requests back.
            results = rm.critique_batch([{"id": str(i), "prompt": "a red ball", "image": red} for i in range(12)],
                                        concurrency=12)
        finally:
            rm.close()
        assert all(r.ok for r in results), [r.error for r in results]
        assert server.chat_request_count == 12
        assert server.max_chat_in_flight == limit
    assert rm.concurrency == limit, "the batch methods use the same limit by default"


def test_sampling_options_reach_the_request_body(red):
    with ScriptedServer(lambda _r: critique_text("t2i", SCORES)) as server:
        rm = RewardModel.from_options(base_url=server.base_url, model="judge", temperature=0.7, max_tokens=321,
                                      seed=11, top_p=0.9)
        rm.critique("a red ball", red)
        rm.close()
        body = server.requests[-1].json
    assert (body["temperature"], body["max_tokens"], body["seed"], body["top_p"]) == (0.7, 321, 11, 0.9)


def test_single_sampling_options_override_the_fields_of_sampling(red):
    with ScriptedServer(lambda _r: critique_text("t2i", SCORES)) as server:
        rm = RewardModel.from_options(base_url=server.base_url, model="judge",
                                      sampling=SamplingParams(temperature=0.2, max_tokens=900), max_tokens=64)
        rm.critique("a red ball", red)
        rm.close()
        body = server.requests[-1].json
    assert (body["temperature"], body["max_tokens"]) == (0.2, 64)


def test_max_pixels_sizes_the_image_sent(red):
    with ScriptedServer(lambda _r: critique_text("t2i", SCORES)) as server:
        rm = RewardModel.from_options(base_url=server.base_url, model="judge", max_pixels=256)
        assert rm.critique("a red ball", red).ok
        rm.close()
        _, data = server.requests[-1].images()[0]
    w, h = Image.open(io.BytesIO(data)).size
    assert w * h <= 256 and w == h


def test_max_retries_sets_the_attempts_per_request(red):
    with ScriptedServer(lambda _r: critique_text("t2i", SCORES), faults=[Reply(status=503)]) as server:
        rm = RewardModel.from_options(base_url=server.base_url, model="judge", max_retries=0)
        result = rm.critique("a red ball", red)
        rm.close()
        assert server.chat_request_count == 1, "max_retries=0: one attempt, no retry"
    assert not result.ok and result.error_kind == "backend"


def test_timeout_bounds_each_attempt(red):
    with ScriptedServer(lambda _r: Reply(content=critique_text("t2i", SCORES), delay_s=30.0)) as server:
        rm = RewardModel.from_options(base_url=server.base_url, model="judge", timeout=0.3, max_retries=0)
        result = rm.critique("a red ball", red)
        rm.close()
    assert not result.ok and result.error_kind == "backend"
    assert "timed out" in (result.error or "").lower() or "timeout" in (result.error or "").lower(), result.error


@pytest.mark.parametrize("allow_na", ["text_faithfulness,text_rendering", ("text_faithfulness", "text_rendering"),
                                      "all"])
def test_allow_na_reaches_the_parser(red, allow_na):
    with ScriptedServer(lambda _r: critique_text("t2i", NA_TF)) as server:
        strict = RewardModel.from_options(base_url=server.base_url, model="judge")
        lenient = RewardModel.from_options(base_url=server.base_url, model="judge", allow_na=allow_na)
        refused, accepted = strict.critique("a red ball", red), lenient.critique("a red ball", red)
        strict.close()
        lenient.close()
    assert not refused.ok and "Text Faithfulness" in (refused.error or "")
    assert accepted.ok and accepted.reward == pytest.approx((2.5 - 1) / 3)
    assert "text_faithfulness" in lenient.describe()["allow_na"]


def test_cache_option_wraps_the_backend(red, tmp_path):
    with ScriptedServer(lambda _r: critique_text("t2i", SCORES)) as server:
        rm = RewardModel.from_options(base_url=server.base_url, model="judge", cache=str(tmp_path / "cache"))
        first, second = rm.critique("a red ball", red), rm.critique("a red ball", red)
        rm.close()
        assert server.chat_request_count == 1
    assert first.ok and second.ok and second.usage is not None and second.usage.cached


def test_none_means_the_default():
    rm = RewardModel.from_options(base_url="http://127.0.0.1:9/v1", model="judge", concurrency=None, timeout=None,
                                  allow_na=None, aggregation=None, templates=None, max_pixels=None)
    assert rm.concurrency == 32 and rm.allow_na == {"text_rendering"} and rm.aggregation.name == "default"
    rm.close()


@pytest.mark.parametrize(("options", "fragment"), [
    ({"concurency": 4}, "concurency"),
    ({"temprature": 0.1}, "temprature"),
    ({"concurrency": 0}, "concurrency"),
    ({"aggregation": "text_faithfulness=nan"}, "finite"),
    ({"allow_na": "colour"}, "colour"),
    ({"sampling": {"temperature": 0.1}}, "SamplingParams"),
])
def test_bad_options_are_refused_naming_them(options, fragment):
    with pytest.raises(ValueError) as info:
        RewardModel.from_options(base_url="http://127.0.0.1:9/v1", model="judge", **options)
    assert fragment in str(info.value)


@pytest.mark.parametrize("kwargs", [{"allow_na": "colour"}, {"aggregation": "text_faithfulness=-1"},
                                    {"concurrency": 0}])
def test_every_constructor_checks_settings_before_building_a_backend(tmp_path, kwargs):
    """A typo must not cost a model load: from_pretrained fails on the setting, not the path."""
    with pytest.raises(ValueError) as pretrained:
        RewardModel.from_pretrained(str(tmp_path / "no_model_here"), **kwargs)
    with pytest.raises(ValueError) as openai:
        RewardModel.from_openai("http://127.0.0.1:9/v1", "judge", **kwargs)
    for info in (pretrained, openai):
        assert "no_model_here" not in str(info.value)
        assert any(word in str(info.value) for word in ("colour", ">= 0", "concurrency"))


def test_from_openai_and_from_pretrained_take_allow_na(red):
    with ScriptedServer(lambda _r: critique_text("t2i", NA_TF)) as server:
        rm = RewardModel.from_openai(server.base_url, "judge", allow_na="all")
        result = rm.critique("a red ball", red)
        rm.close()
    assert result.ok and rm.allow_na == frozenset({"text_faithfulness", "image_faithfulness", "physical_quality",
                                                   "text_rendering"})
