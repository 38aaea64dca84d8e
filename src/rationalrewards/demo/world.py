"""The demo's synthetic world: scene specs, a renderer, prompts written from specs, edit tasks.

Everything here is small, deterministic and readable on purpose, so that every defect the
generator makes and every claim the teacher writes can be checked against the truth.

* A :class:`Scene` is what an image shows: up to three simple shapes (circle, square, triangle)
  in four colours, two sizes and three slots (left, middle, right), an optional three-letter word
  at the bottom, and optional rendering artefacts (noise, blur, a seam).
* :func:`render` draws a scene (96 x 96 pixels by default, so each object slot lines up with one
  column of the student's 32-pixel visual tokens); :func:`encode_png` stores the scene spec in a
  PNG text chunk (``rr-scene``) next to the pixels. The chunk is the side channel the scripted
  teacher reads: the student only ever sees pixels.
* An :class:`Intent` is what a request asks for; :func:`write_prompt` writes it in natural
  language (with or without *explicitness cues* such as "exactly two objects" or a quoted word),
  and :func:`parse_request` reads any such request back. Edit tasks (:class:`EditOp`) change one
  thing of a source scene: recolour, remove or add an object, or replace the word.
* :func:`find_defects` compares an image's scene with what was asked and lists the defects per
  critique dimension; :func:`true_scores` turns them into the 1-4 scores the world considers true.

Only the standard library and Pillow are imported here.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import re
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from PIL import Image, ImageDraw, ImageFilter, ImageFont, PngImagePlugin

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (215, 45, 40),
    "green": (45, 165, 60),
    "blue": (45, 85, 215),
    "yellow": (235, 190, 25),
}
SIZES: tuple[str, ...] = ("small", "large")
POSITIONS: tuple[str, ...] = ("left", "middle", "right")
WORDS: tuple[str, ...] = ("CAT", "SUN", "MAP", "BOX", "JAM", "OAK", "ZIP", "FOG", "HAT", "PEN")
ARTEFACTS: tuple[str, ...] = ("noise", "blur", "seam")
BACKGROUND = (248, 248, 246)
SCENE_CHUNK = "rr-scene"
DEFAULT_SIZE = 96

Cue = Literal["count", "attr", "place", "clean", "spell", "apply", "keep"]
#: Explicitness cues a request can carry; each lowers the matching error rates of the generator.
CUES: tuple[str, ...] = ("count", "attr", "place", "clean", "spell", "apply", "keep")


# ------------------------------------------------------------------------------------------------
# Specs
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Obj:
    """One drawn object."""

    shape: str
    color: str
    size: str = "large"
    position: str = "middle"

    def name(self) -> str:
        return f"{self.color} {self.shape}"


@dataclass(frozen=True)
class Scene:
    """What an image shows; :func:`render` draws it."""

    objects: tuple[Obj, ...] = ()
    text: str | None = None
    artefacts: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "objects": [[o.shape, o.color, o.size, o.position] for o in self.objects],
            "text": self.text,
            "artefacts": list(self.artefacts),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Scene:
        objs = tuple(Obj(*map(str, o)) for o in data.get("objects", []))
        text = data.get("text")
        return cls(objs, None if text is None else str(text), tuple(str(a) for a in data.get("artefacts", [])))

    def at(self, position: str) -> Obj | None:
        return next((o for o in self.objects if o.position == position), None)

    def clean(self) -> Scene:
        return replace(self, artefacts=())


@dataclass(frozen=True)
class Want:
    """A requested object; ``None`` attributes were left to the generator."""

    shape: str
    color: str
    size: str | None = None
    position: str | None = None

    def phrase(self) -> str:
        size = f"{self.size} " if self.size else ""
        where = ""
        if self.position:
            where = " in the middle" if self.position == "middle" else f" on the {self.position}"
        return f"{size}{self.color} {self.shape}{where}"


@dataclass(frozen=True)
class EditOp:
    """One edit of a source scene.

    ``kind``: ``recolor`` (``target`` -> ``color``), ``remove`` (``target``), ``add`` (``obj``) or
    ``retext`` (the word becomes ``text``).
    """

    kind: str
    target: Obj | None = None
    color: str | None = None
    obj: Obj | None = None
    text: str | None = None

    def apply(self, scene: Scene) -> Scene:
        """The scene the edit asks for (artefacts dropped)."""
        objs = list(scene.objects)
        if self.kind == "recolor" and self.target is not None and self.color:
            objs = [replace(o, color=self.color) if o == self.target else o for o in objs]
        elif self.kind == "remove" and self.target is not None:
            objs = [o for o in objs if o != self.target]
        elif self.kind == "add" and self.obj is not None:
            objs.append(self.obj)
        text = self.text if self.kind == "retext" else scene.text
        return Scene(tuple(sorted(objs, key=lambda o: POSITIONS.index(o.position))), text, ())


@dataclass(frozen=True)
class Intent:
    """What a request asks for. t2i: ``objects`` and ``text``; edit: ``edit`` on ``source``."""

    objects: tuple[Want, ...] = ()
    text: str | None = None
    cues: frozenset[str] = frozenset()
    edit: EditOp | None = None
    source: Scene | None = None

    @property
    def task(self) -> Literal["t2i", "edit"]:
        return "edit" if self.source is not None else "t2i"


@dataclass
class Task:
    """A request of the world: its prompt, the intent behind it, and (edits) the source scene."""

    id: str
    prompt: str
    intent: Intent
    category: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def task(self) -> Literal["t2i", "edit"]:
        return self.intent.task


# ------------------------------------------------------------------------------------------------
# Rendering
# ------------------------------------------------------------------------------------------------

_FONTS: dict[int, Any] = {}


def _font(px: int) -> Any:
    if px not in _FONTS:
        try:
            _FONTS[px] = ImageFont.load_default(size=px)
        except (TypeError, OSError, ImportError):  # Pillow without FreeType: the bitmap font
            _FONTS[px] = ImageFont.load_default()
    return _FONTS[px]


def _seeded(*parts: Any) -> random.Random:
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def render(scene: Scene, size: int = DEFAULT_SIZE) -> Image.Image:
    """Draw ``scene`` on a ``size`` x ``size`` RGB canvas (deterministic: same scene, same pixels)."""
    img = Image.new("RGB", (size, size), BACKGROUND)
    draw = ImageDraw.Draw(img)
    slot = size / 3
    cy = size * 0.375
    for obj in scene.objects:
        cx = slot * (POSITIONS.index(obj.position) + 0.5)
        r = size * (0.09 if obj.size == "small" else 0.15)
        box = (cx - r, cy - r, cx + r, cy + r)
        fill = COLORS[obj.color]
        if obj.shape == "circle":
            draw.ellipse(box, fill=fill)
        elif obj.shape == "square":
            draw.rectangle(box, fill=fill)
        else:
            draw.polygon([(cx, cy - r), (cx + r, cy + r * 0.85), (cx - r, cy + r * 0.85)], fill=fill)
    if scene.text:
        font = _font(max(8, int(size * 0.21)))
        draw.text((size / 2, size * 0.83), scene.text, fill=(20, 20, 20), font=font, anchor="mm")
    rng = _seeded("artefacts", json.dumps(scene.to_json(), sort_keys=True), size)
    for art in scene.artefacts:
        if art == "noise":
            noise = Image.frombytes("L", (size, size), rng.randbytes(size * size)).convert("RGB")
            img = Image.blend(img, noise, 0.42)
        elif art == "blur":
            img = img.filter(ImageFilter.GaussianBlur(size * 0.035))
        elif art == "seam":
            x = int(size * rng.uniform(0.3, 0.7))
            shift = max(4, size // 8)
            right = img.crop((x, 0, size, size))
            img.paste(right.crop((0, size - shift, size - x, size)), (x, 0))
            img.paste(right.crop((0, 0, size - x, size - shift)), (x, shift))
            ImageDraw.Draw(img).line([(x, 0), (x, size)], fill=(70, 70, 70), width=max(1, size // 32))
    return img


def encode_png(image: Image.Image, scene: Scene) -> bytes:
    """PNG bytes of ``image`` carrying ``scene`` in the ``rr-scene`` text chunk."""
    info = PngImagePlugin.PngInfo()
    info.add_text(SCENE_CHUNK, json.dumps(scene.to_json(), sort_keys=True, separators=(",", ":")))
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def render_png(scene: Scene, size: int = DEFAULT_SIZE) -> bytes:
    """:func:`render` + :func:`encode_png`."""
    return encode_png(render(scene, size), scene)


# Scenes of images made in this process, by a digest of their pixels: a plain ``image.save()``
# (as the refine loop does) drops the PNG text chunk, and the pixels are all that is left.
_SEEN: OrderedDict[str, str] = OrderedDict()
_SEEN_MAX = 20_000


def _pixel_key(image: Image.Image) -> str:
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    return hashlib.sha256(f"{rgb.size}".encode() + rgb.tobytes()).hexdigest()


def attach_scene(image: Image.Image, scene: Scene) -> Image.Image:
    """Record ``scene`` with ``image``: in ``image.info`` (what :func:`encode_png` and
    :func:`scene_of` read) and in a per-process index of pixel digests, so that the scene is still
    found after the image went through a plain ``save()`` that drops PNG text chunks."""
    text = json.dumps(scene.to_json(), sort_keys=True, separators=(",", ":"))
    image.info[SCENE_CHUNK] = text
    _SEEN[_pixel_key(image)] = text
    while len(_SEEN) > _SEEN_MAX:
        _SEEN.popitem(last=False)
    return image


def scene_of(image: Any) -> Scene | None:
    """The scene recorded with an image (PNG bytes, a path, a PIL image or an object with a
    ``.data`` attribute such as :class:`~rationalrewards.images.PreparedImage`): its ``rr-scene``
    chunk, else the scene :func:`attach_scene` recorded for the same pixels in this process; None
    if neither exists."""
    try:
        if isinstance(image, Image.Image):
            text = image.info.get(SCENE_CHUNK) or (_SEEN.get(_pixel_key(image)) if _SEEN else None)
        else:
            data = getattr(image, "data", image)
            if isinstance(data, (str, os.PathLike)):
                with open(data, "rb") as fh:
                    data = fh.read()
            with Image.open(io.BytesIO(data)) as im:  # the header holds the text chunks
                text = im.info.get(SCENE_CHUNK)
                if not text and _SEEN:
                    im.load()
                    text = _SEEN.get(_pixel_key(im))
    except (OSError, ValueError, TypeError, SyntaxError):
        return None
    if not text:
        return None
    try:
        return Scene.from_json(json.loads(text))
    except (ValueError, TypeError, KeyError):
        return None


# ------------------------------------------------------------------------------------------------
# Prompts: intent -> words, words -> intent
# ------------------------------------------------------------------------------------------------

_NUM = {1: "one", 2: "two", 3: "three"}
_OPENERS = ("", "", "a picture of ", "an image of ", "draw ", "a simple drawing of ")
#: Fixed wordings of the explicitness cues (what write_prompt adds and refined requests contain).
CUE_TEXT: dict[str, str] = {
    "count": "Draw every listed object exactly once.",
    "attr": "Give each object exactly the stated colour and size.",
    "place": "Put each object exactly where stated.",
    "clean": "Render it clean and sharp, with no noise, blur or seams.",
    "spell": "Spell the word exactly.",
    "apply": "Make sure to apply the requested change.",
    "keep": "Keep everything else unchanged.",
}
_CUE_PATTERNS: dict[str, re.Pattern[str]] = {
    "count": re.compile(r"\bexactly\s+(?:one|two|three|\d)\s+objects?\b|\bexactly once\b", re.I),
    "attr": re.compile(r"\bstated colou?rs?\b|\bstated sizes?\b", re.I),
    "place": re.compile(r"\bwhere stated\b|\bexactly (?:on|in) the\b", re.I),
    "clean": re.compile(r"\bclean\b|\bsharp\b|\bno noise\b", re.I),
    "spell": re.compile(r"\"[A-Za-z]+\"|\bspell", re.I),
    "apply": re.compile(r"\bmake sure\b|\bapply the requested change\b", re.I),
    "keep": re.compile(r"\bkeep everything else\b|\bunchanged\b|\bleave everything else\b", re.I),
}
_OBJ = re.compile(
    r"\b(?:(?P<size>small|large|big|tiny)\s+)?(?P<color>red|green|blue|yellow)\s+(?P<shape>circle|square|triangle)s?\b"
    r"(?:\s+(?:on|in|at)\s+the\s+(?P<pos>left|middle|center|centre|right))?",
    re.I,
)
_WORD_QUOTED = re.compile(r"\"([A-Za-z]{2,8})\"")
_WORD_BARE = re.compile(r"\b(?:word|text|label)\s+(?:reading\s+)?([A-Z]{2,8})\b")


def _norm_size(s: str | None) -> str | None:
    if s is None:
        return None
    return {"big": "large", "tiny": "small"}.get(s.lower(), s.lower())


def _norm_pos(p: str | None) -> str | None:
    if p is None:
        return None
    return {"center": "middle", "centre": "middle"}.get(p.lower(), p.lower())


def find_cues(text: str) -> frozenset[str]:
    """The explicitness cues present in a request."""
    return frozenset(name for name, pat in _CUE_PATTERNS.items() if pat.search(text))


def _join(parts: list[str]) -> str:
    if len(parts) <= 1:
        return "".join(parts)
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def write_prompt(intent: Intent, rng: random.Random) -> str:
    """A natural-language t2i request for ``intent`` (its cues decide the explicit wordings)."""
    cues = intent.cues
    objs = [("an " if w.phrase()[0] in "aeiou" else "a ") + w.phrase() for w in intent.objects]
    body = _join(objs)
    if "count" in cues:
        n = len(intent.objects)
        body = f"exactly {_NUM.get(n, str(n))} object{'s' if n != 1 else ''}: {body}"
    else:
        body = rng.choice(_OPENERS) + body
    if intent.text:
        if "spell" in cues:
            body += rng.choice((f' with the word "{intent.text}" written below',
                                f' and the text "{intent.text}" at the bottom'))
        else:
            body += rng.choice((f" with the word {intent.text} written below", f" and the text {intent.text} at the bottom"))
    extras = [CUE_TEXT[c] for c in ("attr", "place", "clean") if c in cues and (c != "place" or _has_places(intent))]
    prompt = body[0].upper() + body[1:]
    return prompt if not extras else prompt + ". " + " ".join(extras)


def _has_places(intent: Intent) -> bool:
    return any(w.position for w in intent.objects)


def write_edit(op: EditOp, cues: frozenset[str], rng: random.Random) -> str:
    """A natural-language edit instruction for ``op``."""
    if op.kind == "recolor":
        assert op.target is not None
        head = rng.choice((f"change the {op.target.name()} to {op.color}", f"make the {op.target.name()} {op.color}",
                           f"turn the {op.target.name()} {op.color}"))
    elif op.kind == "remove":
        assert op.target is not None
        head = rng.choice((f"remove the {op.target.name()}", f"delete the {op.target.name()}",
                           f"take out the {op.target.name()}"))
    elif op.kind == "add":
        assert op.obj is not None
        w = Want(op.obj.shape, op.obj.color, op.obj.size, op.obj.position)
        head = f"add a {w.phrase()}"
    else:
        word = f'"{op.text}"' if "spell" in cues else op.text
        head = rng.choice((f"change the text to {word}", f"replace the word with {word}"))
    extras = [CUE_TEXT[c] for c in ("apply", "keep", "clean") if c in cues]
    out = head[0].upper() + head[1:]
    return out if not extras else out + ". " + " ".join(extras)


def parse_request(text: str, source: Scene | None = None) -> Intent:
    """Read a request written in the world's language back into an :class:`Intent`.

    With ``source`` it is read as an edit instruction on that scene. Unknown words are ignored,
    so a paraphrase, a request with appended refinement sentences, or a partly garbled one still
    yields whatever it states clearly.
    """
    cues = find_cues(text)
    if source is not None:
        return Intent(cues=cues, edit=_parse_edit(text, source), source=source)
    wants: list[Want] = []
    for m in _OBJ.finditer(text):
        wants.append(Want(m.group("shape").lower(), m.group("color").lower(), _norm_size(m.group("size")),
                          _norm_pos(m.group("pos"))))
    word = _WORD_QUOTED.search(text)
    bare = _WORD_BARE.search(text)
    found = word.group(1) if word else bare.group(1) if bare else None
    return Intent(tuple(wants[:3]), found.upper() if found else None, cues)


def _parse_edit(text: str, source: Scene) -> EditOp | None:
    low = text.lower()

    def find_target() -> Obj | None:
        for m in _OBJ.finditer(text):
            color, shape = m.group("color").lower(), m.group("shape").lower()
            hit = next((o for o in source.objects if o.color == color and o.shape == shape), None)
            if hit is not None:
                return hit
        return None

    m = re.search(r"\b(?:change|turn|make|recolou?r)\s+the\s+(red|green|blue|yellow)\s+(circle|square|triangle)"
                  r"\s+(?:to\s+|into\s+)?(?:be\s+)?(red|green|blue|yellow)\b", low)
    if m:
        target = next((o for o in source.objects if o.color == m.group(1) and o.shape == m.group(2)), None)
        return EditOp("recolor", target=target, color=m.group(3)) if target else None
    if re.search(r"\b(?:remove|delete|take out|erase)\b", low):
        target = find_target()
        return EditOp("remove", target=target) if target else None
    if re.search(r"\badd\b", low):
        m2 = _OBJ.search(text)
        if m2:
            pos = _norm_pos(m2.group("pos"))
            free = [p for p in POSITIONS if source.at(p) is None]
            if pos is None or pos not in free:
                pos = free[0] if free else None
            if pos is None:
                return None
            return EditOp("add", obj=Obj(m2.group("shape").lower(), m2.group("color").lower(),
                                         _norm_size(m2.group("size")) or "large", pos))
        return None
    m3 = re.search(r"\b(?:text|word)\b.*?\b(?:to|with)\s+\"?([A-Za-z]{2,8})\"?", text, re.I)
    if m3:
        return EditOp("retext", text=m3.group(1).upper())
    return None


# ------------------------------------------------------------------------------------------------
# Sampling tasks
# ------------------------------------------------------------------------------------------------


def _sample_cues(rng: random.Random, names: tuple[str, ...], p: float) -> frozenset[str]:
    return frozenset(c for c in names if rng.random() < p)


def sample_t2i(rng: random.Random, *, cue_rate: float = 0.2, text_rate: float = 0.35) -> Intent:
    """A random t2i intent: 1-3 distinct objects, attributes sometimes left open, maybe a word."""
    n = rng.choice((1, 2, 2, 3))
    slots = rng.sample(POSITIONS, n)
    kinds = rng.sample([(s, c) for s in SHAPES for c in COLORS], n)
    say_pos = rng.random() < 0.5
    wants = tuple(
        Want(shape, color, rng.choice(SIZES) if rng.random() < 0.5 else None, pos if say_pos else None)
        for (shape, color), pos in zip(kinds, sorted(slots, key=POSITIONS.index), strict=True)
    )
    text = rng.choice(WORDS) if rng.random() < text_rate else None
    cues = _sample_cues(rng, ("count", "attr", "place", "clean", "spell"), cue_rate)
    return Intent(wants, text, cues)


def sample_scene(rng: random.Random, *, text_rate: float = 0.4) -> Scene:
    """A random clean scene (a source image for edits)."""
    n = rng.choice((1, 2, 2, 3))
    slots = sorted(rng.sample(POSITIONS, n), key=POSITIONS.index)
    kinds = rng.sample([(s, c) for s in SHAPES for c in COLORS], n)
    objs = tuple(Obj(s, c, rng.choice(SIZES), p) for (s, c), p in zip(kinds, slots, strict=True))
    return Scene(objs, rng.choice(WORDS) if rng.random() < text_rate else None)


def sample_edit(rng: random.Random, *, cue_rate: float = 0.2) -> tuple[Scene, EditOp, frozenset[str]]:
    """A random (source scene, edit, cues) triple; the edit is always possible on the scene."""
    while True:
        src = sample_scene(rng)
        kinds = ["recolor", "remove"]
        if len(src.objects) < 3:
            kinds.append("add")
        if src.text:
            kinds.append("retext")
        kind = rng.choice(kinds)
        if kind in ("recolor", "remove"):
            if kind == "remove" and len(src.objects) < 2:
                continue
            target = rng.choice(src.objects)
            if kind == "recolor":
                used = {(o.shape, o.color) for o in src.objects}
                colors = [c for c in COLORS if c != target.color and (target.shape, c) not in used]
                op = EditOp("recolor", target=target, color=rng.choice(colors))
            else:
                op = EditOp("remove", target=target)
        elif kind == "add":
            used = {(o.shape, o.color) for o in src.objects}
            shape, color = rng.choice([(s, c) for s in SHAPES for c in COLORS if (s, c) not in used])
            pos = rng.choice([p for p in POSITIONS if src.at(p) is None])
            op = EditOp("add", obj=Obj(shape, color, rng.choice(SIZES), pos))
        else:
            op = EditOp("retext", text=rng.choice([w for w in WORDS if w != src.text]))
        return src, op, _sample_cues(rng, ("apply", "keep", "clean", "spell"), cue_rate)


def sample_task(rng: random.Random, task_id: str, *, edit_rate: float = 0.25, cue_rate: float = 0.2) -> Task:
    """One request of the world (t2i, or an edit with probability ``edit_rate``)."""
    if rng.random() < edit_rate:
        src, op, cues = sample_edit(rng, cue_rate=cue_rate)
        prompt = write_edit(op, cues, rng)
        intent = parse_request(prompt, src)
        return Task(task_id, prompt, intent, meta={"source": src.to_json(), "op": op.kind})
    intent = sample_t2i(rng, cue_rate=cue_rate)
    prompt = write_prompt(intent, rng)
    return Task(task_id, prompt, parse_request(prompt))


# ------------------------------------------------------------------------------------------------
# Defects: what is wrong with an image, per critique dimension
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Defect:
    """One thing wrong with an image. ``code`` names the kind; ``dim`` the critique dimension;
    ``detail`` says concretely what is wrong ("the circle is blue, not red"), in the words the base
    student's pretraining uses for the same facts (``base_data``). Two defects are equal when their
    dimension and kind are: the detail is how it is said, not what it is."""

    dim: str
    code: str
    detail: str = field(default="", compare=False)


WHERE: dict[str, str] = {"left": "on the left", "middle": "in the middle", "right": "on the right"}
ART_WORD: dict[str, str] = {"noise": "noisy", "blur": "blurred", "seam": "split by a seam"}


def obj_phrase(o: Obj) -> str:
    """``a small red circle``."""
    return f"a {o.size} {o.color} {o.shape}"


def artefact_phrase(artefact: str) -> str:
    return f"the image is {ART_WORD[artefact]}"


def slot_changes(a: Scene, b: Scene) -> list[tuple[str, str]]:
    """What differs from scene ``a`` to scene ``b``, as ``(where, phrase)`` per slot (``where`` a
    position) and then for the word (``where`` = ``"word"``); artefacts are not compared."""
    out: list[tuple[str, str]] = []
    for pos in POSITIONS:
        oa, ob = a.at(pos), b.at(pos)
        if oa == ob:
            continue
        if oa is None and ob is not None:
            out.append((pos, f"{obj_phrase(ob)} was added {WHERE[pos]}"))
        elif ob is None and oa is not None:
            out.append((pos, f"the {oa.color} {oa.shape} {WHERE[pos]} was removed"))
        elif oa is not None and ob is not None:
            if oa.shape == ob.shape and oa.size == ob.size:
                out.append((pos, f"the {oa.shape} {WHERE[pos]} turned from {oa.color} to {ob.color}"))
            else:
                out.append((pos, f"the {oa.color} {oa.shape} {WHERE[pos]} became {obj_phrase(ob)}"))
    if a.text != b.text:
        if b.text is None:
            out.append(("word", "the word was removed"))
        elif a.text is None:
            out.append(("word", f"the word {b.text} was added"))
        else:
            out.append(("word", f"the word changed from {a.text} to {b.text}"))
    return out


# Score penalty per defect kind (scores start at 4 and are floored at 1). Text rendering is set
# directly rather than penalised: 2 for a misspelt word, 1 for a missing one.
PENALTY: dict[str, float] = {
    "missing": 1.5,
    "extra": 1.0,
    "color": 1.0,
    "size": 0.5,
    "place": 0.5,
    "not_applied": 2.5,
    "wrong_change": 1.5,
    "changed_other": 1.5,
    "noise": 1.5,
    "blur": 1.0,
    "seam": 1.5,
}
DIM_OF: dict[str, str] = {
    "missing": "text_faithfulness", "extra": "text_faithfulness", "color": "text_faithfulness",
    "size": "text_faithfulness", "place": "text_faithfulness", "not_applied": "text_faithfulness",
    "wrong_change": "text_faithfulness", "changed_other": "image_faithfulness",
    "noise": "physical_quality", "blur": "physical_quality", "seam": "physical_quality",
    "misspelled": "text_rendering", "no_text": "text_rendering",
}


def pair_objects(
    wants: tuple[Want, ...], objs: tuple[Obj, ...]
) -> tuple[list[tuple[Want, Obj]], list[tuple[Want, Obj | None]], list[Obj]]:
    """Match each requested object to the best drawn one.

    Pass 1 pairs exact shape + colour; pass 2 pairs the remaining wants, in request order, with a
    drawn object of the same shape (a colour error) or None (missing). Returns ``(exact, second,
    extra)``: the pairs of pass 1, those of pass 2, and the drawn objects nobody asked for. The
    judge's truth (:func:`find_defects`) and the base pretraining's descriptions share this rule so
    that they can never disagree about which object is which.
    """
    left = list(objs)
    exact: list[tuple[Want, Obj]] = []
    pending: list[Want] = []
    for w in wants:
        hit = next((o for o in left if o.shape == w.shape and o.color == w.color), None)
        if hit is None:
            pending.append(w)
        else:
            left.remove(hit)
            exact.append((w, hit))
    second: list[tuple[Want, Obj | None]] = []
    for w in pending:
        hit = next((o for o in left if o.shape == w.shape), None)
        if hit is not None:
            left.remove(hit)
        second.append((w, hit))
    return exact, second, left


def _match_wants(wants: tuple[Want, ...], objs: tuple[Obj, ...]) -> list[Defect]:
    """Defects of a t2i image: each requested object is matched to the best drawn one."""
    out: list[Defect] = []
    tf = "text_faithfulness"
    matched, second, left = pair_objects(wants, objs)
    for w, hit in second:
        if hit is None:
            out.append(Defect(tf, "missing", f"the {w.color} {w.shape} is missing"))
            continue
        out.append(Defect(tf, "color", f"the {w.shape} is {hit.color}, not {w.color}"))
        matched.append((w, hit))
    for w, o in matched:
        if w.size and o.size != w.size:
            out.append(Defect(tf, "size", f"the {o.color} {o.shape} is {o.size}, not {w.size}"))
        if w.position and o.position != w.position:
            out.append(Defect(tf, "place", f"the {o.color} {o.shape} is {WHERE[o.position]}, not {WHERE[w.position]}"))
    out += [Defect(tf, "extra", f"there is an extra {o.color} {o.shape}") for o in left]
    return out


def find_defects(intent: Intent, scene: Scene) -> list[Defect]:
    """Everything wrong with ``scene`` as an answer to ``intent`` (empty: a perfect image)."""
    out: list[Defect] = []
    if intent.source is None:
        out += _match_wants(intent.objects, scene.objects)
        if intent.text:
            if scene.text is None:
                out.append(Defect("text_rendering", "no_text", "no word is written"))
            elif scene.text != intent.text:
                out.append(Defect("text_rendering", "misspelled", f"the word reads {scene.text}, not {intent.text}"))
    else:
        src, op = intent.source, intent.edit
        want = op.apply(src) if op is not None else src
        out += _edit_defects(src, op, want, scene)
    out += [Defect("physical_quality", a, artefact_phrase(a)) for a in scene.artefacts]
    return out


def _edit_defects(src: Scene, op: EditOp | None, want: Scene, got: Scene) -> list[Defect]:
    out: list[Defect] = []
    if op is None:
        return out
    # Details say what the image shows against what was asked (``want``), slot by slot: the words
    # of the base's edit checks ("compared with what was asked, the square on the left turned from
    # blue to red").
    told = dict(slot_changes(want, got))
    by_pos = {o.position: o for o in got.objects}
    touched: set[str] = set()

    def tf(code: str, where: str) -> None:
        generic = "the requested change was not made" if code == "not_applied" else "the change was made wrongly"
        out.append(Defect("text_faithfulness", code, told.get(where, generic)))

    if op.kind in ("recolor", "remove") and op.target is not None:
        touched.add(op.target.position)
        now = by_pos.get(op.target.position)
        if op.kind == "remove":
            if now is not None and now == op.target:
                tf("not_applied", op.target.position)
            elif now is not None:
                tf("wrong_change", op.target.position)
        elif now is None or now == op.target:
            tf("not_applied", op.target.position)
        elif now.color != op.color or now.shape != op.target.shape:
            tf("wrong_change", op.target.position)
    elif op.kind == "add" and op.obj is not None:
        touched.add(op.obj.position)
        now = by_pos.get(op.obj.position)
        if now is None:
            tf("not_applied", op.obj.position)
        elif now != op.obj:
            tf("wrong_change", op.obj.position)
    elif op.kind == "retext":
        if got.text == src.text:
            tf("not_applied", "word")
        elif got.text is None:
            out.append(Defect("text_rendering", "no_text", "no word is written"))
        elif got.text != op.text:
            out.append(Defect("text_rendering", "misspelled", f"the word reads {got.text}, not {op.text}"))
    # Image faithfulness: anything outside the edit that differs from the source.
    others = dict(slot_changes(src, got))
    for pos in POSITIONS:
        if pos in touched:
            continue
        if by_pos.get(pos) != src.at(pos):
            out.append(Defect("image_faithfulness", "changed_other", others.get(pos, "something else changed")))
    if op.kind != "retext" and got.text != src.text:
        out.append(Defect("image_faithfulness", "changed_other", others.get("word", "something else changed")))
    return out


def dims_for(intent: Intent) -> tuple[str, ...]:
    """The critique dimensions of the intent's task, in the released order."""
    if intent.source is None:
        return ("text_faithfulness", "physical_quality", "text_rendering")
    return ("text_faithfulness", "image_faithfulness", "physical_quality", "text_rendering")


