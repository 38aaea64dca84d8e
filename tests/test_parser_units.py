"""Focused specifications of the parser's building blocks and of the aggregation presets."""

from __future__ import annotations

from pathlib import Path

import pytest

from rationalrewards.critique.aggregate import (
    PRESETS,
    Aggregation,
    combine_orders,
    decide_pair,
    flip,
    get_aggregation,
    parse_aggregation,
    reward_from_scores,
)
from rationalrewards.critique.parser import (
    parse_comparison,
    parse_critique,
    parse_final_verdict,
    parse_score,
    parse_winner,
    strip_thinking,
)

GOLDEN = Path(__file__).parent / "golden"


def _golden(name: str) -> str:
    return (GOLDEN / f"{name}.txt").read_bytes().decode("utf-8")


def _t2i(tf: float | None, pq: float | None, tr: float | None) -> dict[str, float | None]:
    return {"text_faithfulness": tf, "image_faithfulness": None, "physical_quality": pq, "text_rendering": tr}


# --------------------------------------------------------------------------- parse_score


@pytest.mark.parametrize(
    ("cell", "value"),
    [
        ("3.2", 3.2),
        ("4", 4.0),
        ("  3.7  ", 3.7),
        ("**3.2**", 3.2),
        ("[3.2]", 3.2),
        ("`3.7`", 3.7),
        ("3.5/4", 3.5),
        ("3.5 / 4.0", 3.5),
        ("**3.5/4**", 3.5),
        ("3.5 out of 4", 3.5),
        ("~3", 3.0),
        ("[~3]", 3.0),
        ("about 3.5", 3.5),
        ("3 (minor issues)", 3.0),
        ("2 (clear flaws)", 2.0),
        ("3,5", 3.5),
    ],
)
def test_parse_score_reads_every_accepted_notation(cell: str, value: float) -> None:
    """Bold, bracketed, x/4, ~x and a trailing rubric label all give the plain number."""
    ps = parse_score(cell)
    assert ps.error is None
    assert not ps.is_na
    assert ps.value == pytest.approx(value)


@pytest.mark.parametrize(
    "cell",
    ["N/A", "n/a", "NA", "Not applicable", "not applicable", "**N/A**", "[N/A]", "N/A (no text requested)"],
)
def test_parse_score_recognises_not_applicable_in_any_spelling(cell: str) -> None:
    ps = parse_score(cell)
    assert ps.is_na
    assert ps.value is None
    assert ps.error is None


@pytest.mark.parametrize(
    ("cell", "value"),
    [("5.0", 4.0), ("4.5", 4.0), ("10", 4.0), ("0.5", 1.0), ("0", 1.0)],
)
def test_parse_score_clamps_out_of_range_values_to_the_1_to_4_scale(cell: str, value: float) -> None:
    ps = parse_score(cell)
    assert ps.error is None
    assert ps.value == value


@pytest.mark.parametrize("cell", ["-1", "-0.5"])
def test_parse_score_clamps_a_negative_score_instead_of_reading_it_as_na(cell: str) -> None:
    """A negative number is an out-of-range score (clamped to 1.0), not a dash meaning N/A."""
    ps = parse_score(cell)
    assert not ps.is_na
    assert ps.value == 1.0


@pytest.mark.parametrize("cell", ["-", "—"])
def test_parse_score_reads_a_bare_dash_as_na(cell: str) -> None:
    assert parse_score(cell).is_na


@pytest.mark.parametrize("cell", ["8/10", "7.5 / 10", "7 out of 10", "3/5"])
def test_parse_score_rejects_another_scale_rather_than_rescaling(cell: str) -> None:
    ps = parse_score(cell)
    assert ps.value is None
    assert not ps.is_na
    assert ps.error is not None and "scale" in ps.error


@pytest.mark.parametrize("cell", ["", "   ", "excellent", "three", "**"])
def test_parse_score_reports_unreadable_cells_as_errors_not_na(cell: str) -> None:
    ps = parse_score(cell)
    assert ps.value is None
    assert not ps.is_na
    assert ps.error


# --------------------------------------------------------------------------- parse_winner


