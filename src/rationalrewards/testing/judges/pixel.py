"""The ``pixel`` judge: scores are functions of the judged image's pixels (no model, no GPU).

A trainer that makes images brighter (or redder) sees its reward go up, and a test can predict
every score exactly::

    from rationalrewards.testing.judges import pixel_judge
    from rationalrewards.testing.scripted_server import ScriptedServer

    with ScriptedServer(pixel_judge()) as server:
        rm = RewardModel.from_openai(server.base_url, model="scripted")
"""

from __future__ import annotations

import io
from collections.abc import Callable

from PIL import Image, ImageStat

from ..scripted_server import RecordedRequest, Responder, detect_task, judge_responder

Scores = dict[str, "float | None"]


def brightness(png: bytes) -> float:
    """Mean luminance of an encoded image, in [0, 1]."""
    with Image.open(io.BytesIO(png)) as img:
        return ImageStat.Stat(img.convert("L")).mean[0] / 255.0


def redness(png: bytes) -> float:
    """How much red dominates, in [0, 1]."""
    with Image.open(io.BytesIO(png)) as img:
        r, g, b = ImageStat.Stat(img.convert("RGB")).mean
    return max(0.0, (r - (g + b) / 2) / 255.0)


def pixel_scores(png: bytes) -> Scores:
    """Text Faithfulness = 1 + 3 x brightness, Physical Quality = 1 + 3 x redness, Image
    Faithfulness 3.0, Text Rendering N/A."""
    return {
        "text_faithfulness": round(1.0 + 3.0 * brightness(png), 4),
        "image_faithfulness": 3.0,
        "physical_quality": round(1.0 + 3.0 * redness(png), 4),
        "text_rendering": None,
    }


def judged_images(req: RecordedRequest) -> list[bytes]:
    """The images under judgement: every image but an edit's source (which comes first)."""
    images = [data for _, data in req.images()]
    return images[1:] if detect_task(req) == "edit" else images


def pixel_judge(score: Callable[[bytes], Scores] = pixel_scores, *, refined_request: str | None = "a refined request"
                ) -> Responder:
    """A responder answering in the released format with ``score(image bytes)`` for the judged
    image(s): pointwise the last image (an edit's source comes first), pairwise images A and B."""

    def pointwise(req: RecordedRequest) -> Scores:
        return score(judged_images(req)[-1])

    def pairwise(req: RecordedRequest) -> tuple[Scores, Scores]:
        a, b = judged_images(req)[-2:]
        return score(a), score(b)

    return judge_responder(pointwise, pairwise, refined_request=refined_request)
