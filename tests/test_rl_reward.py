"""RationalReward against a real local scripted judge: order, per-dimension scores, failure policies."""

from __future__ import annotations

import asyncio
import io
import math

import pytest
import torch
from PIL import Image

from rationalrewards import RewardModel
from rationalrewards.backends import SamplingParams
from rationalrewards.backends.openai_http import OpenAIBackend
from rationalrewards.rl import RationalReward, RewardFailure
from rationalrewards.testing.judges import brightness, pixel_judge, pixel_scores
from rationalrewards.testing.scripted_server import RecordedRequest, Reply, ScriptedServer

GARBAGE = "I would rather not grade this picture."


def grey(level: float, size: int = 16) -> Image.Image:
    v = round(255 * level)
    return Image.new("RGB", (size, size), (v, v, v))


def solid(rgb: tuple[int, int, int], size: int = 16) -> Image.Image:
    return Image.new("RGB", (size, size), rgb)


def expected_reward(img: Image.Image) -> float:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    s = pixel_scores(buf.getvalue())
    return ((s["text_faithfulness"] + s["physical_quality"]) / 2 - 1) / 3


def is_blue(req: RecordedRequest) -> bool:
    data = req.images()[-1][1]
    r, g, b = Image.open(io.BytesIO(data)).convert("RGB").getpixel((0, 0))
    return b > 200 and r < 50 and g < 50


def judge_failing_on_blue(req: RecordedRequest) -> str | Reply:
    """The pixel judge, except that it rambles (unparseable) about pure-blue images."""
    return GARBAGE if is_blue(req) else pixel_judge()(req)


def reward_model(server: ScriptedServer, **backend_kw) -> RewardModel:
    backend_kw.setdefault("backoff_base", 0.01)
    backend_kw.setdefault("backoff_max", 0.02)
    return RewardModel(OpenAIBackend(server.base_url, "judge", **backend_kw),
                       sampling=SamplingParams(temperature=0.1, max_tokens=1024, seed=7))


@pytest.fixture
def server():
    with ScriptedServer(judge_failing_on_blue) as s:
        yield s


def test_rewards_and_dimensions_follow_the_inputs_in_order(server):
    levels = [0.75, 0.0, 1.0, 0.25]
    x = torch.stack([torch.full((3, 8, 8), lv) for lv in levels])  # N x C x H x W in [0, 1]
    rm = reward_model(server)
    batch = RationalReward(rm)(x, ["p"] * 4, metadata=[{"id": f"s{i}"} for i in range(4)])
    rm.close()
    assert batch.valid == [True] * 4
    assert batch.scores["text_faithfulness"] == pytest.approx([1 + 3 * lv for lv in levels], abs=0.01)
    assert batch.scores["physical_quality"] == pytest.approx([1.0] * 4)
    assert all(math.isnan(v) for v in batch.scores["text_rendering"])  # N/A
    assert "image_faithfulness" not in batch.scores  # no edit in the batch
    assert batch.rewards == pytest.approx([expected_reward(grey(lv)) for lv in levels], abs=0.01)
    assert [c.id for c in batch.critiques] == ["s0", "s1", "s2", "s3"]
    assert batch.failure_reasons == [None] * 4 and batch.filled_by == [None] * 4
    t = batch.tensor()
    assert t.dtype == torch.float32 and t.shape == (4,)


def test_scores_only_stops_the_judge_before_the_refinement_tail(server):
    rm = reward_model(server)
    imgs = [grey(0.5), grey(0.6)]
    short = RationalReward(rm, scores_only=True)(imgs, ["p", "p"])
    assert server.requests[-1].json["stop"] == ["# User Request Refinement"]
    full = RationalReward(rm, scores_only=False)(imgs, ["p", "p"])
    assert "stop" not in server.requests[-1].json
    rm.close()
    assert short.valid == full.valid == [True, True]
    assert short.rewards == pytest.approx(full.rewards)
    assert all(c.refined_request is None for c in short.critiques)
    assert all(c.refined_request == "a refined request" for c in full.critiques)
    assert short.stats()["completion_tokens"] < full.stats()["completion_tokens"]


