"""Parser edge cases found by probing: checklists inside justifications are prose, not headers."""

from __future__ import annotations

from rationalrewards.critique.parser import parse_critique

CHECKLIST = """# Detailed Judgement
1. Text Faithfulness:
## Score: 3.0
## Justification: Checking each requested element:
1. Text faithfulness to the colour: the ball is red.
3. Text rendering: N/A
2. Physical and Visual Quality:
## Justification: Clean.
## Score: 3.5
3. Text Rendering:
## Justification: The sign reads OPNE instead of OPEN.
## Score: 1.5
# Summary: ok
"""


def test_a_numbered_checklist_inside_a_justification_does_not_steal_a_dimension():
    res = parse_critique(CHECKLIST, "t2i")
    assert res.ok, res.error
    assert res.scores == {"text_faithfulness": 3.0, "image_faithfulness": None, "physical_quality": 3.5,
                          "text_rendering": 1.5}


def test_a_numbered_prose_line_is_not_a_header():
    text = CHECKLIST.replace("3. Text rendering: N/A", "3. Text rendering: not needed here.")
    res = parse_critique(text, "t2i")
    assert res.ok and res.scores["text_rendering"] == 1.5