def text_applies(intent: Intent) -> bool:
    """Whether text rendering is judged (a word was requested); otherwise it is N/A."""
    if intent.source is None:
        return intent.text is not None
    return intent.edit is not None and intent.edit.kind == "retext"


def scores_from_defects(intent: Intent, defects: list[Defect]) -> dict[str, float | None]:
    """1-4 scores (N/A as None) implied by a list of defects."""
    scores: dict[str, float | None] = {}
    for dim in dims_for(intent):
        if dim == "text_rendering":
            if not text_applies(intent):
                scores[dim] = None
                continue
            codes = {d.code for d in defects if d.dim == dim}
            scores[dim] = 1.0 if "no_text" in codes else 2.0 if "misspelled" in codes else 4.0
            if intent.source is not None and any(d.code == "not_applied" for d in defects):
                scores[dim] = 1.0
            continue
        penalty = sum(PENALTY.get(d.code, 1.0) for d in defects if d.dim == dim)
        scores[dim] = max(1.0, 4.0 - penalty)
    return scores


def true_scores(intent: Intent, scene: Scene) -> dict[str, float | None]:
    """The world's ground-truth scores of an image."""
    return scores_from_defects(intent, find_defects(intent, scene))


def true_reward(intent: Intent, scene: Scene) -> float:
    """Ground-truth reward in [0, 1]: (mean of the non-N/A true scores - 1) / 3."""
    vals = [v for v in true_scores(intent, scene).values() if v is not None]
    return round((sum(vals) / len(vals) - 1.0) / 3.0, 6) if vals else 0.0