@pytest.mark.parametrize(
    ("text", "winner"),
    [
        ("Image A", "A"),
        ("Image B", "B"),
        ("**Image B**", "B"),
        ("image a", "A"),
        ("A", "A"),
        ("B.", "B"),
        ("Edited Image B", "B"),
        ("Image A is slightly better", "A"),
        ("Image B — clearer lettering", "B"),
        ("It's a tie", "tie"),
        ("Tie", "tie"),
        ("tie (both equally good)", "tie"),
        ("Both are equally good", "tie"),
    ],
)
def test_parse_winner_understands_the_winner_line(text: str, winner: str) -> None:
    assert parse_winner(text) == (winner, True)


@pytest.mark.parametrize(
    ("text", "winner"),
    [
        ("Image A (better preserves the surface properties)", "A"),
        ("Image B, closer to the requested qualities", "B"),
        ("Image B (the necktie is the right colour)", "B"),
    ],
)
def test_parse_winner_is_not_fooled_by_tie_inside_a_word_of_the_rationale(text: str, winner: str) -> None:
    """'properties', 'qualities', 'necktie' contain the letters 'tie' but do not declare a tie."""
    assert parse_winner(text) == (winner, True)


def test_parse_winner_na_is_understood_and_names_no_winner() -> None:
    assert parse_winner("N/A") == (None, True)


@pytest.mark.parametrize("text", ["", "   ", "banana", "the first one"])
def test_parse_winner_flags_lines_it_cannot_understand(text: str) -> None:
    assert parse_winner(text) == (None, False)


# --------------------------------------------------------------------------- parse_final_verdict


@pytest.mark.parametrize(
    ("raw", "winner"),
    [
        ("# Summary: A is cleaner.\nFinal verdict: Image A", "A"),
        ("# Summary: close call.\n**Final verdict:** Image B", "B"),
        ("Final Verdict: tie", "tie"),
        ("final verdict: It's a tie", "tie"),
        ("Final verdict: B", "B"),
    ],
)
def test_parse_final_verdict_reads_the_trailing_line(raw: str, winner: str) -> None:
    assert parse_final_verdict(raw) == winner


def test_parse_final_verdict_is_none_without_a_verdict_line() -> None:
    assert parse_final_verdict("# Summary: Image A is better overall.") is None


def test_parse_final_verdict_takes_the_last_verdict_when_the_model_revises() -> None:
    assert parse_final_verdict("Final verdict: Image A\nOn reflection...\nFinal verdict: Image B") == "B"


def test_parse_final_verdict_ignores_a_verdict_inside_the_thinking_block() -> None:
    assert parse_final_verdict("<think>Final verdict: Image A?</think>\n# Summary: unsure.") is None
    assert parse_final_verdict("<think>Final verdict: Image A?</think>\nFinal verdict: Image B") == "B"


# --------------------------------------------------------------------------- strip_thinking


def test_strip_thinking_removes_the_empty_think_block_of_the_released_models() -> None:
    assert (
        strip_thinking("<think>\n\n</think>\n\n# User Request Analysis\n") == "\n\n# User Request Analysis\n"
    )


def test_strip_thinking_drops_reasoning_including_draft_scores() -> None:
    out = strip_thinking("<think>\n1. Text Faithfulness:\n## Score: 1.0\n</think>\n# Detailed Judgement")
    assert "Score" not in out
    assert out.strip() == "# Detailed Judgement"


def test_strip_thinking_keeps_text_without_a_think_block_unchanged() -> None:
    text = "# Summary: fine.\n"
    assert strip_thinking(text) == text


def test_strip_thinking_cuts_at_the_last_closing_tag() -> None:
    assert strip_thinking("<think>a</think>b<think>c</think>answer") == "answer"


def test_strip_thinking_removes_a_lone_opening_tag() -> None:
    assert strip_thinking("<think>\n# Summary: ok") == "\n# Summary: ok"


# --------------------------------------------------------------------------- rewards and presets


def test_default_reward_is_the_rescaled_mean_of_non_na_scores() -> None:
    assert reward_from_scores(_t2i(3.6, 3.2, None), "t2i") == pytest.approx(0.8)
    assert reward_from_scores(_t2i(4.0, 4.0, 4.0), "t2i") == pytest.approx(1.0)
    assert reward_from_scores(_t2i(1.0, 1.0, None), "t2i") == pytest.approx(0.0)


def test_reward_clamps_out_of_range_inputs() -> None:
    assert reward_from_scores(_t2i(6.0, 4.0, None), "t2i") == pytest.approx(1.0)


def test_reward_is_none_when_nothing_is_scored() -> None:
    assert reward_from_scores(_t2i(None, None, None), "t2i") is None


