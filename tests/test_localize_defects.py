"""From a critique to defect phrases: the judge's follow-up list, and the noun-phrase fallback.

Nothing here loads a model; the judge is a scripted local server.
"""

from __future__ import annotations

import asyncio

import pytest
from PIL import Image

from rationalrewards import RewardModel
from rationalrewards.backends.openai_http import OpenAIBackend
from rationalrewards.localize.api import as_critique, ask_judge_for_defects
from rationalrewards.localize.defects import (
    Defect,
    assign_dimensions,
    build_followup_messages,
    clean_phrase,
    extract_noun_phrases,
    fallback_defects,
    parse_defect_list,
)
from rationalrewards.testing.scripted_server import RecordedRequest, Reply, ScriptedServer, critique_text

# -- the noun-phrase fallback, on justifications written like the judge's ---------------------------


@pytest.mark.parametrize(
    ("text", "phrases"),
    [
        ("The left hand has six fingers, and the sign's text is garbled.", ["left hand", "six fingers", "sign text"]),
        # A place after a spatial preposition ("on the sand") is where the defect is, not the defect.
        ("The man's body is mostly gone, but his shadow is still cast on the sand and a yellow smear remains "
         "where his legs were, so the removal is incomplete.", ["man body", "shadow", "yellow smear", "legs"]),
        ("The woman with the dog on the left has been blurred and her dog is missing its tail; the horizon line "
         "also shifted a few pixels. These are noticeable unrequested changes.",
         ["woman", "dog", "tail", "horizon line"]),
        ("The inpainted region has a repeated ripple pattern and a rectangular seam around the removed area, and "
         "the orphaned shadow breaks the physics of the scene.",
         ["inpainted region", "repeated ripple pattern", "rectangular seam", "orphaned shadow"]),
        # Predicates ("is consistent", "mechanically impossible") and coordinated places ("on the wall and
        # pavement") are not things to look for.
        ("The late-afternoon side light is consistent and the bicycle's shadow falls correctly on the wall and "
         "pavement. The mortar lines are crisp. However, several spokes of the rear wheel merge into the hub, and "
         "the chain does not wrap around the rear sprocket, which makes the drivetrain mechanically impossible.",
         ["late-afternoon side light", "bicycle shadow", "mortar lines", "spokes", "rear wheel", "chain",
          "drivetrain"]),
        ("Clear flaws stand out: distorted hands or objects, inconsistent lighting or smeared textures.",
         ["distorted hands"]),
        ("The text is partly garbled: several letters are wrong or missing.", ["text", "letters"]),
        # Prose about the request as a whole names nothing in the image.
        ("The overall theme is recognisable, but several requested attributes are wrong or absent.", []),
        ("", []),
    ],
)
def test_noun_phrases_name_the_things_a_justification_blames(text, phrases):
    assert extract_noun_phrases(text) == phrases


def test_noun_phrases_can_be_capped():
    assert extract_noun_phrases("The cat has two tails and the dog has no ears.", max_phrases=2) == ["cat", "two tails"]


CRITIQUE = {
    "id": "bike", "task": "t2i", "ok": True,
    "scores": {"text_faithfulness": 2.4, "physical_quality": 1.8, "text_rendering": None,
               "image_faithfulness": None},
    "justifications": {
        "text_faithfulness": "The basket is missing and a second bicycle appears.",
        "physical_quality": "The chain floats above the rear sprocket and the front wheel is oval.",
        "text_rendering": "No text was requested.",
    },
    "reward": 0.37, "summary": "A mechanically broken bicycle.",
}


def test_the_fallback_searches_low_dimensions_lowest_first_and_labels_them():
    defects = fallback_defects(CRITIQUE)
    assert [(d.phrase, d.dimension, d.source) for d in defects] == [
        ("chain", "physical_quality", "fallback"),
        ("front wheel", "physical_quality", "fallback"),
        ("basket", "text_faithfulness", "fallback"),
        ("second bicycle", "text_faithfulness", "fallback"),
    ]
    # Dimensions at or above the low-score bar are left alone.
    assert fallback_defects(CRITIQUE, low_score=2.0) == fallback_defects({**CRITIQUE, "scores": {
        **CRITIQUE["scores"], "text_faithfulness": 3.5}}, low_score=2.0)
    assert [d.dimension for d in fallback_defects(CRITIQUE, low_score=2.0)] == ["physical_quality"] * 2


# -- parsing the judge's defect list --------------------------------------------------------------------


def test_json_lines_are_read_with_their_dimensions():
    text = ('{"object": "Left hand", "problem": "six fingers", "dimension": "physical_quality"}\n'
            '{"object": "the sign text.", "problem": "misspelt", "dimension": "Text Rendering"}\n')
    defects, error = parse_defect_list(text)
    assert error is None
    assert [(d.phrase, d.problem, d.dimension, d.source) for d in defects] == [
        ("left hand", "six fingers", "physical_quality", "judge"),
        ("sign text", "misspelt", "text_rendering", "judge"),
    ]


