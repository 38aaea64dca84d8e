"""A steerable toy generator and a matching scripted critic, for tests, docs and benchmarks.

Nothing here needs a GPU or a model. The generator paints a flat grey image whose brightness
follows the request: each ``brighter`` raises it one level, each ``darker`` lowers it. The critic
(a responder for :class:`~rationalrewards.testing.scripted_server.ScriptedServer`) rewards bright
images and, like the released checkpoints, ends every critique with a refined request; it reads
the brightness off the image and asks for one more ``brighter`` than it sees. Together they make
a loop whose reward rises round by round only if the refined request reaches the generator, which
is what the tests check::

    from rationalrewards.refine.toy import toy_critic
    from rationalrewards.testing.scripted_server import ScriptedServer

    with ScriptedServer(toy_critic()) as server:
        ...  # generator "python:rationalrewards.refine.toy:toy_generator", critic at server.base_url
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from typing import Any

from PIL import Image, ImageStat

#: Grey value of level 0 and the step per level (levels 0..4 -> 40, 90, 140, 190, 240).
BASE_VALUE = 40
STEP = 50
SIZE = 32


def brightness_level(request: str, word: str = "brighter", opposite: str = "darker") -> int:
    """How many levels ``request`` asks for: ``word`` count minus ``opposite`` count, within 0..4."""
    text = request.lower()
    return max(0, min(4, text.count(word) - text.count(opposite)))


def toy_generator(request: str, *, seed: int, source: Any = None) -> Image.Image:
    """One flat grey image: ``40 + 50 * level`` (plus ``5 * (seed % 3)`` of seed noise).

    With a source image (an edit), the source's mean brightness replaces the base value.
    """
    base = float(BASE_VALUE)
    if source is not None:
        src = source[0] if isinstance(source, (list, tuple)) else source
        base = sum(ImageStat.Stat(src.convert("L")).mean) if src is not None else base
    value = int(max(0, min(255, base + STEP * brightness_level(request) + 5 * (seed % 3))))
    return Image.new("RGB", (SIZE, SIZE), (value, value, value))


def inverted_generator(request: str, *, seed: int, source: Any = None) -> Image.Image:
    """Like :func:`toy_generator` but every ``brighter`` makes the image *darker* (refinement hurts)."""
    level = brightness_level(request)
    value = int(max(0, min(255, 200 - STEP * level + 5 * (seed % 3))))
    return Image.new("RGB", (SIZE, SIZE), (value, value, value))


def brightness(png: bytes) -> float:
    """Mean brightness of an encoded image, in [0, 1]."""
    with Image.open(io.BytesIO(png)) as img:
        return sum(ImageStat.Stat(img.convert("L")).mean) / 255.0


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
) -> Callable[[Any], str]:
    """A ScriptedServer responder judging brightness (reward = mean brightness).

    ``refined(instruction, brightness)`` overrides the refined request (default: the instruction
    plus one more ``, brighter`` than the image shows). ``pairwise_winner`` ("A", "B" or "tie")
    forces pairwise verdicts; by default they follow brightness.
    """
    from ..testing.scripted_server import critique_text, detect_mode, detect_task, pairwise_text

    def default_refined(instruction: str, value: float) -> str:
        level = max(0, round((value * 255 - BASE_VALUE) / STEP))
        return instruction + ", brighter" * (level + 1)

    make_refined = refined or default_refined

    def respond(req: Any) -> str:
        task = detect_task(req)
        images = [data for _, data in req.images()]
        judged = images[1:] if task == "edit" else images
        values = [brightness(d) for d in judged]
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
