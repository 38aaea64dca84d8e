"""A steerable toy generator for tests, docs and benchmarks (no GPU, no model).

The generator paints a flat grey image whose brightness follows the request: each ``brighter``
raises it one level, each ``darker`` lowers it. Use it as ``--generator
python:rationalrewards.refine.toy:toy_generator``. Its scripted critic, which reads the
brightness off the image and asks for one more ``brighter``, is the ``brightness`` judge of the
test kit (``toy_critic`` in ``rationalrewards.testing.judges``): together they make a loop whose
reward rises round by round only if the refined request reaches the generator.
"""

from __future__ import annotations

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
