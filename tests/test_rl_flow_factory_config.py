"""A Flow-Factory reward entry written for its built-in RationalRewards models works with our
class after changing only ``reward_model``.

Flow-Factory is not on PyPI, so these tests drive our class through a stand-in that behaves as
Flow-Factory does (read from its sources): the YAML entry becomes ``RewardArguments`` via
``from_dict`` (declared fields kept, every other key moved to ``extra_kwargs`` and readable as an
attribute), the loader imports the class from its dotted path and builds it as
``cls(config=config, accelerator=accelerator)``, and the reward processor calls it once per batch
as ``model(**fields)`` with the sample fields its ``__call__`` accepts (lists of prompts, PIL
images and, for edits, lists of condition images), then reads ``output.rewards`` as a tensor.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import io
import sys
import types
import warnings
from dataclasses import dataclass, field
from typing import Any

import pytest
import yaml

torch = pytest.importorskip("torch")

from PIL import Image  # noqa: E402

from rationalrewards.testing.judges import pixel_judge  # noqa: E402
from rationalrewards.testing.scripted_server import ScriptedServer  # noqa: E402

# The reward entries of Flow-Factory's examples/nft/lora/{flux1,flux1_kontext}/rational_rewards_*.yaml,
# with only reward_model changed (and the judge's URL pointed at the scripted server).
T2I_ENTRY = """
name: "rational_rewards_t2i"
reward_model: "rationalrewards.rl.flow_factory.RationalRewardsPointwise"
batch_size: 8
device: "cpu"
dtype: bfloat16
api_base_url: "{url}"
api_key: "EMPTY"
vlm_model: "RationalRewards-8B-T2I"
max_concurrent: 8
max_retries: 5
timeout: 300
temperature: 0.1
max_tokens: 2048
aspects:
  - text_faithfulness
  - physical_quality
  - text_rendering
"""

EDIT_ENTRY = """
name: "rational_rewards_edit"
reward_model: "rationalrewards.rl.flow_factory.RationalRewardsPointwise"
batch_size: 8
device: "cpu"
dtype: bfloat16
api_base_url: "{url}"
api_key: "EMPTY"
vlm_model: "RationalRewards-8B-Edit"
max_concurrent: 8
max_retries: 5
timeout: 300
temperature: 0.1
max_tokens: 2048
aspects:
  - text_faithfulness
  - image_faithfulness
  - physical_quality
  - text_rendering
"""


# -- a stand-in for the parts of Flow-Factory that touch a reward model ----------------------------
@dataclass(kw_only=True)
class RewardArguments:
    """Flow-Factory's reward entry: declared fields, everything else in ``extra_kwargs``."""

    extra_kwargs: dict[str, Any] = field(default_factory=dict)
    name: str = "default"
    reward_model: str | None = None
    weight: float = 1.0
    dtype: Any = "bfloat16"
    device: Any = "cuda"
    batch_size: int = 16
    async_reward: bool = False
    num_workers: int = 1

    def __post_init__(self) -> None:
        self.device = torch.device(self.device)

    @classmethod
    def from_dict(cls, entry: dict[str, Any]) -> RewardArguments:
        declared = {f.name for f in dataclasses.fields(cls)}
        known = {k: v for k, v in entry.items() if k in declared}
        known["extra_kwargs"] = {k: v for k, v in entry.items() if k not in declared}
        return cls(**known)

    def __getattr__(self, name: str) -> Any:
        extras = self.__dict__.get("extra_kwargs") or {}
        if name in extras:
            return extras[name]
        raise AttributeError(name)


@dataclass
class RewardModelOutput:
    rewards: Any
    extra_info: dict[str, Any] | None = None


class BaseRewardModel:
    required_fields: tuple[str, ...] = ()
    use_tensor_inputs = False

    def __init__(self, config: RewardArguments, accelerator: Any) -> None:
        self.accelerator, self.config = accelerator, config
        self.device = accelerator.device if config.device == torch.device("cuda") else config.device
        self.dtype = config.dtype
        self.model = None


class PointwiseRewardModel(BaseRewardModel):
    pass


class GroupwiseRewardModel(BaseRewardModel):
    pass


@pytest.fixture
def flow_factory(monkeypatch):
    abc = types.ModuleType("flow_factory.rewards.abc")
    abc.RewardModelOutput, abc.PointwiseRewardModel, abc.GroupwiseRewardModel = (
        RewardModelOutput, PointwiseRewardModel, GroupwiseRewardModel)
    for name, module in {"flow_factory": types.ModuleType("flow_factory"),
                         "flow_factory.rewards": types.ModuleType("flow_factory.rewards"),
                         "flow_factory.rewards.abc": abc}.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.delitem(sys.modules, "rationalrewards.rl.flow_factory", raising=False)
    yield
    sys.modules.pop("rationalrewards.rl.flow_factory", None)


