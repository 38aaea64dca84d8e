"""The ``toy-critic`` judge: the scripted critic of the refine toy loop.

It pairs with :func:`rationalrewards.refine.toy.toy_generator`, which paints a flat grey image
whose brightness follows the request (each ``brighter`` raises it one level). The critic rewards
bright images (reward = mean brightness) and, like the released checkpoints, ends every critique
with a refined request: it reads the brightness off the image and asks for one more ``brighter``
than it sees. Together they make a loop whose reward rises round by round only if the refined
request reaches the generator, which is what the refine tests check::

    from rationalrewards.testing.judges import toy_critic
    from rationalrewards.testing.scripted_server import ScriptedServer

    with ScriptedServer(toy_critic()) as server:
        ...  # generator "python:rationalrewards.refine.toy:toy_generator", critic at server.base_url
"""

from __future__ import annotations

import re
from collections.abc import Callable

from ...refine.toy import BASE_VALUE, STEP
from ..scripted_server import (
    RecordedRequest,
    Responder,
    critique_text,
    detect_mode,
    detect_task,
    pairwise_text,
)
from .pixel import brightness, judged_images


def instruction_of(user_text: str) -> str:
    """The request on the critic prompt's ``User Instruction:`` line."""
    m = re.search(r"User Instruction:\s*(.*)", user_text)
    return m.group(1).strip() if m else ""


def toy_scores(value: float, task: str) -> dict[str, float | None]:
    """Scores that make the reward equal the brightness: every dimension ``1 + 3 * value``."""
    s = 1.0 + 3.0 * value
    scores: dict[str, float | None] = {"text_faithfulness": s, "physical_quality": s, "text_rendering": None}
    if task == "edit":
        scores["image_faithfulness"] = s
    return scores


def toy_critic(
    *,
    refined: Callable[[str, float], str | None] | None = None,
    pairwise_winner: str | None = None,
) -> Responder:
    """A ScriptedServer responder judging brightness (reward = mean brightness).

    ``refined(instruction, brightness)`` overrides the refined request (default: the instruction
    plus one more ``, brighter`` than the image shows). ``pairwise_winner`` ("A", "B" or "tie")
    forces pairwise verdicts; by default they follow brightness.
    """

    def default_refined(instruction: str, value: float) -> str:
        level = max(0, round((value * 255 - BASE_VALUE) / STEP))
        return instruction + ", brighter" * (level + 1)

    make_refined = refined or default_refined

    def respond(req: RecordedRequest) -> str:
        task = detect_task(req)
        values = [brightness(d) for d in judged_images(req)]
        if detect_mode(req) == "pairwise":
            a, b = toy_scores(values[0], task), toy_scores(values[1], task)
            if pairwise_winner == "A":
                a, b = toy_scores(1.0, task), toy_scores(0.0, task)
            elif pairwise_winner == "B":
                a, b = toy_scores(0.0, task), toy_scores(1.0, task)
            elif pairwise_winner == "tie":
                a = b = toy_scores(0.5, task)
            return pairwise_text(task, a, b)
        instruction = instruction_of(req.text("user"))
        return critique_text(task, toy_scores(values[0], task), refined_request=make_refined(instruction, values[0]))

    return respond