def test_default_edit_reward_averages_all_four_dimensions() -> None:
    scores = {
        "text_faithfulness": 4.0,
        "image_faithfulness": 1.0,
        "physical_quality": 4.0,
        "text_rendering": 4.0,
    }
    assert reward_from_scores(scores, "edit") == pytest.approx(0.75)


def test_release_edit_rl_preset_leaves_image_faithfulness_out() -> None:
    scores = {
        "text_faithfulness": 4.0,
        "image_faithfulness": 1.0,
        "physical_quality": 4.0,
        "text_rendering": 4.0,
    }
    assert reward_from_scores(scores, "edit", get_aggregation("release-edit-rl")) == pytest.approx(1.0)


def test_release_edit_rl_preset_applies_through_parse_critique() -> None:
    """car-to-blue: TF 3.8, IF 3.5, PQ 3.4, TR N/A -> (3.6 - 1) / 3 without IF."""
    raw = _golden("pw_edit_canonical_car_blue")
    assert parse_critique(raw, "edit").reward == pytest.approx(0.855556, abs=1e-6)
    result = parse_critique(raw, "edit", aggregation=get_aggregation("release-edit-rl"))
    assert result.ok
    assert result.reward == pytest.approx(0.866667, abs=1e-6)
    assert result.scores["image_faithfulness"] == pytest.approx(3.5), "the score is still reported"


def test_release_edit_rl_preset_is_the_default_for_t2i() -> None:
    scores = _t2i(3.4, 2.8, 3.9)
    assert reward_from_scores(scores, "t2i", PRESETS["release-edit-rl"]) == pytest.approx(
        reward_from_scores(scores, "t2i")
    )


def test_critique_with_every_dimension_na_fails_instead_of_scoring() -> None:
    raw = (
        "# Detailed Judgement\n1. Text Faithfulness:\n## Justification: cannot tell.\n## Score: N/A\n"
        "2. Physical and Visual Quality:\n## Justification: cannot tell.\n## Score: N/A\n"
        "3. Text Rendering:\n## Justification: no text.\n## Score: N/A\n# Summary: unclear."
    )
    result = parse_critique(raw, "t2i")
    assert not result.ok
    assert result.reward is None
    assert "N/A" in (result.error or "")


def test_get_aggregation_resolves_presets_and_custom_weights() -> None:
    assert get_aggregation(None) is PRESETS["default"]
    assert get_aggregation("release-pairwise").na_policy == "release"
    custom = get_aggregation("text_faithfulness=2,physical_quality=1")
    assert custom.weights_for("t2i") == {"text_faithfulness": 2.0, "physical_quality": 1.0}
    # (2 * 4 + 1 * 1) / 3 = 3 -> (3 - 1) / 3
    assert reward_from_scores(_t2i(4.0, 1.0, 1.0), "t2i", custom) == pytest.approx(2 / 3)


@pytest.mark.parametrize("spec", ["no-such-preset", "text_faithfulness=heavy"])
def test_get_aggregation_rejects_unknown_specs(spec: str) -> None:
    with pytest.raises(ValueError):
        get_aggregation(spec)


def test_weights_naming_an_unknown_dimension_are_rejected() -> None:
    with pytest.raises(ValueError):
        Aggregation(weights={"aesthetics": 1.0}).weights_for("t2i")


# --------------------------------------------------------------------------- pairwise decisions


def test_default_pair_decision_skips_a_dimension_na_on_one_side() -> None:
    a, b = _t2i(3.0, 3.0, 4.0), _t2i(3.2, 3.1, None)
    decision = decide_pair(a, b, "t2i")
    assert decision.winner == "B"
    assert decision.counted == ["text_faithfulness", "physical_quality"]
    assert decision.sum_a == pytest.approx(6.0)
    assert decision.sum_b == pytest.approx(6.3)


def test_release_pairwise_preset_counts_na_as_two_and_a_half() -> None:
    a, b = _t2i(3.0, 3.0, 4.0), _t2i(3.2, 3.1, None)
    decision = decide_pair(a, b, "t2i", get_aggregation("release-pairwise"))
    assert decision.winner == "A"
    assert decision.sum_a == pytest.approx(10.0)
    assert decision.sum_b == pytest.approx(8.8)


