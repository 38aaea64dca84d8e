"""The framework adapters: flow_grpo / DiffusionNFT functions and Flow-Factory-style classes."""

from __future__ import annotations

import importlib
import io
import sys
import types
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from rationalrewards import RewardModel
from rationalrewards.backends.openai_http import OpenAIBackend
from rationalrewards.rl import (
    GroupwiseReward,
    PointwiseReward,
    RationalReward,
    RemoteGroupwiseReward,
    RemotePointwiseReward,
    RewardFailure,
    make_flow_grpo_reward_fn,
)
from rationalrewards.serve import ServerThread, create_app
from rationalrewards.testing.judges import pixel_judge
from rationalrewards.testing.scripted_server import RecordedRequest, ScriptedServer

T2I_KEYS = {"avg", "text_faithfulness", "physical_quality", "text_rendering"}


def grey(level: float, size: int = 16) -> Image.Image:
    v = round(255 * level)
    return Image.new("RGB", (size, size), (v, v, v))


def blue() -> Image.Image:
    return Image.new("RGB", (16, 16), (0, 0, 255))


def judge(req: RecordedRequest) -> str:
    data = req.images()[-1][1]
    if Image.open(io.BytesIO(data)).convert("RGB").getpixel((0, 0)) == (0, 0, 255):
        return "unparseable ramble"
    return pixel_judge()(req)


@pytest.fixture
def judge_server():
    with ScriptedServer(judge) as s:
        yield s


@pytest.fixture
def rm(judge_server):
    model = RewardModel(OpenAIBackend(judge_server.base_url, "judge", max_retries=0))
    yield model
    model.close()


# -- flow_grpo / DiffusionNFT -----------------------------------------------------------------


def test_flow_grpo_fn_returns_avg_and_one_array_per_dimension(rm):
    fn = make_flow_grpo_reward_fn(rm)
    images = torch.stack([torch.full((3, 8, 8), v) for v in (0.2, 0.8, 0.5)])
    scores, meta = fn(images, ["a", "a", "b"], [{"id": "x"}, {}, {}])
    assert set(scores) == T2I_KEYS
    for value in scores.values():
        assert isinstance(value, np.ndarray) and value.dtype == np.float32 and value.shape == (3,)
    assert scores["text_faithfulness"] == pytest.approx([0.2, 0.8, 0.5], abs=0.01)  # unit scale
    assert scores["physical_quality"] == pytest.approx([0.0, 0.0, 0.0])
    assert scores["text_rendering"].tolist() == [0.5, 0.5, 0.5]  # N/A everywhere -> neutral constant
    assert scores["avg"] == pytest.approx((scores["text_faithfulness"] + scores["physical_quality"]) / 2)
    assert meta["valid"].tolist() == [True, True, True]
    assert meta["critiques"][0]["id"] == "x"


def test_flow_grpo_fn_takes_edit_sources_as_flow_grpos_fourth_argument(rm, judge_server):
    fn = make_flow_grpo_reward_fn(rm)
    scores, _ = fn([grey(0.3), grey(0.7)], ["brighten", "brighten"], [{}, {}], [grey(0.1), grey(0.1)])
    assert set(scores) == T2I_KEYS | {"image_faithfulness"}
    assert scores["image_faithfulness"].tolist() == pytest.approx([2 / 3, 2 / 3])
    assert len(judge_server.requests[-1].images()) == 2  # source + edit


def test_flow_grpo_fn_reads_sources_from_metadata_relative_to_base_dir(rm, judge_server, tmp_path):
    grey(0.1).save(tmp_path / "src.png")
    fn = make_flow_grpo_reward_fn(rm, source_keys=("image",), base_dir=str(tmp_path))
    scores, meta = fn([grey(0.6)], ["brighten"], [{"image": "src.png"}])
    assert "image_faithfulness" in scores and meta["valid"].tolist() == [True]
    assert "Source Image" in judge_server.requests[-1].text("user")


def test_flow_grpo_fn_array_output_and_pinned_task(rm):
    fn_array = make_flow_grpo_reward_fn(rm, output="array")
    avg, _ = fn_array([grey(0.5)], ["p"], [{}])
    assert isinstance(avg, np.ndarray) and avg.shape == (1,)
    fn_edit = make_flow_grpo_reward_fn(rm, task="edit")
    scores, _ = fn_edit([grey(0.5)], ["p"], [{}])  # a t2i batch on an edit run keeps the edit keys
    assert set(scores) == T2I_KEYS | {"image_faithfulness"}
    assert scores["image_faithfulness"].tolist() == [0.5]


def test_flow_grpo_default_policy_gives_a_failed_sample_its_groups_mean(rm):
    fn = make_flow_grpo_reward_fn(rm)
    scores, meta = fn([grey(0.2), blue(), grey(0.8)], ["p"] * 3, [{}] * 3)
    assert meta["valid"].tolist() == [True, False, True]
    assert scores["avg"][1] == pytest.approx((scores["avg"][0] + scores["avg"][2]) / 2)
    assert meta["filled_by"][1] == "group-mean"
    assert meta["failure_reasons"][1].startswith("parse")
    assert not np.isnan(scores["avg"]).any()


def test_flow_grpo_default_policy_raises_when_nothing_could_be_judged(rm):
    fn = make_flow_grpo_reward_fn(rm)
    with pytest.raises(RewardFailure, match="2 of 2"):
        fn([blue(), blue()], ["p", "p"], [{}, {}])


def test_options_go_to_the_reward_not_both(rm):
    with pytest.raises(TypeError, match="RationalReward"):
        make_flow_grpo_reward_fn(RationalReward(rm), failure_policy="mask")


# -- Flow-Factory style -----------------------------------------------------------------------


