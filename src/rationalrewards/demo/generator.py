"""The demo's image generator: reads a request, draws a scene, and makes mistakes on purpose.

It stands in for a diffusion model, with one property a real model has and that the demo needs:
**how often it errs depends on how the request is worded.** A casual request ("a red circle and a
blue square") is drawn with frequent mistakes (a dropped object, a wrong colour, a misspelt word,
noise or blur); the same request with *explicitness cues* ("exactly two objects", "the word
"CAT"", "clean and sharp", "keep everything else unchanged") is drawn with far fewer. So a critic
that spots a defect and asks for the matching cue in its refined request really does lower the
error rate of the next round, and Generate-Critique-Refine has something real to elicit.

This is a *designed* property, not a learnt one: the error rates are the table in
:class:`ErrorRates`, and a cue lowers exactly the rates it names. Real generators respond to
prompt wording far less predictably; the demo shows the mechanism, not its size in the wild.

Use it directly (:class:`DemoGenerator`, :func:`generate`) or from ``refine`` as
``--generator python:rationalrewards.demo.generator:DemoGenerator``. Image ``i`` of a call depends
only on (request, source scene, ``seed + i``), as the refine loop's seeding convention requires.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, replace
from typing import Any

from PIL import Image

from ..refine.generators import Generator, GeneratorInputError
from .world import (
    ARTEFACTS,
    COLORS,
    DEFAULT_SIZE,
    POSITIONS,
    SHAPES,
    SIZES,
    WORDS,
    EditOp,
    Intent,
    Obj,
    Scene,
    _seeded,
    attach_scene,
    parse_request,
    render,
    scene_of,
)


@dataclass(frozen=True)
class ErrorRates:
    """Probabilities of each mistake, without and with the cue that targets it.

    Per requested object: ``missing`` (dropped), ``color`` (another colour), ``size`` (the other
    size, when a size was asked for), ``place`` (another slot, when a position was asked for).
    Per image: ``extra`` (an unrequested object), ``misspell`` / ``no_text`` (when a word was
    asked for), ``artefact`` (each of noise, blur and a seam, independently). Edits: ``skip``
    (the change is not made), ``wrong`` (made wrongly), ``other`` (something else changes too).
    Cues: count -> missing/extra, attr -> color/size, place -> place, spell -> misspell/no_text,
    clean -> artefact, apply -> skip/wrong, keep -> other.
    """

    missing: tuple[float, float] = (0.22, 0.04)
    extra: tuple[float, float] = (0.12, 0.02)
    color: tuple[float, float] = (0.18, 0.04)
    size: tuple[float, float] = (0.12, 0.03)
    place: tuple[float, float] = (0.12, 0.03)
    misspell: tuple[float, float] = (0.35, 0.06)
    no_text: tuple[float, float] = (0.10, 0.02)
    artefact: tuple[float, float] = (0.13, 0.03)
    skip: tuple[float, float] = (0.25, 0.06)
    wrong: tuple[float, float] = (0.15, 0.04)
    other: tuple[float, float] = (0.30, 0.06)

    def rate(self, name: str, cued: bool) -> float:
        low_high = getattr(self, name)
        return low_high[1] if cued else low_high[0]

    def to_json(self) -> dict[str, Any]:
        return {k: list(v) for k, v in asdict(self).items()}


_CUE_FOR = {"missing": "count", "extra": "count", "color": "attr", "size": "attr", "place": "place",
            "misspell": "spell", "no_text": "spell", "artefact": "clean", "skip": "apply", "wrong": "apply",
            "other": "keep"}


def _misspell(word: str, rng: random.Random) -> str:
    i = rng.randrange(len(word))
    letters = [c for c in "ABCDEFGHIJKLMNOPRSTUVWXYZ" if c != word[i]]
    return word[:i] + rng.choice(letters) + word[i + 1:]


class _Draw:
    """One sampling of a scene for an intent."""

    def __init__(self, intent: Intent, rates: ErrorRates, rng: random.Random):
        self.intent, self.rates, self.rng = intent, rates, rng

    def happens(self, name: str) -> bool:
        return self.rng.random() < self.rates.rate(name, _CUE_FOR[name] in self.intent.cues)

    def artefacts(self) -> tuple[str, ...]:
        return tuple(a for a in ARTEFACTS if self.happens("artefact"))

    def t2i(self) -> Scene:
        rng, intent = self.rng, self.intent
        free = list(POSITIONS)
        placed: list[Obj] = []
        wants = list(intent.objects)
        # Requested positions are honoured first (unless the place error strikes), then the rest
        # of the objects go to random free slots.
        order = sorted(range(len(wants)), key=lambda i: wants[i].position is None)
        for i in order:
            w = wants[i]
            if self.happens("missing"):
                continue
            pos = w.position if w.position in free else None
            if pos is not None and self.happens("place") and len(free) > 1:
                pos = rng.choice([p for p in free if p != pos])
            if pos is None:
                if not free:
                    continue
                pos = rng.choice(free)
            free.remove(pos)
            color = w.color
            if self.happens("color"):
                color = rng.choice([c for c in COLORS if c != w.color])
            size = w.size or rng.choice(SIZES)
            if w.size and self.happens("size"):
                size = "small" if w.size == "large" else "large"
            placed.append(Obj(w.shape, color, size, pos))
        if free and self.happens("extra"):
            placed.append(Obj(rng.choice(SHAPES), rng.choice(list(COLORS)), rng.choice(SIZES), rng.choice(free)))
        text = intent.text
        if text is not None:
            if self.happens("no_text"):
                text = None
            elif self.happens("misspell"):
                text = _misspell(text, rng)
        objs = tuple(sorted(placed, key=lambda o: POSITIONS.index(o.position)))
        return Scene(objs, text, self.artefacts())

    def edit(self) -> Scene:
        intent = self.intent
        src = intent.source
        assert src is not None
        op = intent.edit
        if op is None or self.happens("skip"):
            out = src.clean()
        elif self.happens("wrong"):
            out = self._wrong(op, src)
        else:
            out = op.apply(src)
        if self.happens("other"):
            out = self._other(op, out)
        return replace(out, artefacts=self.artefacts())

    def _wrong(self, op: EditOp, src: Scene) -> Scene:
        rng = self.rng
        if op.kind == "recolor" and op.target is not None:
            bad = rng.choice([c for c in COLORS if c not in (op.color, op.target.color)])
            return replace(op, color=bad).apply(src)
        if op.kind == "add" and op.obj is not None:
            bad = rng.choice([c for c in COLORS if c != op.obj.color])
            return replace(op, obj=replace(op.obj, color=bad)).apply(src)
        if op.kind == "retext" and op.text:
            return replace(op, text=_misspell(op.text, rng)).apply(src)
        if op.kind == "remove" and op.target is not None:
            # Removes the wrong object: the requested one stays, another goes.
            others = [o for o in src.objects if o != op.target]
            if others:
                return replace(op, target=rng.choice(others)).apply(src)
        return src.clean()

    def _other(self, op: EditOp | None, scene: Scene) -> Scene:
        rng = self.rng
        touched = set()
        if op is not None:
            for o in (op.target, op.obj):
                if o is not None:
                    touched.add(o.position)
        others = [o for o in scene.objects if o.position not in touched]
        if others:
            victim = rng.choice(others)
            if rng.random() < 0.6:
                new = replace(victim, color=rng.choice([c for c in COLORS if c != victim.color]))
                objs = tuple(new if o == victim else o for o in scene.objects)
            else:
                objs = tuple(o for o in scene.objects if o != victim)
            return replace(scene, objects=objs)
        if scene.text and (op is None or op.kind != "retext"):
            return replace(scene, text=rng.choice([w for w in WORDS if w != scene.text]))
        return scene


def draw_scene(request: str, *, source: Scene | None = None, seed: int = 0,
               rates: ErrorRates | None = None) -> tuple[Intent, Scene]:
    """The intent read from ``request`` and the scene the generator draws for ``seed``."""
    intent = parse_request(request, source)
    src_key = json.dumps(source.to_json(), sort_keys=True) if source is not None else ""
    rng = _seeded("demo-generator", request, src_key, seed)
    d = _Draw(intent, rates or ErrorRates(), rng)
    return intent, (d.edit() if source is not None else d.t2i())


class DemoGenerator(Generator):
    """The world's generator as a refine :class:`~rationalrewards.refine.generators.Generator`.

    Args:
        size: image side in pixels.
        rates: :class:`ErrorRates` (defaults as documented there).

    Images carry their scene in ``image.info["rr-scene"]`` (see :func:`~.world.attach_scene`).
    Edits need a source image made by the world (its scene is read from the PNG text chunk).
    """

    name = "demo"
    max_concurrency = 4

    def __init__(self, size: int = DEFAULT_SIZE, rates: ErrorRates | None = None):
        self.size = int(size)
        self.rates = rates or ErrorRates()

    def generate(self, request: str, *, source: Any = None, seed: int = 0, n: int = 1) -> list[Image.Image]:
        src = self.source_scene(source)
        images = []
        for i in range(n):
            _intent, scene = draw_scene(request, source=src, seed=seed + i, rates=self.rates)
            images.append(attach_scene(render(scene, self.size), scene))
        return images

    @staticmethod
    def source_scene(source: Any) -> Scene | None:
        """The scene of a source image (a PIL image, bytes, a path or a list of one of them)."""
        if source is None:
            return None
        if isinstance(source, (list, tuple)):
            if not source:
                return None
            source = source[0]
        scene = scene_of(source)
        if scene is None:
            raise GeneratorInputError(
                "the demo generator edits only images made by the demo world (their PNG carries the scene "
                "in an 'rr-scene' text chunk); this source image has none"
            )
        return scene

    def describe(self) -> dict[str, Any]:
        return {"generator": self.name, "size": self.size, "rates": self.rates.to_json()}


def generate(request: str, source: Any = None, seed: int = 0, n: int = 1) -> list[Image.Image]:
    """Functional form of :class:`DemoGenerator` with the default rates
    (``--generator python:rationalrewards.demo.generator:generate``)."""
    return DemoGenerator().generate(request, source=source, seed=seed, n=n)