def test_release_pairwise_preset_applies_through_parse_comparison() -> None:
    raw = _golden("pa_t2i_na_one_side_text_rendering_menu")
    assert parse_comparison(raw, "t2i").winner == "B"
    assert parse_comparison(raw, "t2i", aggregation=get_aggregation("release-pairwise")).winner == "A"


def test_release_pairwise_na_on_both_sides_cancels_out() -> None:
    a, b = _t2i(3.5, 3.0, None), _t2i(3.0, 3.0, None)
    decision = decide_pair(a, b, "t2i", PRESETS["release-pairwise"])
    assert decision.winner == "A"
    assert decision.sum_a - decision.sum_b == pytest.approx(0.5)


def test_float_noise_in_the_sums_is_never_a_verdict() -> None:
    """3.7 + 2.6 is 6.300000000000001 in floating point; 3.3 + 3.0 is 6.3: a tie."""
    assert decide_pair(_t2i(3.7, 2.6, None), _t2i(3.3, 3.0, None), "t2i").winner == "tie"


def test_tie_tolerance_turns_a_small_gap_into_a_tie() -> None:
    a, b = _t2i(3.6, 3.0, None), _t2i(3.5, 3.0, None)
    assert decide_pair(a, b, "t2i").winner == "A"
    assert decide_pair(a, b, "t2i", tie_tolerance=0.05).winner == "A"
    assert decide_pair(a, b, "t2i", tie_tolerance=0.1).winner == "tie", "the tolerance is inclusive"
    assert decide_pair(a, b, "t2i", tie_tolerance=0.15).winner == "tie"


def test_tie_tolerance_from_the_aggregation_and_its_explicit_override() -> None:
    a, b = _t2i(3.6, 3.0, None), _t2i(3.5, 3.0, None)
    tolerant = Aggregation(name="tolerant", tie_tolerance=0.2)
    assert decide_pair(a, b, "t2i", tolerant).winner == "tie"
    assert decide_pair(a, b, "t2i", tolerant, tie_tolerance=0.0).winner == "A"


def test_tie_tolerance_applies_through_parse_comparison() -> None:
    """fox in snow: sums 6.2 vs 6.9."""
    raw = _golden("pa_t2i_canonical_fox_in_snow")
    assert parse_comparison(raw, "t2i").winner == "B"
    assert parse_comparison(raw, "t2i", tie_tolerance=0.5).winner == "B"
    assert parse_comparison(raw, "t2i", tie_tolerance=0.7).winner == "tie"


def test_pair_decision_without_any_comparable_dimension_has_no_winner() -> None:
    decision = decide_pair(_t2i(3.0, None, None), _t2i(None, 3.0, None), "t2i")
    assert decision.winner is None
    assert decision.reason


@pytest.mark.parametrize(
    ("first", "second", "combined"),
    [
        ("A", "A", "A"),
        ("B", "B", "B"),
        ("tie", "tie", "tie"),
        ("A", "B", "tie"),
        ("B", "A", "tie"),
        ("A", "tie", "tie"),
        ("tie", "B", "tie"),
        (None, "A", None),
        ("B", None, None),
        (None, None, None),
    ],
)
def test_combine_orders_keeps_only_a_preference_that_survives_the_swap(first, second, combined) -> None:
    assert combine_orders(first, second) == combined


def test_flip_swaps_a_and_b_and_keeps_ties() -> None:
    assert flip("A") == "B"
    assert flip("B") == "A"
    assert flip("tie") == "tie"
    assert flip(None) is None


# --------------------------------------------------------------------------- task validation


def test_unknown_task_is_an_input_error_not_a_parse_failure() -> None:
    with pytest.raises(ValueError):
        parse_critique("# Summary: fine.", "video")
    with pytest.raises(ValueError):
        parse_comparison("# Summary: fine.", "video")


# --------------------------------------------------------------------------- N/A policy (allow_na)

T2I_TEMPLATE = (
    "# Detailed Judgement\n1. Text Faithfulness:\n## Justification: a.\n## Score: {tf}\n"
    "2. Physical and Visual Quality:\n## Justification: b.\n## Score: {pq}\n"
    "3. Text Rendering:\n## Justification: c.\n## Score: {tr}\n# Summary: s."
)


def _t2i_raw(tf: str = "3.0", pq: str = "3.0", tr: str = "N/A") -> str:
    return T2I_TEMPLATE.format(tf=tf, pq=pq, tr=tr)


