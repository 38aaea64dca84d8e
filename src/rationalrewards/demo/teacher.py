"""A scripted teacher VLM for the demo world, registered as the backend ``demo-teacher``.

It plays the part of the large teacher (Qwen3-VL-32B in the paper) in PARROT and can serve as a
judge anywhere a :class:`~rationalrewards.backends.Backend` is accepted. It "sees" an image by
reading the scene spec that the world stores in the PNG's ``rr-scene`` text chunk, reads the
request from the prompt's ``User Instruction:`` line, and writes answers in the released formats:

* a pairwise judgement (two images, or source + two edits) or a pointwise critique with a refined
  request, each a short formulaic text built from the defects it perceives;
* PARROT phase 1 (anchored generation): when the prompt states which image people preferred, the
  teacher still writes what it perceives, but when that disagrees with the stated preference it
  *rationalises* with probability ``rationalize``: it shifts the scores toward the stated winner
  and leaves the prose as it was, the way an anchored LLM produces a rationale whose text does
  not support its verdict; otherwise it leaves its scores alone;
* PARROT phase 2 (re-prediction, a prompt holding ``<notes>``): it judges from the notes only,
  reading back the defects they claim, and appends ``Final verdict: Image A|Image B|tie``.

Noise: each answer is, with probability ``noise``, *corrupted*: one image's perception either
misses a real defect or hallucinates one that is not there. That is the noise PARROT's filter has
to remove; the demo measures how much of it reaches the student with and without the filter.

Everything is a deterministic function of the request, the images and the sampling seed, so a
rerun gives the same answers (PARROT's resume logic depends on that).
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from ..backends import register_backend
from ..backends.base import Backend, Generation, SamplingParams
from .world import (
    COLORS,
    CUE_TEXT,
    DIM_OF,
    POSITIONS,
    SHAPES,
    SIZES,
    Defect,
    Intent,
    Obj,
    Scene,
    artefact_phrase,
    dims_for,
    find_defects,
    parse_request,
    scene_of,
    scores_from_defects,
    slot_changes,
    text_applies,
)

HEADERS = {
    "text_faithfulness": "Text Faithfulness",
    "image_faithfulness": "Image Faithfulness",
    "physical_quality": "Physical and Visual Quality",
    "text_rendering": "Text Rendering",
}

# Defect phrases, singular and plural. The teacher writes them and reads them back (re-prediction,
# error measurement), so every phrase must be unambiguous on its own.
PHRASES: dict[str, tuple[str, str]] = {
    "missing": ("one requested object is missing", "{n} requested objects are missing"),
    "extra": ("an unrequested object appears", "{n} unrequested objects appear"),
    "color": ("one object has the wrong colour", "{n} objects have the wrong colour"),
    "size": ("one object has the wrong size", "{n} objects have the wrong size"),
    "place": ("one object is in the wrong place", "{n} objects are in the wrong place"),
    "not_applied": ("the requested change was not made", "the requested change was not made"),
    "wrong_change": ("the change was made wrongly", "the change was made wrongly"),
    "changed_other": ("something else changed too", "{n} other things changed too"),
    "noise": ("visible noise", "visible noise"),
    "blur": ("the image is blurred", "the image is blurred"),
    "seam": ("a seam splits the image", "a seam splits the image"),
    "misspelled": ("the word is misspelled", "the word is misspelled"),
    "no_text": ("the word is missing", "the word is missing"),
}
_NUMBERS = {"one": 1, "two": 2, "three": 3, "four": 4}
_COUNT_WORDS = {2: "two", 3: "three", 4: "four"}

# What to write when a dimension has no defect.
FINE: dict[str, str] = {
    "text_faithfulness": "everything requested is there",
    "edit_text_faithfulness": "the requested change was made",
    "image_faithfulness": "nothing else changed",
    "physical_quality": "clean and sharp",
    "text_rendering": "the word is spelled right",
}
NOT_APPLICABLE = {"t2i": "no text was requested", "edit": "the edit involves no text"}

# Which explicitness cue a refined request adds for each kind of defect (see generator.py).
CUE_FOR_DEFECT = {
    "missing": "count", "extra": "count", "color": "attr", "size": "attr", "place": "place",
    "noise": "clean", "blur": "clean", "seam": "clean", "misspelled": "spell", "no_text": "spell",
    "not_applied": "apply", "wrong_change": "apply", "changed_other": "keep",
}
CUE_ORDER = ("count", "attr", "place", "apply", "keep", "spell", "clean")
CUE_COMMENT = {
    "count": "the object count", "attr": "the colours and sizes", "place": "the positions",
    "clean": "a clean render", "spell": "the exact spelling", "apply": "the change itself",
    "keep": "what must stay",
}
NO_REFINEMENT = "Keep the request as it is."

_PHRASE_RES: list[tuple[str, re.Pattern[str]]] = []
for _code, (_one, _many) in PHRASES.items():
    _PHRASE_RES.append((_code, re.compile(re.escape(_one), re.I)))
    if _many != _one:
        _PHRASE_RES.append((_code, re.compile(re.escape(_many).replace(r"\{n\}", r"(?P<n>one|two|three|four|\d)"), re.I)))


# ------------------------------------------------------------------------------------------------
# Writing
# ------------------------------------------------------------------------------------------------


def describe(intent: Intent, defects: Sequence[Defect], dim: str) -> str:
    """The justification text of one image on one dimension."""
    if dim == "text_rendering" and not text_applies(intent):
        return NOT_APPLICABLE[intent.task]
    mine = [d for d in defects if d.dim == dim]
    if not mine:
        if dim == "text_faithfulness" and intent.task == "edit":
            return FINE["edit_text_faithfulness"]
        return FINE[dim]
    # Each defect is named concretely ("the circle is blue, not red"): a critique that says which
    # object is wrong and how is checkable, and uses the words the student's base already uses for
    # the same facts. A defect without a detail falls back to the counted generic phrase.
    parts = [d.detail for d in mine if d.detail]
    codes = Counter(d.code for d in mine if not d.detail)
    for code in PHRASES:
        n = codes.get(code, 0)
        if n:
            one, many = PHRASES[code]
            parts.append(one if n == 1 else many.format(n=_COUNT_WORDS.get(n, str(n))))
    return "; ".join(parts)


_SHAPE = r"(?:circle|square|triangle)"
_COLOR = r"(?:red|green|blue|yellow)"
_WHERE_RE = r"(?P<where>on the left|in the middle|on the right)"
_OBJ = rf"a (?:small|large) {_COLOR} {_SHAPE}"
# Concrete details as world.find_defects writes them (t2i: one kind per pattern).
_T2I_RES: list[tuple[str, re.Pattern[str]]] = [
    ("missing", re.compile(rf"\bthe {_COLOR} {_SHAPE} is missing", re.I)),
    ("color", re.compile(rf"\bthe {_SHAPE} is {_COLOR}, not {_COLOR}", re.I)),
    ("size", re.compile(rf"\bthe {_COLOR} {_SHAPE} is (?:small|large), not (?:small|large)", re.I)),
    ("place", re.compile(rf"\bthe {_COLOR} {_SHAPE} is {_WHERE_RE}, not (?:on the left|in the middle|on the right)",
                         re.I)),
    ("extra", re.compile(rf"\bthere is an extra {_COLOR} {_SHAPE}", re.I)),
    ("no_text", re.compile(r"\bno word is written", re.I)),
    ("misspelled", re.compile(r"\bthe word reads [A-Z]+, not [A-Z]+", re.I)),
    ("noise", re.compile(r"\bthe image is noisy", re.I)),
    ("blur", re.compile(r"\bthe image is blurred", re.I)),
    ("seam", re.compile(r"\bthe image is split by a seam", re.I)),
]
# What an edited image shows against what was asked, slot by slot (world.slot_changes); the
# kind depends on the edit: see _edit_code.
_CHANGE_RES: list[re.Pattern[str]] = [
    re.compile(rf"\b(?P<obj>{_OBJ}) was added {_WHERE_RE}", re.I),
    re.compile(rf"\bthe {_COLOR} {_SHAPE} {_WHERE_RE} was removed", re.I),
    re.compile(rf"\bthe (?P<shape>{_SHAPE}) {_WHERE_RE} turned from {_COLOR} to (?P<color>{_COLOR})", re.I),
    re.compile(rf"\bthe {_COLOR} {_SHAPE} {_WHERE_RE} became (?P<obj>{_OBJ})", re.I),
    re.compile(r"\bthe word (?:was removed|[A-Z]+ was added|changed from [A-Z]+ to (?P<text>[A-Z]+))", re.I),
]


def _edit_code(intent: Intent | None, m: re.Match[str]) -> tuple[str, str]:
    """(dimension, kind) of a slot change an edit critique names. On the slot the instruction
    touches it is the instruction's defect: ``not_applied`` when the image still shows the source
    there, else ``wrong_change``; anywhere else ``changed_other``."""
    op = intent.edit if intent is not None else None
    src = intent.source if intent is not None else None
    groups = m.groupdict()
    where = groups.get("where")
    pos = {"on the left": "left", "in the middle": "middle", "on the right": "right"}.get((where or "").lower())
    if op is None or src is None:
        return DIM_OF["changed_other"], "changed_other"
    if pos is None:  # the word
        if op.kind != "retext":
            return DIM_OF["changed_other"], "changed_other"
        got = groups.get("text")
        return "text_faithfulness", "not_applied" if got is not None and got.upper() == src.text else "wrong_change"
    touched = (op.target.position if op.target is not None else op.obj.position if op.obj is not None else None)
    if pos != touched:
        return DIM_OF["changed_other"], "changed_other"
    shown = src.at(pos)
    text = m.group(0).lower()
    if "was removed" in text:
        now = None
    elif groups.get("obj"):
        size, color, shape = groups["obj"].lower().split()[1:4]
        now = (shape, color, size)
    else:
        now = ((groups.get("shape") or "").lower(), (groups.get("color") or "").lower(),
               shown.size if shown is not None else None)
    before = (shown.shape, shown.color, shown.size) if shown is not None else None
    if now is None and op.kind == "recolor":  # the object to recolour is gone: the change was not made
        return "text_faithfulness", "not_applied"
    return "text_faithfulness", "not_applied" if now == before else "wrong_change"


def read_defects(text: str, intent: Intent | None = None) -> list[Defect]:
    """Defects claimed in a justification written by :func:`describe` (inverse of it): the
    concrete details of :func:`~.world.find_defects`, and the counted generic phrases. ``intent``
    (the request) tells what an edit's slot change means (see :func:`_edit_code`)."""
    out: list[Defect] = []
    spans: list[tuple[int, int]] = []
    for code, pat in _T2I_RES:
        for m in pat.finditer(text):
            if any(a <= m.start() < b for a, b in spans):
                continue
            spans.append((m.start(), m.end()))
            out.append(Defect(DIM_OF[code], code, m.group(0)))
    for pat in _CHANGE_RES:
        for m in pat.finditer(text):
            if any(a <= m.start() < b for a, b in spans):
                continue
            spans.append((m.start(), m.end()))
            dim, code = _edit_code(intent, m)
            out.append(Defect(dim, code, m.group(0)))
    for code, pat in _PHRASE_RES:
        for m in pat.finditer(text):
            if any(a <= m.start() < b for a, b in spans):
                continue
            spans.append((m.start(), m.end()))
            n_text = (m.groupdict().get("n") or "one").lower()
            n = int(n_text) if n_text.isdigit() else _NUMBERS.get(n_text, 1)
            out += [Defect(DIM_OF[code], code)] * max(1, n)
    return out


