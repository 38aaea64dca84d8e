"""From a critique to short, detectable defect phrases ("left hand", "garbled sign text").

Two sources, tried in order:

1. **The judge, asked a follow-up.** It sees the image and its own critique and lists the
   concrete defects as JSON lines ``{"object", "problem", "dimension"}``. The answer is parsed
   leniently: JSON lines, a JSON array (fenced or not), ``{"defects": [...]}``, or bullets such
   as ``- [physical_quality] left hand: six fingers`` / ``- left hand: six fingers``.
2. **A rule-based noun-phrase chunker** over the justifications of the low-scoring dimensions,
   for when there is no judge or its answer is unusable. No tagger model is needed (none can be
   downloaded offline): a determiner starts a phrase, function words, common verbs, adverbs and
   punctuation end it, and phrases that name no locatable thing (``the request``, ``minor
   issues``) or that sit behind a spatial preposition (``on the wall``: a place, not the defect)
   are dropped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

from ..critique.dimensions import BY_KEY, DIMENSION_KEYS, keys_for

DefectSource = Literal["judge", "fallback", "given"]

# Dimensions at or above this score are not searched for defects by the fallback: a 3 means
# "minor issues" in the rubric, which rarely names a thing a detector could find.
LOW_SCORE = 3.0


@dataclass
class Defect:
    """A concrete defect: the ``phrase`` a detector looks for, what is wrong, and its dimension."""

    phrase: str
    problem: str | None = None
    dimension: str | None = None
    source: DefectSource = "given"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# -- the follow-up question to the judge ---------------------------------------------------------

FOLLOWUP_SYSTEM = (
    "You review generated images. Given an image and a critique of it, you point to the visible "
    "defects the critique describes so that an object detector can find them."
)

FOLLOWUP_INSTRUCTIONS = """List the concrete, visible defects this critique describes, at most {max_defects}.
Write one JSON object per line and nothing else:
{{"object": "<the thing in the image that is wrong, 1-4 words, e.g. left hand>", "problem": "<what is wrong with it, a few words>", "dimension": "<one of: {dimensions}>"}}
Name each object the way it looks in the image (for example "shadow on the sand", not "the removal"). Leave out defects that are not at a place in the image, such as a wrong overall style or colour grade.
If the critique names no visible defect, answer with the single word NONE."""


def critique_digest(critique: Mapping[str, Any]) -> str:
    """The critique as the follow-up shows it: each dimension with its score and justification."""
    lines = []
    task = str(critique.get("task") or "t2i")
    scores = critique.get("scores") or {}
    justifications = critique.get("justifications") or {}
    for key in _task_keys(task):
        text = justifications.get(key)
        score = scores.get(key)
        if text is None and score is None:
            continue
        shown = "N/A" if score is None else f"{float(score):g}/4"
        lines.append(f"- {BY_KEY[key].header} (score {shown}): {(text or '').strip()}")
    if critique.get("summary"):
        lines.append(f"Summary: {str(critique['summary']).strip()}")
    if not lines and critique.get("raw"):
        lines.append(str(critique["raw"]).strip())
    return "\n".join(lines)


def build_followup_messages(image: Any, critique: Mapping[str, Any], *, request: str | None = None,
                            max_defects: int = 5) -> list[dict[str, Any]]:
    """Chat messages (the package's internal format, image as a ``PreparedImage`` part) asking the
    judge for the defect list."""
    task = str(critique.get("task") or "t2i")
    intro = "Here is a generated image."
    if request:
        intro += f"\nIt was made for this request: {request.strip()}"
    body = (
        "\nThis is your critique of it:\n"
        + critique_digest(critique)
        + "\n\n"
        + FOLLOWUP_INSTRUCTIONS.format(max_defects=max_defects, dimensions=", ".join(_task_keys(task)))
    )
    content = [{"type": "text", "text": intro + "\n"}, {"type": "image", "image": image}, {"type": "text", "text": body}]
    return [{"role": "system", "content": FOLLOWUP_SYSTEM}, {"role": "user", "content": content}]


# -- parsing the judge's list ---------------------------------------------------------------------

_THINK = re.compile(r"<think>.*?</think>", re.S | re.I)
_FENCE = re.compile(r"```(?:json|jsonl)?\s*(.*?)```", re.S | re.I)
_BULLET = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)])\s+")
_BRACKET_DIM = re.compile(r"^[\[(]([^\])]+)[\])]\s*")
_TRAILING_DIM = re.compile(r"\s*[\[(]([^\])]+)[\])]\s*$")
_SPLIT = re.compile(r"\s*(?::|\s[-\u2013\u2014]\s)\s*")
_OBJECT_KEYS = ("object", "phrase", "item", "region", "target", "name", "what")
_PROBLEM_KEYS = ("problem", "issue", "defect", "description", "why")


def dimension_key(name: Any) -> str | None:
    """A dimension key from a key, header or loose name (``Physical Quality``); None if unknown."""
    if not isinstance(name, str) or not name.strip():
        return None
    norm = re.sub(r"[^a-z]+", "_", name.strip().lower()).strip("_")
    if norm in DIMENSION_KEYS:
        return norm
    for dim in BY_KEY.values():
        for label in (dim.header, *dim.aliases):
            if norm == re.sub(r"[^a-z]+", "_", label.lower()).strip("_"):
                return dim.key
    for word, key in (("render", "text_rendering"), ("physical", "physical_quality"), ("visual", "physical_quality"),
                      ("image_faith", "image_faithfulness"), ("source", "image_faithfulness"),
                      ("text_faith", "text_faithfulness"), ("prompt", "text_faithfulness")):
        if word in norm:
            return key
    return None


def clean_phrase(text: str, max_words: int = 6) -> str:
    """A detector-friendly phrase: lower case, no quotes, markup or periods (Grounding DINO splits
    its text prompt at periods), leading articles dropped, at most ``max_words`` words."""
    text = re.sub(r"[*_`\"“”‘’]", "", text).replace(".", " ")
    words = re.sub(r"\s+", " ", text).strip(" ,;:-'").lower().split()
    while words and words[0] in ("the", "a", "an"):
        words = words[1:]
    return " ".join(words[:max_words])


def _from_obj(obj: Any) -> Defect | None:
    if isinstance(obj, str):
        return _from_line(obj)
    if not isinstance(obj, dict):
        return None
    lower = {str(k).lower(): v for k, v in obj.items()}
    phrase = next((lower[k] for k in _OBJECT_KEYS if isinstance(lower.get(k), str) and lower[k].strip()), None)
    if phrase is None:
        return None
    problem = next((lower[k] for k in _PROBLEM_KEYS if isinstance(lower.get(k), str) and lower[k].strip()), None)
    return Defect(clean_phrase(phrase), problem.strip() if problem else None, dimension_key(lower.get("dimension")),
                  "judge")


def _from_line(line: str) -> Defect | None:
    text = _BULLET.sub("", line).strip()
    text = text.replace("**", "")
    if not text:
        return None
    dim = None
    m = _BRACKET_DIM.match(text)
    if m and dimension_key(m.group(1)):
        dim, text = dimension_key(m.group(1)), text[m.end():]
    m = _TRAILING_DIM.search(text)
    if m and dimension_key(m.group(1)):
        dim, text = dim or dimension_key(m.group(1)), text[: m.start()]
    parts = _SPLIT.split(text, maxsplit=1)
    # "physical_quality: left hand: six fingers" puts the dimension first.
    if len(parts) == 2 and dim is None and dimension_key(parts[0]) and dimension_key(parts[0]) == parts[0].strip().lower():
        dim = dimension_key(parts[0])
        parts = _SPLIT.split(parts[1], maxsplit=1)
    phrase = clean_phrase(parts[0])
    if not phrase or len(phrase.split()) > 8:
        return None  # prose, not a list entry
    problem = parts[1].strip().rstrip(".") if len(parts) == 2 and parts[1].strip() else None
    return Defect(phrase, problem, dim, "judge")


def _json_values(text: str) -> list[Any] | None:
    for candidate in [m.group(1) for m in _FENCE.finditer(text)] + [text]:
        candidate = candidate.strip()
        if not candidate:
            continue
        try:
            value = json.loads(candidate)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            inner = next((value[k] for k in ("defects", "items", "objects", "regions") if isinstance(value.get(k), list)),
                         None)
            return inner if inner is not None else [value]
        if isinstance(value, list):
            return value
    return None


def parse_defect_list(text: str | None, *, max_defects: int = 8) -> tuple[list[Defect], str | None]:
    """Parse the judge's answer to the follow-up.

    Returns ``(defects, error)``: ``error`` is None when the answer was understood (an explicit
    ``NONE`` gives an empty list and no error) and a reason when nothing could be read from it.
    """
    if text is None or not text.strip():
        return [], "the judge returned an empty answer"
    body = _THINK.sub("", text).strip()
    if re.fullmatch(r"[\s`*\"'.]*none[\s`*\"'.]*", body, re.I) or body.strip("[] \n") == "":
        return [], None
    values = _json_values(body)
    defects: list[Defect] = []
    if values is not None:
        defects = [d for d in (_from_obj(v) for v in values) if d is not None]
    else:
        for line in body.splitlines():
            line = line.strip().rstrip(",")
            if not line:
                continue
            if line.startswith("{"):
                try:
                    d = _from_obj(json.loads(line))
                except json.JSONDecodeError:
                    d = None
            elif _BULLET.match(line):
                d = _from_line(line)
            elif _SPLIT.search(line) and not line.endswith(":"):
                # An unbulleted "object: problem" line; a line ending in a colon is a heading.
                d = _from_line(line)
                d = d if d is not None and d.problem else None
            else:
                d = None
            if d is not None:
                defects.append(d)
    defects = _dedupe(d for d in defects if d.phrase)
    if not defects:
        return [], f"no defect list found in the judge's answer: {body[:160]!r}"
    return defects[:max_defects], None


def _dedupe(defects: Any) -> list[Defect]:
    seen: set[str] = set()
    out = []
    for d in defects:
        if d.phrase not in seen:
            seen.add(d.phrase)
            out.append(d)
    return out


# -- the rule-based fallback ----------------------------------------------------------------------


def _words(text: str) -> frozenset[str]:
    """A word set written as one whitespace-separated string (long lists stay readable)."""
    return frozenset(text.split())


_DETERMINERS = _words(
    "the a an this that these those its his her their our your my some several many few each every another "
    "any both either neither no"
)
_SPATIAL_PREPOSITIONS = _words(
    "on in at into onto against behind near under over across around along beside besides inside outside above "
    "below beneath between among from toward towards within through throughout upon"
)
# Function words, auxiliaries and common verbs of critique prose: all end a phrase.
_STOP = _words(
    """
    and or but nor so yet if then than as because while although though however also still just only even
    very too quite rather mostly partly largely nearly almost slightly somewhat fully entirely not never
    is are was were be been being am has have had having do does did done doing
    can could should would will shall may might must
    it they them he she him we us you i me one ones itself themselves which who whom whose what where when why how
    there here with without of for to by about like unlike per via
    looks look looking appears appear appearing seems seem seeming shows show shown showing remains remain
    lacks lack lacking contains contain includes include including misses miss missing matches match matching
    follows follow following breaks break breaking falls fall touches touch merge merges merging wrap wraps
    stand stands standing sit sits sitting makes make making turns turn turned becomes become became cast casts
    gets get got stays stay keeps keep kept fills fill needs need asks ask asked requested request requests
    appear gone went come comes came leave leaves left-out placed faces face-forward hold holds holding
    cover covers covering dominate dominates occur occurs extend extends blend blends reads read says say
    float floats floating hang hangs hanging lie lies lying rest rests lean leans leaning bend bends overlap
    overlaps overlapping intersect intersects protrude protrudes grow grows fade fades bleed bleeds clip clips
    out up down off away back instead overall
    clear clearly visible noticeable obvious minor major slight severe strong weak good bad poor fine nice
    correct incorrect wrong right-looking accurate inaccurate plausible implausible possible impossible
    consistent inconsistent coherent incoherent present absent legible illegible readable unreadable crisp
    sharp soft natural unnatural realistic unrealistic convincing well
    """
)
# Heads that name no place in the image (or only a direction); a phrase ending in one is dropped.
_ABSTRACT = _words(
    """
    image images picture photo photograph render rendering output result request instruction instructions prompt
    user dimension dimensions score scores quality faithfulness detail details element elements attribute
    attributes issue issues flaw flaws problem problems error errors artefact artefacts artifact artifacts
    deviation deviations aspect aspects composition theme style mood tone look way kind lot bit part parts
    change changes edit edits removal addition replacement modification modifications alteration alterations
    inspection physics scene anatomy structure structures shape shapes texture textures lighting light-source
    pixels pixel colour color colours colors detailing realism consistency accuracy fidelity clarity
    left right top bottom middle center centre foreground
    thing things something nothing everything anything object objects item items point points place
    degree extent level levels amount number count counts size sizes time times overall instance instances
    mismatch mismatches absence presence lack omission omissions expectation expectations sense
    """
)
# Place words name something only with a modifier: "the inpainted region" yes, "the region" no.
_PLACE_HEADS = _words("area areas region regions part parts side sides edge edges corner corners patch spot")
_NUMBER_WORDS = _words(
    "one two three four five six seven eight nine ten eleven twelve dozen first second third fourth fifth"
)
_ADJ_SUFFIXES = ("able", "ible", "ful", "ic", "ive", "less", "ous", "ent", "ant", "ary", "ish")
_TOKEN = re.compile(r"[A-Za-z][A-Za-z'’-]*|\d+(?:\.\d+)?|[^\sA-Za-z\d]")


def _is_adverb(word: str) -> bool:
    return len(word) > 4 and word.endswith("ly") and word not in ("family", "belly", "jelly", "lily", "fly", "butterfly")


_COPULAS = _words("is are was were be been being looks look appears appear seems seem remains remain becomes become")
_INTENSIFIERS = _words("very too quite rather somewhat slightly mostly")


def extract_noun_phrases(text: str, *, max_phrases: int | None = None) -> list[str]:
    """Noun phrases that name visible things in critique prose, in order of appearance.

    >>> extract_noun_phrases("The left hand has six fingers, and the sign's text is garbled.")
    ['left hand', 'six fingers', 'sign text']
    """
    phrases: list[str] = []
    chunk: list[str] = []
    has_det = False  # the current chunk was opened by a determiner ("the", "his", "several")
    in_pp = False  # inside a spatial prepositional phrase ("on the wall"): a place, not the defect
    after_conj = False  # right after "and"/"or": a bare noun continues the previous phrase's role
    context: str | None = None  # "copula" / "adverb" before a chunk without determiner: a predicate

    def flush() -> None:
        nonlocal chunk, has_det
        words, det = chunk, has_det
        chunk, has_det = [], False
        # A noun phrase does not end in a participle or a digit ("is distorted", "reads 2").
        while words and (words[-1].endswith("ed") or words[-1].isdigit()):
            words = words[:-1]
        if not words or in_pp:
            return
        head = words[-1]
        if head in _ABSTRACT or head in _NUMBER_WORDS or len(head) < 3:
            return
        if head in _PLACE_HEADS and len(words) == 1:
            return
        if not det and context is not None:
            return  # "is consistent", "mechanically impossible": says how, not what
        if not det and len(words) == 1 and head.endswith(_ADJ_SUFFIXES):
            return
        phrase = " ".join(words)
        if phrase not in phrases:
            phrases.append(phrase)

    for raw in _TOKEN.findall(text or ""):
        word = raw.lower().replace("\u2019", "'")
        if word.endswith("'s"):
            word = word[:-2]  # "the sign's text" -> "sign text"
        elif word.endswith("s'"):
            word = word[:-1]
        if not re.match(r"[a-z0-9]", word):  # punctuation ends everything
            flush()
            in_pp, after_conj, context = False, False, None
        elif word in _DETERMINERS:
            flush()
            has_det, context = True, None
            if after_conj:  # "on the sand and a yellow smear": a new subject starts
                in_pp = False
            after_conj = False
        elif word in _SPATIAL_PREPOSITIONS:
            flush()
            in_pp, after_conj, context = True, False, None
        elif word in ("and", "or"):
            flush()
            after_conj = True
        elif word in _STOP or _is_adverb(word):
            flush()
            in_pp, after_conj = False, False
            if word in _COPULAS:
                context = "copula"
            elif _is_adverb(word) or word in _INTENSIFIERS:
                context = context or "adverb"
            else:
                context = None
        else:
            after_conj = False
            chunk.append(word)
    flush()
    return phrases[:max_phrases] if max_phrases is not None else phrases


def fallback_defects(critique: Mapping[str, Any], *, low_score: float = LOW_SCORE, per_dimension: int = 3,
                     max_defects: int = 6) -> list[Defect]:
    """Defect phrases from the justifications of dimensions scored below ``low_score``, lowest first."""
    task = str(critique.get("task") or "t2i")
    scores = critique.get("scores") or {}
    justifications = critique.get("justifications") or {}
    low = sorted(
        (k for k in _task_keys(task) if scores.get(k) is not None and float(scores[k]) < low_score),
        key=lambda k: float(scores[k]),
    )
    defects: list[Defect] = []
    for key in low:
        for phrase in extract_noun_phrases(justifications.get(key) or "", max_phrases=per_dimension):
            defects.append(Defect(phrase, None, key, "fallback"))
    return _dedupe(defects)[:max_defects]


def assign_dimensions(defects: list[Defect], critique: Mapping[str, Any]) -> list[Defect]:
    """Give each defect without a (valid) dimension the most plausible one.

    The lowest-scoring dimension whose justification mentions the phrase's head word; failing
    that, text rendering for text-like phrases; failing that, the lowest-scoring dimension.
    """
    task = str(critique.get("task") or "t2i")
    keys = _task_keys(task)
    scores = critique.get("scores") or {}
    justifications = critique.get("justifications") or {}
    scored = sorted((k for k in keys if scores.get(k) is not None), key=lambda k: float(scores[k]))
    for d in defects:
        if d.dimension in keys:
            continue
        head = d.phrase.split()[-1] if d.phrase else ""
        mention = [k for k in scored if head and head in (justifications.get(k) or "").lower()]
        if mention:
            d.dimension = mention[0]
        elif "text_rendering" in keys and re.search(r"\b(text|letters?|words?|sign|label|spelling|font)\b",
                                                    f"{d.phrase} {d.problem or ''}"):
            d.dimension = "text_rendering"
        else:
            d.dimension = scored[0] if scored else None
    return defects


def _task_keys(task: str) -> tuple[str, ...]:
    try:
        return keys_for(task)
    except ValueError:
        return keys_for("t2i")