@pytest.mark.parametrize("na", ["N/A", "None", "-", "not applicable", "**n/a**"])
@pytest.mark.parametrize(("slot", "header"), [("tf", "Text Faithfulness"), ("pq", "Physical and Visual Quality")])
def test_na_on_a_mandatory_dimension_fails_by_default_and_names_it(na: str, slot: str, header: str) -> None:
    result = parse_critique(_t2i_raw(**{slot: na}), "t2i")
    assert not result.ok
    assert result.error_kind == "parse"
    assert result.reward is None
    assert header in (result.error or "") and "N/A is not allowed" in (result.error or "")


def test_na_on_image_faithfulness_of_an_edit_fails_by_default() -> None:
    raw = _golden("pw_edit_canonical_car_blue").replace("## Score: 3.5", "## Score: N/A", 1)
    assert "## Score: N/A" in raw
    result = parse_critique(raw, "edit")
    assert not result.ok and "Image Faithfulness" in (result.error or "")


def test_na_on_text_rendering_is_allowed_by_default() -> None:
    result = parse_critique(_t2i_raw(tr="N/A"), "t2i")
    assert result.ok, result.error
    assert result.scores["text_rendering"] is None


def test_allow_na_all_is_the_release_lenient_reading() -> None:
    result = parse_critique(_t2i_raw(tf="N/A", pq="3.4"), "t2i", allow_na="all")
    assert result.ok, result.error
    assert result.scores["text_faithfulness"] is None
    assert result.reward == pytest.approx((3.4 - 1) / 3)


@pytest.mark.parametrize("setting", [{"text_faithfulness", "text_rendering"}, "text_faithfulness,text_rendering",
                                     ["text_rendering", "text_faithfulness"]])
def test_allow_na_takes_a_collection_or_a_comma_separated_string(setting: object) -> None:
    assert parse_critique(_t2i_raw(tf="N/A"), "t2i", allow_na=setting).ok
    assert not parse_critique(_t2i_raw(pq="N/A"), "t2i", allow_na=setting).ok


@pytest.mark.parametrize("setting", ["none", "", (), frozenset()])
def test_allow_na_none_refuses_na_even_on_text_rendering(setting: object) -> None:
    result = parse_critique(_t2i_raw(tr="N/A"), "t2i", allow_na=setting)
    assert not result.ok
    assert "Text Rendering" in (result.error or "") and "may be N/A: none" in (result.error or "")


@pytest.mark.parametrize("setting", ["aesthetics", "text_rendering,colour", ["text_rendering", "Text Faithfulness"]])
def test_allow_na_with_an_unknown_dimension_is_a_setting_error_naming_it(setting: object) -> None:
    with pytest.raises(ValueError, match="unknown dimension"):
        parse_critique(_t2i_raw(), "t2i", allow_na=setting)


def test_pairwise_na_is_checked_per_side() -> None:
    raw = _golden("pa_t2i_canonical_monday_mug").replace("## Score B: 3.6", "## Score B: N/A")
    result = parse_comparison(raw, "t2i")
    assert not result.ok and result.winner is None
    assert "Physical and Visual Quality: Score B: N/A is not allowed" in (result.error or "")
    lenient = parse_comparison(raw, "t2i", allow_na="all")
    assert lenient.ok and lenient.scores_b["physical_quality"] is None


# --------------------------------------------------------------------------- non-finite scores


@pytest.mark.parametrize("cell", ["nan", "NaN", "inf", "-inf", "+inf", "Infinity", "∞", "1e999", "-1e999",
                                  "9" * 400, "**inf**", "[nan]"])
def test_parse_score_refuses_non_finite_numbers_instead_of_clamping(cell: str) -> None:
    ps = parse_score(cell)
    assert ps.value is None and not ps.is_na
    assert ps.error is not None and "non-finite" in ps.error


@pytest.mark.parametrize("cell", ["nan", "inf", "1e999"])
def test_non_finite_score_fails_even_on_text_rendering(cell: str) -> None:
    result = parse_critique(_t2i_raw(tr=cell), "t2i", allow_na="all")
    assert not result.ok
    assert "Text Rendering" in (result.error or "") and "non-finite" in (result.error or "")


@pytest.mark.parametrize(("cell", "value"), [("3e0", 3.0), ("2.5e-1", 1.0), ("7e0", 4.0)])
def test_finite_exponent_notation_is_read_and_clamped(cell: str, value: float) -> None:
    assert parse_score(cell).value == value


