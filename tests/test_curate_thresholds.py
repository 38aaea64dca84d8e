"""Keep-or-reject rules: parsing the command-line thresholds and the reasons a decision gives."""

from __future__ import annotations

import pytest

from rationalrewards.curate.thresholds import Thresholds, decide, resolve_dimension


def critique(reward=0.6, **scores):
    base = {"text_faithfulness": 3.0, "image_faithfulness": None, "physical_quality": 3.0, "text_rendering": None}
    base.update(scores)
    return {"id": "x", "task": "t2i", "ok": True, "error": None, "error_kind": None, "scores": base, "reward": reward}


def test_specs_accept_keys_short_names_and_headers():
    th = Thresholds.from_specs(0.5, ["pq=3", "Text Faithfulness=2.5", "text_rendering=3.5", "pq=3.2"])
    assert th.min_reward == 0.5
    # Repeating a dimension keeps the last value.
    assert th.min_scores == {"physical_quality": 3.2, "text_faithfulness": 2.5, "text_rendering": 3.5}
    assert resolve_dimension("Physical and Visual Quality") == "physical_quality"
    assert resolve_dimension("if") == "image_faithfulness"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("pq", "DIM=VALUE"),
        ("=3", "DIM=VALUE"),
        ("pq=high", "not a number"),
        ("sharpness=3", "unknown dimension 'sharpness'"),
        ("pq=5", "within [1, 4]"),
        ("pq=0.5", "within [1, 4]"),
    ],
)
def test_bad_specs_name_the_problem(spec, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        Thresholds.from_specs(None, [spec])


def test_min_reward_must_be_a_reward():
    with pytest.raises(ValueError, match=r"within \[0, 1\]"):
        Thresholds(min_reward=1.5)


def test_thresholds_are_inclusive():
    th = Thresholds(min_reward=0.6, min_scores={"physical_quality": 3.0})
    d = decide(critique(reward=0.6, physical_quality=3.0), th)
    assert d.kept
    assert d.reason == "passed: reward 0.6 >= 0.6; physical_quality 3 >= 3"


def test_a_rejection_lists_every_failed_check_and_only_those():
    th = Thresholds(min_reward=0.7, min_scores={"physical_quality": 3.0, "text_faithfulness": 2.0})
    d = decide(critique(reward=0.5, physical_quality=2.4, text_faithfulness=3.9), th)
    assert not d.kept
    assert d.reason == "reward 0.5 < 0.7; physical_quality 2.4 < 3"
    assert [(c.check, c.value, c.threshold, c.passed) for c in d.failed] == [
        ("min_reward", 0.5, 0.7, False),
        ("physical_quality", 2.4, 3.0, False),
    ]
    assert len(d.checks) == 3


def test_na_and_absent_dimensions_pass_their_threshold():
    # No text was asked for (N/A) and a t2i item has no image faithfulness: nothing to be bad at.
    th = Thresholds(min_scores={"text_rendering": 3.5, "image_faithfulness": 3.0})
    d = decide(critique(), th)
    assert d.kept
    assert "text_rendering N/A" in d.reason


def test_a_failed_critique_is_rejected_whatever_the_thresholds():
    failed = {"id": "x", "task": "t2i", "ok": False, "error": "no '## Score:' for Text Faithfulness",
              "error_kind": "parse", "scores": {}, "reward": None}
    d = decide(failed, Thresholds())
    assert not d.kept
    assert d.reason == "critique failed (parse): no '## Score:' for Text Faithfulness"
    assert [c.check for c in d.failed] == ["critique"]


def test_no_thresholds_keeps_every_scored_item():
    d = decide(critique(reward=0.0), Thresholds())
    assert d.kept and d.reason == "no thresholds set" and d.checks == ()