# ------------------------------------------------------------------------------------------------
# The judge prompts of the demo
# ------------------------------------------------------------------------------------------------

# A compact template set in the released layout (``User Instruction:`` line, numbered image lines,
# one <image> per slot), with the rubric cut to one line: a tiny student trained from scratch on
# two CPU cores cannot afford the ~500-token rubric of the built-in set, and it learns nothing
# from it that the examples do not teach. Teacher and student see exactly these prompts.
_DIMS_T2I = "Text Faithfulness, Physical and Visual Quality, Text Rendering (N/A if no text is asked for)"
_DIMS_EDIT = ("Text Faithfulness, Image Faithfulness, Physical and Visual Quality, Text Rendering "
              "(N/A if the edit involves no text)")
JUDGE_TEMPLATES: dict[str, str] = {
    "system_pointwise": "You judge generated images. Critique first, then score.",
    "t2i_pointwise": (
        "User Instruction: {request}\nYou are provided with one image:\n1. Generated Image <image>\n"
        f"Score it 1-4 on {_DIMS_T2I}. Then refine the request.\n"
    ),
    "edit_pointwise": (
        "User Instruction: {request}\nYou are provided with two images:\n1. Source Image <image>\n"
        f"2. Edited Image <image>\nScore the edit 1-4 on {_DIMS_EDIT}. Then refine the request.\n"
    ),
    "t2i_pairwise": (
        "User Instruction: {request}\nYou are provided with two images:\n1. Generated Image A <image>\n"
        f"2. Generated Image B <image>\nCompare them. Score each 1-4 on {_DIMS_T2I}.\n"
    ),
    "edit_pairwise": (
        "User Instruction: {request}\nYou are provided with three images:\n1. Source Image <image>\n"
        f"2. Edited Image A <image>\n3. Edited Image B <image>\nCompare the edits. Score each 1-4 on {_DIMS_EDIT}.\n"
    ),
}


def write_templates(folder: str | os.PathLike[str]) -> str:
    """Write :data:`JUDGE_TEMPLATES` as a template folder (``--templates DIR``); returns its path."""
    from pathlib import Path

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    for name, text in JUDGE_TEMPLATES.items():
        path = out / f"{name}.txt"
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, path)
    return str(out)