# --------------------------------------------------------------------------- several fields on a line


def test_score_a_score_b_and_winner_on_one_line_are_all_read() -> None:
    raw = _golden("pa_t2i_canonical_monday_mug").replace(
        "## Score A: 3.4\n## Score B: 3.6\n## Winner: Image B", "## Score A: 3.4 ## Score B: 3.6 ## Winner: Image B")
    result = parse_comparison(raw, "t2i")
    assert result.ok, result.error
    assert (result.scores_a["physical_quality"], result.scores_b["physical_quality"]) == (3.4, 3.6)
    assert result.dimension_winners["physical_quality"] == "B"


def test_prose_mentioning_a_score_inside_a_justification_is_not_split() -> None:
    raw = _t2i_raw().replace("## Justification: a.", "## Justification: the score: 1 would be too harsh.")
    result = parse_critique(raw, "t2i")
    assert result.ok and result.scores["text_faithfulness"] == 3.0
    assert result.justifications["text_faithfulness"] == "the score: 1 would be too harsh."


# --------------------------------------------------------------------------- aggregation specs


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("text_faithfulness=nan", "finite"),
        ("text_faithfulness=inf,physical_quality=1", "finite"),
        ("text_faithfulness=1e999", "finite"),
        ("text_faithfulness=-0.5", ">= 0"),
        ("text_faithfulness=0,physical_quality=0", "every weight is 0"),
        ("aesthetics=1", "aesthetics"),
        ("text_faithfulness=1,text_faithfulness=2", "twice"),
        ("text_faithfulness", "unknown aggregation preset"),
        ("=2", "expected key=number"),
    ],
)
def test_parse_aggregation_refuses_bad_specs_naming_the_problem(spec: str, fragment: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_aggregation(spec)
    assert fragment in str(info.value)
    with pytest.raises(ValueError):
        get_aggregation(spec)


def test_parse_aggregation_accepts_presets_weights_and_a_trailing_comma() -> None:
    assert parse_aggregation("release-edit-rl") is PRESETS["release-edit-rl"]
    custom = parse_aggregation(" text_faithfulness=2, physical_quality=0,")
    assert custom.weights_for("t2i") == {"text_faithfulness": 2.0}


@pytest.mark.parametrize("kwargs", [{"weights": {"text_faithfulness": float("nan")}}, {"tie_tolerance": -1.0},
                                    {"tie_tolerance": float("inf")}, {"weights": {}}])
def test_an_aggregation_object_checks_its_settings_when_built(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        Aggregation(**kwargs)


def test_parse_aggregation_takes_a_mapping_of_weights_with_the_same_checks() -> None:
    assert parse_aggregation({"text_faithfulness": 1.0}).weights_for("t2i") == {"text_faithfulness": 1.0}
    with pytest.raises(ValueError, match="finite"):
        parse_aggregation({"text_faithfulness": float("inf")})
    with pytest.raises(ValueError, match="must be a number"):
        parse_aggregation({"text_faithfulness": "2"})


@pytest.mark.parametrize(
    ("score_line", "value", "justification"),
    [
        ("## Score: 3. The fox is there.", 3.0, "The fox is there."),
        ("## Score: 3.5 - the fox is there", 3.5, "the fox is there"),
        ("## Score: 3.5/4 | ## Justification: the fox is there", 3.5, "the fox is there"),
        ("## Score: 3.5 reasoning: the fox is there", 3.5, "the fox is there"),
        ("## Score: 3.5", 3.5, None),
    ],
)
def test_text_after_the_score_is_kept_as_the_justification(score_line: str, value: float,
                                                           justification: str | None) -> None:
    raw = _t2i_raw().replace("## Justification: a.\n## Score: 3.0", score_line)
    result = parse_critique(raw, "t2i")
    assert result.ok, result.error
    assert result.scores["text_faithfulness"] == value
    assert result.justifications["text_faithfulness"] == justification


def test_a_justification_after_a_pairwise_score_is_kept_too() -> None:
    raw = _golden("pa_t2i_canonical_monday_mug").replace(
        "## Score A: 3.4\n## Score B: 3.6", "## Score A: 3.4 Justification: the handle is thin.\n## Score B: 3.6")
    result = parse_comparison(raw, "t2i")
    assert result.ok and result.scores_a["physical_quality"] == 3.4
    assert "the handle is thin." in (result.justifications["physical_quality"] or "")