def _fmt(score: float | None) -> str:
    return "N/A" if score is None else f"{score:.1f}"


def pointwise_answer(intent: Intent, defects: Sequence[Defect], scores: dict[str, float | None] | None = None) -> str:
    """A pointwise critique in the released format, refinement included."""
    scores = scores or scores_from_defects(intent, list(defects))
    lines = ["# Detailed Judgement"]
    for i, dim in enumerate(dims_for(intent), 1):
        lines += [f"{i}. {HEADERS[dim]}:", f"## Justification: {describe(intent, defects, dim)}.",
                  f"## Score: {_fmt(scores[dim])}"]
    cues = refinement_cues(defects)
    if cues:
        summary = "the image has flaws."
        comments = "state " + _join([CUE_COMMENT[c] for c in cues]) + "."
        request = " ".join(CUE_TEXT[c] for c in cues)
    else:
        summary, comments, request = "the image is faithful and clean.", "nothing to add.", NO_REFINEMENT
    lines += [f"# Summary: {summary}", "", "# User Request Refinement:", f"## Refinement Comments: {comments}",
              f"## Refined Request: {request}"]
    return "\n".join(lines)


def refinement_cues(defects: Sequence[Defect]) -> list[str]:
    """The explicitness cues a refined request should add for these defects, in a fixed order."""
    wanted = {CUE_FOR_DEFECT[d.code] for d in defects if d.code in CUE_FOR_DEFECT}
    return [c for c in CUE_ORDER if c in wanted]


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _winner(a: float | None, b: float | None) -> str:
    if a is None or b is None:
        return "N/A"
    return "Image A" if a > b else "Image B" if b > a else "It's a tie"