def test_mask_policy_keeps_a_failed_critique_out_of_the_rewards(server):
    rm = reward_model(server)
    batch = RationalReward(rm, failure_policy="mask")([grey(0.5), solid((0, 0, 255)), grey(1.0)], ["p"] * 3)
    rm.close()
    assert batch.valid == [True, False, True]
    assert math.isnan(batch.rewards[1]) and not math.isnan(batch.rewards[0])
    assert batch.masked == [False, True, False]
    assert batch.filled_by == [None, "mask", None]
    assert batch.failure_reasons[1].startswith("parse: ")
    assert batch.critiques[1].raw == GARBAGE
    stats = batch.stats()
    assert stats["failure_rate/parse"] == pytest.approx(1 / 3)
    assert stats["reward_mean"] == pytest.approx((batch.rewards[0] + batch.rewards[2]) / 2)


def test_retry_asks_again_with_a_new_seed():
    def flaky(req: RecordedRequest):
        # Unparseable on the first seed only: a retry with the same seed would fail again.
        return GARBAGE if req.json.get("seed") == 7 else pixel_judge()(req)

    with ScriptedServer(flaky) as server:
        rm = reward_model(server)
        batch = RationalReward(rm, failure_policy="retry:2")([grey(0.5)], ["p"])
        rm.close()
        seeds = [r.json["seed"] for r in server.requests]
    assert batch.valid == [True] and batch.attempts == [2]
    assert seeds == [7, 8]
    assert batch.stats()["retries"] == 1


def test_retries_give_up_and_fall_through_to_the_next_step(server):
    rm = reward_model(server)
    batch = RationalReward(rm, failure_policy="retry:2,value:0.5")([solid((0, 0, 255)), grey(0.2)], ["p", "p"])
    rm.close()
    assert batch.attempts == [3, 1]
    assert batch.rewards[0] == 0.5 and batch.valid == [False, True] and batch.filled_by[0] == "value"


def test_group_mean_fills_from_the_same_group_only(server):
    rm = reward_model(server)
    blue = solid((0, 0, 255))
    imgs = [grey(0.2), blue, grey(0.8), blue, blue]
    prompts = ["cat", "cat", "cat", "dog", "dog"]
    masked = RationalReward(rm, failure_policy="group-mean")(imgs, prompts)
    filled = RationalReward(rm, failure_policy="group-mean,batch-mean")(imgs, prompts)
    rm.close()
    cat_mean = (masked.rewards[0] + masked.rewards[2]) / 2
    assert masked.rewards[1] == pytest.approx(cat_mean) and masked.filled_by[1] == "group-mean"
    assert math.isnan(masked.rewards[3]) and masked.filled_by[3] == "mask"  # the dog group has no valid sample
    assert filled.rewards[3] == pytest.approx(cat_mean) and filled.filled_by[3] == "batch-mean"
    assert masked.valid == filled.valid == [True, False, True, False, False]


def test_raise_policy_refuses_to_invent_rewards(server):
    rm = reward_model(server)
    with pytest.raises(RewardFailure, match="parse"):
        RationalReward(rm, failure_policy="group-mean,raise")([solid((0, 0, 255))] * 2, ["p", "p"])
    rm.close()


def test_unreadable_images_fail_as_input_without_calling_the_judge(server):
    rm = reward_model(server)
    batch = RationalReward(rm, failure_policy="retry:3")([b"not an image", grey(0.5)], ["p", "p"])
    rm.close()
    assert batch.valid == [False, True]
    assert batch.failure_kinds() == ["input", None]
    assert "images[0]" in batch.failure_reasons[0]
    assert batch.attempts == [0, 1]
    assert server.chat_request_count == 1


def test_a_judge_that_is_down_is_a_backend_failure_never_a_zero():
    with ScriptedServer(lambda req: Reply(status=503)) as server:
        rm = reward_model(server, max_retries=0)
        batch = RationalReward(rm)([grey(0.5)], ["p"])
        rm.close()
    assert batch.valid == [False] and math.isnan(batch.rewards[0])
    assert batch.failure_kinds() == ["backend"] and "503" in batch.failure_reasons[0]


