"""``make_flow_grpo_score_factory`` is an entry of flow_grpo's ``multi_score`` table, called the
way ``multi_score`` calls its entries.

flow_grpo (flow_grpo/rewards.py) builds each entry once, as ``fn(device)`` when
``"device" in fn.__code__.co_varnames`` else ``fn()``, then calls the built function as
``scores, meta = f(images, prompts, metadata)`` (no ``ref_images``), multiplies ``scores`` by the
entry's weight and sums the entries into ``"avg"``. ``multi_score`` below does exactly that.
"""

from __future__ import annotations

import io

import pytest

torch = pytest.importorskip("torch")

from PIL import Image  # noqa: E402

from rationalrewards.rl import make_flow_grpo_score_factory  # noqa: E402
from rationalrewards.testing.judges import pixel_judge  # noqa: E402
from rationalrewards.testing.scripted_server import ScriptedServer  # noqa: E402


def multi_score(device, score_dict, score_functions):
    score_fns = {}
    for name in score_dict:
        entry = score_functions[name]
        score_fns[name] = entry(device) if "device" in entry.__code__.co_varnames else entry()

    def _fn(images, prompts, metadata, ref_images=None, only_strict=True):
        total: list[float] = []
        details = {}
        for name, weight in score_dict.items():
            scores, _ = score_fns[name](images, prompts, metadata)
            details[name] = scores
            weighted = [weight * s for s in scores]
            total = weighted if not total else [a + b for a, b in zip(total, weighted, strict=True)]
        details["avg"] = total
        return details, {}

    return _fn


def constant_half():
    """A device-less entry, like flow_grpo's jpeg_compressibility."""

    def _fn(images, prompts, metadata):
        return [0.5] * len(prompts), {}

    return _fn


@pytest.fixture
def judge():
    with ScriptedServer(pixel_judge()) as server:
        yield server


def greys(*levels: float, size: int = 16):
    return torch.stack([torch.full((3, size, size), v) for v in levels])


def test_the_factory_is_called_with_the_device_and_its_function_scores_like_a_table_entry(judge):
    factory = make_flow_grpo_score_factory(config={"base_url": judge.base_url, "model": "judge",
                                                   "aspects": ["text_faithfulness"]})
    assert "device" in factory.__code__.co_varnames  # so multi_score passes the device
    fn = multi_score("cpu", {"rationalrewards": 2.0, "jpeg": 1.0},
                     {"rationalrewards": factory, "jpeg": constant_half})
    details, _ = fn(greys(0.2, 0.8), ["a lamp", "a lamp"], [{}, {}])
    assert list(details["rationalrewards"]) == pytest.approx([0.2, 0.8], abs=0.01)
    assert details["avg"] == pytest.approx([2 * 0.2 + 0.5, 2 * 0.8 + 0.5], abs=0.02)


def test_build_is_called_once_with_the_device_multi_score_passes(judge):
    from rationalrewards import RewardModel

    seen = []

    def build(device):
        seen.append(device)
        return RewardModel.from_openai(judge.base_url, "judge")

    fn = multi_score("cuda:3", {"rr": 1.0}, {"rr": make_flow_grpo_score_factory(build=build)})
    fn(greys(0.5), ["p"], [{}])
    fn(greys(0.5), ["p"], [{}])
    assert seen == ["cuda:3"]


def _sent_source_size(judge) -> tuple[int, int]:
    data = judge.requests[-1].images()[0][1]
    return Image.open(io.BytesIO(data)).size


def test_edit_sources_come_from_metadata_as_the_original_file_or_resized_like_the_generator_input(judge, tmp_path):
    Image.new("RGB", (64, 48), (200, 20, 20)).save(tmp_path / "src.png")
    metadata = [{"prompt": "make it grey", "image": "src.png"}]
    table = {
        "original": make_flow_grpo_score_factory(config={"base_url": judge.base_url, "model": "judge"},
                                                 task="edit", source_keys=("image",), base_dir=str(tmp_path)),
        "resized": make_flow_grpo_score_factory(config={"base_url": judge.base_url, "model": "judge"},
                                                task="edit", source_keys=("image",), base_dir=str(tmp_path),
                                                resize_sources=16),
    }
    details, _ = multi_score("cpu", {"original": 1.0}, table)(greys(0.5), ["make it grey"], metadata)
    assert _sent_source_size(judge) == (64, 48)  # the dataset's file, not what the generator saw
    details, _ = multi_score("cpu", {"resized": 1.0}, table)(greys(0.5), ["make it grey"], metadata)
    assert _sent_source_size(judge) == (16, 16)  # flow_grpo's ref_image.resize((res, res))
    assert len(judge.requests[-1].images()) == 2 and 0 < float(details["resized"][0]) < 1


def test_bad_factory_arguments_fail_when_the_table_is_written():
    with pytest.raises(TypeError, match="exactly one"):
        make_flow_grpo_score_factory()
    with pytest.raises(TypeError, match="output"):
        make_flow_grpo_score_factory(config={"model": "m"}, output="dict")
    with pytest.raises(ValueError, match="resize_sources"):
        make_flow_grpo_score_factory(config={"model": "m"}, resize_sources=(0, 5))