def _verdict(scores_a: dict[str, float | None], scores_b: dict[str, float | None]) -> str:
    """A, B or tie from the sums over dimensions scored on both sides (as ``compare`` decides)."""
    keys = [k for k in scores_a if scores_a[k] is not None and scores_b.get(k) is not None]
    sa = round(sum(scores_a[k] for k in keys), 6)  # type: ignore[misc]
    sb = round(sum(scores_b[k] for k in keys), 6)  # type: ignore[misc]
    return "A" if sa > sb else "B" if sb > sa else "tie"


def pairwise_answer(intent: Intent, defects_a: Sequence[Defect], defects_b: Sequence[Defect],
                    scores_a: dict[str, float | None] | None = None, scores_b: dict[str, float | None] | None = None,
                    final_verdict: bool = False) -> str:
    """A pairwise judgement in the released format (optionally with a ``Final verdict:`` line)."""
    scores_a = scores_a or scores_from_defects(intent, list(defects_a))
    scores_b = scores_b or scores_from_defects(intent, list(defects_b))
    lines = ["# Detailed Judgement"]
    for i, dim in enumerate(dims_for(intent), 1):
        if dim == "text_rendering" and not text_applies(intent):
            just = NOT_APPLICABLE[intent.task]
        else:
            just = f"A: {describe(intent, defects_a, dim)}. B: {describe(intent, defects_b, dim)}"
        lines += [f"{i}. {HEADERS[dim]}:", f"## Justification: {just}.", f"## Score A: {_fmt(scores_a[dim])}",
                  f"## Score B: {_fmt(scores_b[dim])}", f"## Winner: {_winner(scores_a[dim], scores_b[dim])}"]
    v = _verdict(scores_a, scores_b)
    lines.append("# Summary: " + ("the two images are equally good." if v == "tie" else f"Image {v} is better."))
    if final_verdict:
        lines.append(f"Final verdict: {'tie' if v == 'tie' else 'Image ' + v}")
    return "\n".join(lines)