@pytest.mark.parametrize(
    "text",
    [
        '```json\n[{"object": "left hand", "problem": "six fingers", "dimension": "physical_quality"}]\n```',
        '{"defects": [{"phrase": "left hand", "issue": "six fingers", "dimension": "Physical and Visual Quality"}]}',
        "<think>\nlooking at the hand\n</think>\n- [physical_quality] left hand: six fingers",
        "1. **Left hand** — six fingers (Physical and Visual Quality)",
        "- physical_quality: left hand: six fingers",
        "Here are the defects:\n* left hand - six fingers [physical]",
    ],
)
def test_other_list_shapes_give_the_same_defect(text):
    defects, error = parse_defect_list(text)
    assert error is None, error
    assert [(d.phrase, d.problem, d.dimension) for d in defects] == [("left hand", "six fingers", "physical_quality")]


def test_an_explicit_none_is_an_answer_not_an_error():
    assert parse_defect_list("NONE") == ([], None)
    assert parse_defect_list("**None.**") == ([], None)


@pytest.mark.parametrize("text", ["", "I am sorry, I cannot help with that request because the image is fine overall."])
def test_an_answer_without_a_list_is_reported(text):
    defects, error = parse_defect_list(text)
    assert defects == [] and error


def test_duplicates_are_merged_and_the_list_is_capped():
    text = "\n".join(f"- item{i % 3}: broken" for i in range(9))
    defects, _ = parse_defect_list(text, max_defects=2)
    assert [d.phrase for d in defects] == ["item0", "item1"]


def test_phrases_are_cleaned_for_the_detector():
    # Periods separate phrases in Grounding DINO's prompt, so they must never appear inside one.
    assert clean_phrase('The "St. Mary" sign.') == "st mary sign"
    assert clean_phrase("a  **Very** long phrase with far too many words in it", max_words=3) == "very long phrase"


def test_missing_dimensions_are_inferred_from_the_critique():
    defects = [Defect("rear sprocket"), Defect("shop sign", "letters wrong"), Defect("cloud", dimension="bogus")]
    crit = {**CRITIQUE, "scores": {**CRITIQUE["scores"], "text_rendering": 3.2}}
    assign_dimensions(defects, crit)
    # Mentioned in a justification -> that dimension; text-like -> text rendering; else the lowest.
    assert [d.dimension for d in defects] == ["physical_quality", "text_rendering", "physical_quality"]


# -- the follow-up question -----------------------------------------------------------------------------


def test_the_follow_up_shows_the_image_the_critique_and_the_allowed_dimensions():
    img = Image.new("RGB", (8, 8))
    messages = build_followup_messages(img, CRITIQUE, request="a red bicycle with a basket", max_defects=4)
    assert [m["role"] for m in messages] == ["system", "user"]
    parts = messages[1]["content"]
    assert [p["type"] for p in parts] == ["text", "image", "text"]
    text = parts[0]["text"] + parts[2]["text"]
    assert "a red bicycle with a basket" in text
    assert "Physical and Visual Quality (score 1.8/4): The chain floats" in text
    assert "Text Rendering (score N/A)" in text
    assert "at most 4" in text
    assert "text_faithfulness, physical_quality, text_rendering" in text and "image_faithfulness" not in text


def defect_judge(req: RecordedRequest):
    if "List the concrete, visible defects" in req.text("user"):
        return '{"object": "chain", "problem": "floats above the sprocket", "dimension": "physical_quality"}'
    return critique_text("t2i", {"text_faithfulness": 2.0, "physical_quality": 2.0, "text_rendering": None})


def test_the_judge_is_asked_with_the_image_and_its_answer_parsed(tmp_path):
    image = tmp_path / "bike.png"
    Image.new("RGB", (40, 30), (200, 0, 0)).save(image)
    with ScriptedServer(defect_judge) as server:
        rm = RewardModel(OpenAIBackend(server.base_url, "judge", max_retries=0))
        defects, error = asyncio.run(ask_judge_for_defects(rm, str(image), CRITIQUE, request="a bicycle"))
        req = server.requests[-1]
    assert error is None
    assert [(d.phrase, d.dimension, d.source) for d in defects] == [("chain", "physical_quality", "judge")]
    assert req.images()[0][0] == "image/png"
    assert req.json["max_tokens"] <= 768  # a short list, not another critique


def test_a_failing_judge_gives_a_reason_instead_of_raising(tmp_path):
    image = tmp_path / "bike.png"
    Image.new("RGB", (40, 30)).save(image)
    with ScriptedServer(lambda req: Reply(status=500)) as server:
        rm = RewardModel(OpenAIBackend(server.base_url, "judge", max_retries=0))
        defects, error = asyncio.run(ask_judge_for_defects(rm, str(image), CRITIQUE))
    assert defects == [] and error.startswith("judge call failed")


def test_critiques_come_as_results_rows_or_raw_text():
    row = {"id": "x", "prompt": "a bicycle", "critique": CRITIQUE, "reason": "reward 0.37 < 0.5"}
    crit, request = as_critique(row)
    assert crit["scores"] == CRITIQUE["scores"] and request == "a bicycle"
    raw = critique_text("t2i", {"text_faithfulness": 2.0, "physical_quality": 1.0, "text_rendering": None})
    crit, request = as_critique(raw)
    assert crit["ok"] and crit["scores"]["physical_quality"] == 1.0 and request is None
    with pytest.raises(ValueError, match="no scores, justifications or raw text"):
        as_critique({"id": "empty"})