def test_pointwise_reward_returns_a_float_tensor_and_extra_info(rm):
    model = PointwiseReward(rm)
    out = model(prompt=["p", "p"], image=[torch.full((3, 8, 8), 0.25), grey(0.75)])
    assert isinstance(out.rewards, torch.Tensor) and out.rewards.dtype == torch.float32
    assert out.rewards.tolist() == pytest.approx([(0.25 + 0.0) / 2, (0.75 + 0.0) / 2], abs=0.01)
    assert out.extra_info["valid"] == [True, True]
    assert set(out.extra_info["scores"]) == {"text_faithfulness", "physical_quality", "text_rendering"}


def test_pointwise_reward_with_condition_images_judges_edits(rm, judge_server):
    model = PointwiseReward(rm, task="edit")
    assert "condition_images" in model.required_fields
    out = model(prompt=["brighten"], image=[grey(0.6)], condition_images=[[grey(0.1)]])
    assert out.extra_info["valid"] == [True]
    assert "Source Image" in judge_server.requests[-1].text("user")


def test_one_head_per_dimension(rm):
    tf = PointwiseReward(rm, dimension="text_faithfulness")
    out = tf(prompt=["p"], image=[grey(0.5)])
    assert out.rewards.tolist() == pytest.approx([0.5], abs=0.01)
    with pytest.raises(ValueError, match="dimension"):
        PointwiseReward(rm, dimension="beauty")


def test_gdpo_needs_the_groupwise_variant(rm):
    with pytest.raises(ValueError, match="GroupwiseReward"):
        PointwiseReward(rm, aggregation="gdpo")
    group = GroupwiseReward(rm, aggregation="gdpo")
    out = group(prompt=["p", "p", "p"], image=[grey(0.2), grey(0.5), grey(0.8)])
    assert sum(out.rewards.tolist()) == pytest.approx(0.0, abs=1e-5)
    assert out.rewards[0] < out.rewards[1] < out.rewards[2]


def test_dimension_heads_built_from_one_config_share_the_critique(judge_server):
    cfg = {"base_url": judge_server.base_url, "model": "judge", "scores_only": True}
    tf = PointwiseReward(config={**cfg, "dimension": "text_faithfulness"})
    pq = PointwiseReward(config={**cfg, "dimension": "physical_quality"})
    images = [grey(0.3), grey(0.6)]
    tf(prompt=["p", "p"], image=images)
    pq(prompt=["p", "p"], image=images)
    assert tf.reward is pq.reward
    assert judge_server.chat_request_count == 2  # one critique per image, read by both heads


def test_remote_variants_call_the_reward_server(rm):
    with ServerThread(create_app(rm, token="tok")) as server:
        direct = RemotePointwiseReward(server.url, token="tok")
        from_config = RemoteGroupwiseReward(config=SimpleNamespace(server_url=server.url, token="tok",
                                                                   aggregation="gdpo"),
                                            accelerator=SimpleNamespace(device="cpu"))
        a = direct(prompt=["p", "p"], image=[grey(0.2), grey(0.8)])
        b = from_config(prompt=["p", "p"], image=[grey(0.2), grey(0.8)])
    assert a.extra_info["valid"] == [True, True] and a.rewards[0] < a.rewards[1]
    assert b.rewards.tolist() == pytest.approx([-1.0, 1.0], abs=1e-3)


def test_remote_config_without_a_url_is_refused():
    with pytest.raises(ValueError, match="server_url"):
        RemotePointwiseReward(config={"token": "x"})


# -- native Flow-Factory classes (against a stand-in of its base classes) --------------------


@pytest.fixture
def fake_flow_factory(monkeypatch):
    """The few names Flow-Factory's reward registry relies on, as its abc module defines them."""

    @dataclass
    class RewardModelOutput:
        rewards: Any
        extra_info: dict | None = None

    class BaseRewardModel:
        required_fields: tuple = ()
        use_tensor_inputs = False

        def __init__(self, config, accelerator):
            self.config, self.accelerator = config, accelerator
            self.device = accelerator.device

    class PointwiseRewardModel(BaseRewardModel):
        pass

    class GroupwiseRewardModel(BaseRewardModel):
        pass

    abc = types.ModuleType("flow_factory.rewards.abc")
    abc.RewardModelOutput, abc.PointwiseRewardModel, abc.GroupwiseRewardModel = (
        RewardModelOutput, PointwiseRewardModel, GroupwiseRewardModel)
    for name, module in {"flow_factory": types.ModuleType("flow_factory"),
                         "flow_factory.rewards": types.ModuleType("flow_factory.rewards"),
                         "flow_factory.rewards.abc": abc}.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.delitem(sys.modules, "rationalrewards.rl.flow_factory", raising=False)
    yield abc
    sys.modules.pop("rationalrewards.rl.flow_factory", None)


def test_native_flow_factory_classes_are_flow_factory_reward_models(fake_flow_factory, judge_server):
    ff = importlib.import_module("rationalrewards.rl.flow_factory")
    cfg = SimpleNamespace(base_url=judge_server.base_url, model="judge", batch_size=8)
    model = ff.RationalRewardsPointwise(cfg, SimpleNamespace(device="cpu"))
    assert isinstance(model, fake_flow_factory.PointwiseRewardModel)
    out = model(prompt=["p", "p"], image=[grey(0.2), grey(0.9)])
    assert isinstance(out, fake_flow_factory.RewardModelOutput)
    assert out.rewards[0] < out.rewards[1] and out.extra_info["valid"] == [True, True]
    group = ff.RationalRewardsGroupwise(SimpleNamespace(base_url=judge_server.base_url, model="judge",
                                                        aggregation="gdpo"), SimpleNamespace(device="cpu"))
    assert isinstance(group, fake_flow_factory.GroupwiseRewardModel)