def claimed_defects(answer: str, intent: Intent) -> dict[str, list[Defect]]:
    """Read back, per image, the defects a teacher or student answer claims.

    Returns ``{"A": [...], "B": [...]}`` for a pairwise answer or notes, ``{"image": [...]}``
    for a pointwise critique. Lines that are not justifications are ignored.
    """
    sides: dict[str, list[Defect]] = {}
    pairwise = bool(re.search(r"\bA:\s", answer)) and bool(re.search(r"\bB:\s", answer))
    for line in answer.splitlines():
        m = re.match(r"^\s*(?:##\s*)?justification\s*:\s*(.*)$", line, re.I)
        if not m:
            continue
        body = m.group(1)
        if pairwise:
            parts = re.split(r"\bB:\s", body, maxsplit=1)
            a_part = re.sub(r"^\s*A:\s", "", parts[0])
            sides.setdefault("A", []).extend(read_defects(a_part, intent))
            sides.setdefault("B", []).extend(read_defects(parts[1] if len(parts) > 1 else "", intent))
        else:
            sides.setdefault("image", []).extend(read_defects(body, intent))
    return sides


# ------------------------------------------------------------------------------------------------
# Perception with noise
# ------------------------------------------------------------------------------------------------


def _hallucination(intent: Intent, present: Sequence[Defect], rng: random.Random) -> Defect:
    """A defect that is not there, named as concretely as a real one would be."""
    if intent.task == "edit":
        options = ["not_applied", "changed_other", "noise", "blur", "seam"]
    else:
        options = ["missing", "color", "extra", "noise", "blur", "seam"]
        if intent.text:
            options.append("misspelled")
    have = {d.code for d in present}
    fresh = [c for c in options if c not in have] or options
    code = rng.choice(fresh)
    return Defect(DIM_OF[code], code, _made_up(intent, code, rng))


