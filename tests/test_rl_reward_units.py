"""Pure units of the RL reward: failure-policy grammar, per-dimension aggregation, image batches."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from rationalrewards.critique.aggregate import get_aggregation
from rationalrewards.rl.aggregation import DimensionAggregation, combine_dimensions, normalize_within_groups
from rationalrewards.rl.media import as_image_list, as_source_list
from rationalrewards.rl.reward import FailurePolicy

# -- failure policy ---------------------------------------------------------------------------


def test_failure_policy_defaults_to_mask():
    p = FailurePolicy.parse(None)
    assert (p.retries, p.fills, p.final) == (0, (), "mask")


@pytest.mark.parametrize(
    ("spec", "retries", "fills", "final"),
    [
        ("mask", 0, (), "mask"),
        ("retry", 2, (), "mask"),
        ("retry:3", 3, (), "mask"),
        ("group-mean", 0, (("group-mean", None),), "mask"),
        ("value:0.25", 0, (("value", 0.25),), "mask"),
        ("retry:1, group-mean, batch-mean, raise", 1, (("group-mean", None), ("batch-mean", None)), "raise"),
    ],
)
def test_failure_policy_grammar(spec, retries, fills, final):
    p = FailurePolicy.parse(spec)
    assert (p.retries, p.fills, p.final) == (retries, fills, final)


@pytest.mark.parametrize("spec", ["zero", "value:abc", "value:nan", "retry:0", "mask,group-mean", "group-mean:2", ""])
def test_failure_policy_rejects_unclear_specs(spec):
    with pytest.raises(ValueError):
        FailurePolicy.parse(spec)


# -- aggregation ------------------------------------------------------------------------------


def test_normalize_within_groups_ignores_missing_and_zeroes_constant_groups():
    z = normalize_within_groups([1.0, 3.0, None, 2.0, 2.0, float("nan")], ["a", "a", "a", "b", "b", "c"], eps=0.0)
    assert z[:2] == [-1.0, 1.0]
    assert math.isnan(z[2]) and math.isnan(z[5])
    assert z[3:5] == [0.0, 0.0]


T2I = {"text_faithfulness": 4.0, "physical_quality": 1.0, "text_rendering": None}


def test_sum_is_the_weighted_reward_in_unit_range():
    rows = [T2I, {"text_faithfulness": 1.0, "physical_quality": 1.0, "text_rendering": 4.0}]
    out = combine_dimensions(rows, ["t2i", "t2i"], [True, True], [0, 0], DimensionAggregation("sum"),
                             get_aggregation(None))
    assert out == pytest.approx([0.5, 1 / 3])


def test_custom_weights_change_the_scalar():
    out = combine_dimensions([T2I], ["t2i"], [True], [0], DimensionAggregation("sum"),
                             get_aggregation("text_faithfulness=3,physical_quality=1"))
    assert out == pytest.approx([((3 * 4 + 1) / 4 - 1) / 3])


def test_gdpo_normalises_each_dimension_before_summing():
    # Physical quality varies 100x more than text faithfulness; after per-dimension normalisation
    # both count equally, so sample 0 (best TF, worst PQ) and sample 1 tie.
    rows = [{"text_faithfulness": 3.01, "physical_quality": 1.0, "text_rendering": None},
            {"text_faithfulness": 3.00, "physical_quality": 4.0, "text_rendering": None}]
    summed = combine_dimensions(rows, ["t2i"] * 2, [True] * 2, ["g"] * 2, DimensionAggregation("sum"),
                                get_aggregation(None))
    gdpo = combine_dimensions(rows, ["t2i"] * 2, [True] * 2, ["g"] * 2, DimensionAggregation("gdpo", eps=0.0),
                              get_aggregation(None))
    assert summed[1] > summed[0]
    assert gdpo == pytest.approx([0.0, 0.0])


def test_gdpo_groups_are_independent_and_failures_are_nan():
    rows = [{"text_faithfulness": s, "physical_quality": 2.0, "text_rendering": None} for s in (1.0, 3.0, 2.0, 4.0)]
    out = combine_dimensions(rows, ["t2i"] * 4, [True, True, True, False], ["a", "a", "b", "b"],
                             DimensionAggregation("gdpo", eps=0.0), get_aggregation(None))
    assert out[:3] == pytest.approx([-1.0, 1.0, 0.0])
    assert math.isnan(out[3])


def test_unknown_aggregation_method_is_refused():
    with pytest.raises(ValueError, match="gdpo"):
        DimensionAggregation("mean")  # type: ignore[arg-type]


# -- image batches ----------------------------------------------------------------------------


def test_nchw_float_tensor_becomes_rgb_pil_images():
    x = torch.zeros(2, 3, 4, 5)
    x[0, 0] = 1.0  # red
    x[1, 2] = 0.5  # half blue
    imgs = as_image_list(x)
    assert [im.size for im in imgs] == [(5, 4), (5, 4)]
    assert imgs[0].getpixel((0, 0)) == (255, 0, 0)
    assert imgs[1].getpixel((0, 0)) == (0, 0, 128)


def test_nhwc_uint8_numpy_and_lists_of_chw_tensors_are_accepted():
    arr = np.zeros((1, 4, 5, 3), dtype=np.uint8)
    arr[..., 1] = 200
    assert as_image_list(arr)[0].getpixel((0, 0)) == (0, 200, 0)
    chw = torch.ones(3, 4, 5)
    assert as_image_list([chw])[0].getpixel((1, 1)) == (255, 255, 255)


def test_out_of_range_and_nan_values_are_clamped():
    x = torch.tensor([[[[2.0]], [[-1.0]], [[float("nan")]]]])
    assert as_image_list(x)[0].getpixel((0, 0)) == (255, 0, 0)


def test_pil_paths_and_bytes_pass_through_untouched():
    img = Image.new("RGB", (2, 2))
    assert as_image_list([img, "a.png", b"\x89PNG"]) == [img, "a.png", b"\x89PNG"]


def test_a_single_image_is_not_mistaken_for_a_batch():
    with pytest.raises(TypeError):
        as_image_list(Image.new("RGB", (2, 2)))
    with pytest.raises(ValueError, match="batch"):
        as_image_list(torch.zeros(3, 8, 8))


def test_sources_align_with_images():
    img = Image.new("RGB", (2, 2))
    assert as_source_list(None, 2) == [None, None]
    assert as_source_list([img, [img, img]], 2) == [img, [img, img]]
    assert len(as_source_list(torch.zeros(2, 3, 4, 4), 2)) == 2
    with pytest.raises(ValueError, match="3 entries"):
        as_source_list([img, img, img], 2)