def test_edits_are_grouped_by_source_content_not_prompt_text(server):
    rm = reward_model(server)
    src_a, src_b = grey(0.1), grey(0.9)
    edits = [grey(0.2), grey(0.6), grey(0.3), grey(0.7)]
    sources = [src_a, src_a, src_b, src_b]
    batch = RationalReward(rm, aggregation="gdpo")(edits, ["make it brighter"] * 4, sources=sources)
    rm.close()
    assert batch.tasks == ["edit"] * 4
    assert "image_faithfulness" in batch.scores
    assert batch.group_keys[0] == batch.group_keys[1] != batch.group_keys[2] == batch.group_keys[3]
    # Within each source's group the brighter edit wins by the same normalised margin.
    assert batch.rewards[0] == pytest.approx(-batch.rewards[1]) and batch.rewards[1] > 0
    assert batch.rewards[2] == pytest.approx(batch.rewards[0], abs=1e-6)
    # The judge saw the source first, then the edit.
    req = server.requests[-1]
    assert len(req.images()) == 2 and brightness(req.images()[0][1]) in (pytest.approx(0.1, abs=0.01),
                                                                        pytest.approx(0.9, abs=0.01))


def test_explicit_group_ids_override_the_default_grouping(server):
    rm = reward_model(server)
    batch = RationalReward(rm, aggregation="gdpo")([grey(0.2), grey(0.8)], ["a", "b"], group_ids=[1, 1])
    rm.close()
    assert batch.rewards[0] < 0 < batch.rewards[1]


def test_submit_scores_in_the_background(server):
    rm = reward_model(server)
    reward = RationalReward(rm)
    future = reward.submit([grey(0.5)] * 3, ["p"] * 3)
    batch = future.result(timeout=30)
    rm.close()
    assert batch.valid == [True] * 3


def test_background_scoring_runs_on_the_reward_models_own_loop(server):
    rm = reward_model(server)
    loop = rm.event_loop
    assert rm.event_loop is loop  # started once, then reused

    async def where() -> object:
        return asyncio.get_running_loop()

    assert rm.run_sync(where()) is loop  # the sync API runs there
    batch = RationalReward(rm).submit([grey(0.5)], ["p"]).result(timeout=30)
    assert batch.valid == [True] and rm.event_loop is loop  # and so does the RL reward
    rm.close()


async def test_score_is_awaitable_inside_a_running_loop(server):
    rm = reward_model(server)
    batch = await RationalReward(rm).score([grey(0.5)], ["p"])
    await rm.aclose()
    assert batch.valid == [True]


def test_memo_reuses_a_critique_for_the_same_prompt_and_image(server):
    rm = reward_model(server)
    reward = RationalReward(rm, memo_size=8)
    first = reward([grey(0.5), grey(0.7)], ["p", "p"])
    n = server.chat_request_count
    again = reward([grey(0.7), grey(0.5)], ["p", "p"])
    rm.close()
    assert server.chat_request_count == n
    assert again.rewards == [first.rewards[1], first.rewards[0]]


def test_mismatched_lengths_are_caller_errors(server):
    rm = reward_model(server)
    reward = RationalReward(rm)
    with pytest.raises(ValueError, match="1 prompts for 2 images"):
        reward([grey(0.1), grey(0.2)], ["p"])
    with pytest.raises(TypeError, match="single string"):
        reward([grey(0.1)], "p")
    rm.close()


def test_in_process_tiny_model_scores_end_to_end(tiny_qwen3vl):
    # A random tiny checkpoint writes noise: every critique fails to parse, and the batch says so.
    rm = RewardModel.from_pretrained(tiny_qwen3vl, device="cpu", dtype="float32", batch_size=4,
                                     sampling=SamplingParams(max_tokens=8, temperature=0.0))
    batch = RationalReward(rm)(torch.rand(3, 3, 32, 32), ["a", "b", "c"])
    rm.close()
    assert batch.valid == [False] * 3
    assert batch.failure_kinds() == ["parse"] * 3
    assert all(math.isnan(r) for r in batch.rewards)


def test_a_critique_without_any_weighted_score_is_a_failure_of_its_own_kind(server):
    rm = reward_model(server)
    batch = RationalReward(rm, weights="text_rendering=1")([grey(0.5)], ["p"])  # the judge says N/A
    rm.close()
    assert batch.critiques[0].ok and batch.valid == [False]
    assert batch.failure_kinds() == ["no-score"] and "no-score" in batch.failure_reasons[0]


def test_an_empty_batch_is_an_empty_result(server):
    rm = reward_model(server)
    batch = RationalReward(rm)([], [])
    rm.close()
    assert len(batch) == 0 and batch.rewards == [] and batch.stats()["n"] == 0
