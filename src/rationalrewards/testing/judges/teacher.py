"""The ``parrot-teacher`` judge: a scripted PARROT teacher for offline tests, benchmarks and demos.

Plug :func:`scripted_teacher` into :class:`~rationalrewards.testing.scripted_server.ScriptedServer`
and the server answers anchored, pointwise and re-prediction requests the way a teacher would, as
a deterministic function of the request. The behaviour of a pair is the first word of its request
(``"fooled a red kite"``); unknown words behave as ``ok``:

``ok``       consistent rationales; the re-prediction follows the notes (kept)
``contra``   scores contradict the label (rejected: inconsistent)
``leak``     consistent, but the text gives the label away (rejected: leak)
``garbled``  a required dimension is missing (rejected: unparseable)
``fooled``   consistent, but the re-prediction names the other image (rejected: repredict_wrong)
``mixed``    sample 0 behaves as ``contra``, later samples as ``ok`` (the seed tells samples apart)
``vague``    the re-prediction has neither scores nor a verdict (rejected: repredict_unparseable)
``verdict``  the re-prediction has no scores but a correct ``Final verdict:`` line (kept)
``sided``    the re-prediction always says Image A (position bias; fails one of both orders)

Tie pairs (``input.include_ties``) get equal scores and a ``tie`` re-prediction.

::

    from rationalrewards.testing.judges import scripted_teacher
    from rationalrewards.testing.scripted_server import ScriptedServer

    with ScriptedServer(scripted_teacher(), latency_s=0.05) as server:
        Parrot(cfg_with_teacher(server.base_url)).run()
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from ...parrot.prompts import TeacherTemplates
from ..scripted_server import RecordedRequest, Responder, critique_text, detect_task, pairwise_text

BEHAVIOURS = ("ok", "contra", "leak", "garbled", "fooled", "mixed", "vague", "verdict", "sided")

STRONG: dict[str, float | None] = {"text_faithfulness": 3.7, "image_faithfulness": 3.5, "physical_quality": 3.4,
                                   "text_rendering": None}
WEAK: dict[str, float | None] = {"text_faithfulness": 2.2, "image_faithfulness": 2.6, "physical_quality": 2.5,
                                 "text_rendering": None}
STRONG_SUMMARY = "A strong result overall."
WEAK_SUMMARY = "A weak result overall."


def tag_of(text: str) -> str:
    """The behaviour word: the first word after ``User Instruction:`` when it is a known tag."""
    m = re.search(r"User Instruction:\s*(\w+)", text)
    word = m.group(1).lower() if m else ""
    return word if word in BEHAVIOURS else "ok"


def _other(letter: str) -> str:
    return "B" if letter == "A" else "A"


def scripted_teacher(behaviour_of: Callable[[str], str] = tag_of) -> Responder:
    """A responder for ``ScriptedServer`` that plays the PARROT teacher (see the module doc)."""
    phrases = TeacherTemplates.load().phrases

    def pair_scores(winner: str) -> tuple[dict[str, Any], dict[str, Any]]:
        return (STRONG, WEAK) if winner == "A" else (WEAK, STRONG)

    def respond(req: RecordedRequest) -> str:
        text = req.text("user")
        task = detect_task(req)
        tag = behaviour_of(text)
        body = req.json if isinstance(req.json, dict) else {}
        sample = int(body.get("seed") or 0)
        if tag == "mixed":
            tag = "contra" if sample == 0 else "ok"
        if "<notes>" in text:
            return _repredict(task, tag, text.split("<notes>", 1)[1].split("</notes>", 1)[0], pair_scores)
        if "Image A" in text and phrases["pairwise_tie"] in text:
            return pairwise_text(task, STRONG, STRONG, summary="Both images are equally good.")
        if "Image A" in text:
            shown = "A" if phrases["pairwise_preferred"].format(preferred="Image A", other="Image B") in text else "B"
            if tag == "garbled":
                return pairwise_text(task, {"text_faithfulness": 3.0}, {"text_faithfulness": 2.0})
            winner = _other(shown) if tag == "contra" else shown
            a, b = pair_scores(winner)
            summary = f"The human preferred Image {shown}, and the evidence agrees." if tag == "leak" else \
                f"Image {winner} is the better result."
            return pairwise_text(task, a, b, summary=summary)
        if phrases["pointwise_tie"] in text:
            return critique_text(task, STRONG, summary=STRONG_SUMMARY, refined_request="the same request")
        won = phrases["pointwise_won"] in text
        if tag == "garbled" and not won:
            return critique_text(task, {"text_faithfulness": 2.0})
        strong = (not won) if tag == "contra" else won
        summary = STRONG_SUMMARY if strong else WEAK_SUMMARY
        if tag == "leak":
            summary += " This image " + ("won" if won else "lost") + " the comparison."
        return critique_text(task, STRONG if strong else WEAK, summary=summary,
                             refined_request="the same request, stated more precisely")

    return respond


def _repredict(task: str, tag: str, notes: str, pair_scores: Callable[[str], tuple[Any, Any]]) -> str:
    if "on par" in notes or "equally good" in notes:
        return pairwise_text(task, STRONG, STRONG, summary="Neither is better.") + "\nFinal verdict: tie"
    m = re.search(r"Image ([AB]) is stronger", notes)
    if m:
        better = m.group(1)
    else:  # pointwise notes: the strong critique names the better image
        a_part = notes.split("Notes on Image B:", 1)[0]
        better = "A" if STRONG_SUMMARY in a_part else "B"
    if tag == "fooled":
        better = _other(better)
    if tag == "sided":
        better = "A"
    if tag == "vague":
        return "Both images have merits and flaws; I cannot tell which one is better."
    if tag == "verdict":
        return f"Weighing the notes against the images, one image is clearly better.\nFinal verdict: Image {better}"
    a, b = pair_scores(better)
    return pairwise_text(task, a, b, summary=f"Image {better} is better.") + f"\nFinal verdict: Image {better}"