def _made_up(intent: Intent, code: str, rng: random.Random) -> str:
    """The detail of a hallucinated defect of kind ``code`` ("" when there is nothing concrete to
    name, e.g. no object was requested; the generic phrase is written then)."""
    if code in ("noise", "blur", "seam"):
        return artefact_phrase(code)
    if code in ("missing", "color") and intent.objects:
        w = rng.choice(intent.objects)
        if code == "missing":
            return f"the {w.color} {w.shape} is missing"
        return f"the {w.shape} is {rng.choice([c for c in COLORS if c != w.color])}, not {w.color}"
    if code == "extra":
        return f"there is an extra {rng.choice(list(COLORS))} {rng.choice(SHAPES)}"
    if code == "misspelled" and intent.text:
        k = rng.randrange(len(intent.text))
        wrong = intent.text[:k] + rng.choice([c for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ" if c != intent.text[k]])
        return f"the word reads {wrong + intent.text[k + 1:]}, not {intent.text}"
    src, op = intent.source, intent.edit
    if src is None or op is None:
        return ""
    want = op.apply(src)
    if code == "not_applied":  # seen as if the source came back unchanged
        told = slot_changes(want, src)
        return told[0][1] if told else ""
    if code == "changed_other":
        touched = {op.target.position if op.target is not None else None, op.obj.position if op.obj is not None else None}
        pos = rng.choice([p for p in POSITIONS if p not in touched])
        o = want.at(pos)
        if o is None:
            seen = Obj(rng.choice(SHAPES), rng.choice(list(COLORS)), rng.choice(SIZES), pos)
        else:
            seen = replace(o, color=rng.choice([c for c in COLORS if c != o.color]))
        others = [x for x in want.objects if x.position != pos]
        told = slot_changes(want, replace(want, objects=tuple(sorted([*others, seen],
                                                                    key=lambda x: POSITIONS.index(x.position)))))
        return told[0][1] if told else ""
    return ""


def corrupt(intent: Intent, defects: list[Defect], rng: random.Random) -> list[Defect]:
    """One perception error: miss a real defect (if any, half the time) or hallucinate one."""
    out = list(defects)
    if out and rng.random() < 0.5:
        out.pop(rng.randrange(len(out)))
    else:
        out.append(_hallucination(intent, out, rng))
    return out


def _rationalize(scores_pref: dict[str, float | None], scores_other: dict[str, float | None]) -> None:
    """Shift scores (in place) until the preferred side wins on the sums; prose is untouched."""
    keys = [k for k in scores_pref if scores_pref[k] is not None and scores_other.get(k) is not None]
    for k in keys:
        if _sum(scores_pref, keys) > _sum(scores_other, keys):
            return
        if scores_pref[k] < scores_other[k]:  # type: ignore[operator]
            scores_pref[k] = scores_other[k]
    if _sum(scores_pref, keys) <= _sum(scores_other, keys):
        k = keys[0]
        if scores_other[k] > 1.0:  # type: ignore[operator]
            scores_other[k] = max(1.0, scores_other[k] - 0.5)  # type: ignore[operator]
        else:
            scores_pref[k] = min(4.0, scores_pref[k] + 0.5)  # type: ignore[operator]


def _sum(scores: dict[str, float | None], keys: list[str]) -> float:
    return round(sum(scores[k] for k in keys), 6)  # type: ignore[misc]


# ------------------------------------------------------------------------------------------------
# Reading a prompt
# ------------------------------------------------------------------------------------------------


@dataclass
class Prompt:
    """What the teacher understood of one request."""

    text: str
    request: str
    images: list[Any]
    has_system: bool

    @property
    def is_edit(self) -> bool:
        return bool(re.search(r"\bsource image\b", self.text, re.I))

    @property
    def pairwise(self) -> bool:
        return len(self.images) - (1 if self.is_edit else 0) == 2


_PREFERRED_FALLBACK = re.compile(r"judged\s+(Image [AB])\s+to be the better", re.I)
_TIE_FALLBACK = re.compile(r"judged them to be equally good", re.I)


def _label_phrases() -> dict[str, str]:
    """The sentences PARROT uses to state a pairwise preference (read from its phrase file)."""
    try:
        from ..parrot.prompts import TeacherTemplates

        p = TeacherTemplates.load().phrases
        return {"A": p["pairwise_preferred"].format(preferred="Image A", other="Image B"),
                "B": p["pairwise_preferred"].format(preferred="Image B", other="Image A"),
                "tie": p["pairwise_tie"]}
    except Exception:  # PARROT's phrase file unavailable: the regex fallback still works
        return {}


def stated_label(text: str, phrases: dict[str, str]) -> str | None:
    """The preference an anchored prompt states (``A``, ``B`` or ``tie``), else None."""
    for label, sentence in phrases.items():
        if sentence and sentence in text:
            return label
    m = _PREFERRED_FALLBACK.search(text)
    if m:
        return m.group(1)[-1].upper()
    return "tie" if _TIE_FALLBACK.search(text) else None


def read_prompt(messages: list[dict[str, Any]]) -> Prompt:
    texts: list[str] = []
    images: list[Any] = []
    has_system = False
    for msg in messages:
        if msg.get("role") == "system":
            has_system = True
        content = msg.get("content")
        if isinstance(content, str):
            texts.append(content)
            continue
        for part in content or []:
            if part.get("type") == "text":
                texts.append(part.get("text", ""))
            elif part.get("type") == "image":
                images.append(part.get("image"))
            elif part.get("type") == "image_url":
                ref = part.get("image_url")
                url = ref.get("url") if isinstance(ref, dict) else ref
                images.append(_data_url_bytes(url))
    text = "\n".join(texts)
    m = re.search(r"User Instruction:\s*(.*)", text)
    return Prompt(text=text, request=m.group(1).strip() if m else "", images=images, has_system=has_system)


def _data_url_bytes(url: Any) -> bytes | None:
    if not isinstance(url, str) or not url.startswith("data:"):
        return None
    _meta, _, payload = url.partition(",")
    try:
        return base64.b64decode(payload)
    except ValueError:
        return None


# ------------------------------------------------------------------------------------------------
# The backend
# ------------------------------------------------------------------------------------------------


class DemoTeacher(Backend):
    """The scripted teacher (see the module docstring).

    Args:
        noise: probability that an answer carries one perception error (a missed or a
            hallucinated defect).
        rationalize: in anchored prompts, probability of shifting the scores toward the stated
            preference when the perceived verdict disagrees with it.
        repredict_noise: probability that a re-prediction names a random verdict.
        seed: mixed into every answer's randomness.
    """

    name = "demo-teacher"

    def __init__(self, noise: float = 0.3, rationalize: float = 0.5, repredict_noise: float = 0.02, seed: int = 0,
                 model: str | None = None, **_ignored: Any):
        for label, value in (("noise", noise), ("rationalize", rationalize), ("repredict_noise", repredict_noise)):
            if not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"{label} must be in [0, 1], got {value}")
        self.noise = float(noise)
        self.rationalize = float(rationalize)
        self.repredict_noise = float(repredict_noise)
        self.seed = int(seed)
        self.model_name = model or f"demo-teacher(noise={self.noise:g})"
        self._phrases = _label_phrases()
        self.calls = Counter()

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "model": self.model_name, "noise": self.noise, "rationalize": self.rationalize,
                "repredict_noise": self.repredict_noise, "seed": self.seed}

    async def agenerate(self, messages: list[dict[str, Any]], params: SamplingParams) -> Generation:
        try:
            text = self.answer(messages, params)
        except TeacherInputError as exc:
            return Generation(text=None, error=f"demo teacher: {exc}", finish_reason="error")
        return Generation(text=text, finish_reason="stop", prompt_tokens=0, completion_tokens=len(text.split()))

    # -- the answer ----------------------------------------------------------------------------
    def answer(self, messages: list[dict[str, Any]], params: SamplingParams | None = None) -> str:
        """The teacher's text for one chat request (raises :class:`TeacherInputError`)."""
        p = read_prompt(messages)
        if not p.request:
            raise TeacherInputError("no 'User Instruction:' line in the prompt")
        scenes = [scene_of(img) for img in p.images]
        if not scenes or any(s is None for s in scenes):
            raise TeacherInputError("an image has no rr-scene chunk (only images of the demo world can be judged)")
        source = scenes[0] if p.is_edit else None
        judged: list[Scene] = scenes[1:] if p.is_edit else scenes  # type: ignore[assignment]
        intent = parse_request(p.request, source)
        key = json.dumps([p.request, [s.to_json() for s in scenes], getattr(params, "seed", None),  # type: ignore[union-attr]
                          getattr(params, "temperature", None), self.seed], sort_keys=True)
        rng = random.Random(int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big"))
        truths = [find_defects(intent, s) for s in judged]
        if "<notes>" in p.text:
            self.calls["repredict"] += 1
            return self._repredict(intent, p.text, rng)
        if p.pairwise:
            label = stated_label(p.text, self._phrases)
            self.calls["anchored_pairwise" if label else "pairwise"] += 1
            return self._pairwise(intent, truths[0], truths[1], label, rng)
        self.calls["pointwise"] += 1
        seen = corrupt(intent, truths[0], rng) if rng.random() < self.noise else truths[0]
        return pointwise_answer(intent, seen)

    def _pairwise(self, intent: Intent, truth_a: list[Defect], truth_b: list[Defect], label: str | None,
                  rng: random.Random) -> str:
        seen_a, seen_b = truth_a, truth_b
        if rng.random() < self.noise:
            if rng.random() < 0.5:
                seen_a = corrupt(intent, truth_a, rng)
            else:
                seen_b = corrupt(intent, truth_b, rng)
        sa = scores_from_defects(intent, seen_a)
        sb = scores_from_defects(intent, seen_b)
        if label in ("A", "B") and _verdict(sa, sb) != label and rng.random() < self.rationalize:
            if label == "A":
                _rationalize(sa, sb)
            else:
                _rationalize(sb, sa)
        return pairwise_answer(intent, seen_a, seen_b, sa, sb)

    def _repredict(self, intent: Intent, text: str, rng: random.Random) -> str:
        notes = text.split("<notes>", 1)[1].split("</notes>", 1)[0]
        if "Notes on Image A" in notes:  # two pointwise critiques
            part_a, _, part_b = notes.partition("Notes on Image B")
            claims = {"A": claimed_defects(part_a, intent).get("image", []),
                      "B": claimed_defects(part_b, intent).get("image", [])}
        else:
            claims = claimed_defects(notes, intent)
        a, b = claims.get("A", []), claims.get("B", [])
        if rng.random() < self.repredict_noise:
            a, b = b, a  # a careless reading: the notes' verdict comes out reversed
        return pairwise_answer(intent, a, b, final_verdict=True)


class TeacherInputError(ValueError):
    """The teacher cannot judge this request (no request line, an image not of the world)."""


def teacher_responder(teacher: DemoTeacher) -> Any:
    """A :class:`~rationalrewards.testing.scripted_server.ScriptedServer` responder serving the
    teacher over HTTP (images arrive as base64 data URLs; the PNG text chunk survives)."""
    from ..testing.scripted_server import Reply

    def respond(req: Any) -> Any:
        body = req.json or {}
        params = SamplingParams(temperature=float(body.get("temperature") or 0.0),
                                max_tokens=int(body.get("max_tokens") or 4096), seed=body.get("seed"))
        try:
            return teacher.answer(body.get("messages") or [], params)
        except TeacherInputError as exc:
            return Reply(status=400, content=f"demo teacher: {exc}")

    return respond


register_backend("demo-teacher", "rationalrewards.demo.teacher:DemoTeacher")