def load_reward_model(config: RewardArguments, accelerator: Any) -> Any:
    """Flow-Factory's loader: a dotted path is imported, the class built with keywords."""
    module_path, class_name = config.reward_model.rsplit(".", 1)
    cls = getattr(importlib.import_module(module_path), class_name)
    return cls(config=config, accelerator=accelerator)


def compute_pointwise_batch(model: Any, samples: list[dict[str, Any]]) -> Any:
    """Flow-Factory's reward processor for one batch: keep the sample fields ``__call__`` takes
    (all of them when it has ``**kwargs``) that no sample lacks, call by keyword, read rewards."""
    params = inspect.signature(model.__call__).parameters.values()
    takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
    names = set(samples[0]) if takes_all else {p.name for p in params} & set(samples[0])
    batch = {k: [s[k] for s in samples] for k in names if all(s.get(k) is not None for s in samples)}
    output = model(**batch)
    return torch.as_tensor(output.rewards, device="cpu", dtype=torch.float32), output


def grey(level: float) -> Image.Image:
    v = round(255 * level)
    return Image.new("RGB", (16, 16), (v, v, v))


@pytest.fixture
def judge():
    with ScriptedServer(pixel_judge()) as server:
        yield server


def entry(text: str, url: str, **changes: Any) -> RewardArguments:
    data = yaml.safe_load(text.format(url=url))
    data.update(changes)
    return RewardArguments.from_dict(data)


# -- the tests --------------------------------------------------------------------------------------
def test_flow_factorys_own_t2i_entry_builds_and_scores_with_only_the_class_path_changed(flow_factory, judge):
    config = entry(T2I_ENTRY, judge.base_url)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every key of Flow-Factory's entry is understood
        model = load_reward_model(config, types.SimpleNamespace(device=torch.device("cpu")))
    samples = [{"prompt": "a lamp", "image": grey(level), "prompt_ids": None, "unique_id": 0}
               for level in (0.2, 0.5, 0.8)]
    rewards, output = compute_pointwise_batch(model, samples)
    # pixel judge: text faithfulness 1 + 3 x brightness, physical quality 1 (grey has no red),
    # text rendering N/A -> mean of the two, mapped by (m - 1) / 3, as Flow-Factory's aspects do.
    assert rewards.tolist() == pytest.approx([0.1, 0.25, 0.4], abs=0.01)
    assert output.extra_info["valid"] == [True, True, True]
    body = judge.requests[-1].json
    assert body["model"] == "RationalRewards-8B-T2I"
    assert body["temperature"] == pytest.approx(0.1) and body["max_tokens"] == 2048


def test_aspects_choose_the_dimensions_that_count(flow_factory, judge):
    config = entry(T2I_ENTRY, judge.base_url, aspects=["text_faithfulness"])
    model = load_reward_model(config, types.SimpleNamespace(device=torch.device("cpu")))
    rewards, _ = compute_pointwise_batch(model, [{"prompt": "p", "image": grey(0.6)}])
    assert rewards.tolist() == pytest.approx([0.6], abs=0.01)


def test_flow_factorys_own_edit_entry_sends_the_condition_image_as_the_source(flow_factory, judge):
    config = entry(EDIT_ENTRY, judge.base_url)
    model = load_reward_model(config, types.SimpleNamespace(device=torch.device("cpu")))
    assert "condition_images" in model.required_fields  # gathered for groupwise runs too
    source = Image.new("RGB", (16, 16), (200, 10, 10))
    rewards, output = compute_pointwise_batch(
        model, [{"prompt": "make it grey", "image": grey(0.5), "condition_images": [source]}])
    assert output.extra_info["valid"] == [True]
    req = judge.requests[-1]
    first = Image.open(io.BytesIO(req.images()[0][1])).convert("RGB")
    assert first.getpixel((0, 0)) == (200, 10, 10) and len(req.images()) == 2
    # text 2.5, image 3.0, physical 1.0 (mean 2.1667) -> 0.3889
    assert rewards.tolist() == pytest.approx([0.3889], abs=0.01)


def test_keys_nothing_reads_are_reported_not_silently_dropped(flow_factory, judge):
    config = entry(T2I_ENTRY, judge.base_url, top_k=5, vlm_temprature=0.3)
    with pytest.warns(UserWarning, match=r"ignoring key\(s\) \['top_k', 'vlm_temprature'\]"):
        load_reward_model(config, types.SimpleNamespace(device=torch.device("cpu")))


def test_unknown_aspects_and_aspects_with_weights_are_refused(flow_factory, judge):
    acc = types.SimpleNamespace(device=torch.device("cpu"))
    with pytest.raises(ValueError, match="unknown aspect"):
        load_reward_model(entry(T2I_ENTRY, judge.base_url, aspects=["sharpness"]), acc)
    with pytest.raises(ValueError, match="either aspects"):
        load_reward_model(entry(T2I_ENTRY, judge.base_url, weights="text_faithfulness=1"), acc)
