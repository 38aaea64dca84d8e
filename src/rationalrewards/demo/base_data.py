"""The data of the base student's pretraining: generic vision-language tasks of the demo world.

A real PARROT student starts from a pretrained VLM that already describes images, answers
questions about them, tells whether an image matches a text and what differs between two images.
This module writes such tasks for the demo world, from its own seed stream (``demo-base:SEED``),
so that the base model the demo ships (:mod:`.base`) has that knowledge before PARROT:

* ``caption``  - describe an image: what is in each slot, the word, the artefacts;
* ``qa``       - one question about an image: what is where, what colour / size, which word, how
                 many objects, whether it is noisy / blurred / split by a seam;
* ``match``    - does an image match a text (a request of the world)? "Yes." or "No:" and what does
                 not match, named concretely ("the blue square is green", "the word reads CAP");
* ``diff``     - what differs between two images (an edit's source and a result);
* ``edit``     - was an edit instruction carried out on the first image, and nothing else changed?

Two settings of the stream serve the judge the base later becomes (both off in the first shipped
recipe, on in the current one, see :class:`.base.BaseRecipe`): ``text_first`` puts the request of
``match`` and ``edit`` *before* the images (``User Instruction: ...``), the order of the judge's
prompts, so that the image tokens can be read in the light of the request; ``hard_negatives`` is
the share of ``match`` / ``edit`` examples whose image gets one further concrete change (an object
recoloured, resized, moved, dropped or added, the word misspelt), so that most answers hinge on a
single attribute that has to be looked up in the image - the contrastive "hard negative" of
image-text matching pretraining.

No preference, no critique, no score and no preference pair is involved: every answer is a
description of the scenes. Pure standard library (the renderer comes from :mod:`.world`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from typing import Any

from .generator import draw_scene
from .world import (
    ART_WORD,
    ARTEFACTS,
    COLORS,
    POSITIONS,
    SHAPES,
    SIZES,
    WHERE,
    WORDS,
    Intent,
    Obj,
    Scene,
    Want,
    artefact_phrase,
    find_defects,
    obj_phrase,
    sample_task,
    slot_changes,
)

#: The task kinds, in the order their held-out accuracies are reported.
TASKS: tuple[str, ...] = ("caption", "qa", "match", "diff", "edit")
#: Relative frequency of each kind in the pretraining stream.
TASK_WEIGHTS: dict[str, float] = {"caption": 0.2, "qa": 0.25, "match": 0.3, "diff": 0.1, "edit": 0.15}
#: The seed namespace of the stream; preference pairs use ``demo-pairs:...`` (see pipeline.make_pairs).
STREAM = "demo-base"

_COUNT = {0: "none", 1: "one", 2: "two", 3: "three"}


@dataclass
class BaseExample:
    """One pretraining example: images (scenes, rendered when used), a question, its answer.
    ``prefix`` is text shown before the images (empty: the images come first)."""

    id: str
    kind: str
    scenes: list[Scene]
    question: str
    answer: str
    meta: dict[str, Any] = field(default_factory=dict)
    prefix: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "scenes": [s.to_json() for s in self.scenes],
                "prefix": self.prefix, "question": self.question, "answer": self.answer, "meta": self.meta}


def caption(scene: Scene) -> str:
    """What an image shows, slot by slot, then the word and the artefacts."""
    parts = []
    for pos in POSITIONS:
        o = scene.at(pos)
        parts.append(f"{pos.capitalize()}: {obj_phrase(o) if o else 'nothing'}.")
    parts.append(f"Word: {scene.text}." if scene.text else "Word: none.")
    arts = [a for a in ARTEFACTS if a in scene.artefacts]
    parts.append(f"Artefacts: {', '.join(arts)}." if arts else "Artefacts: none.")
    return " ".join(parts)


def _want_phrase(w: Want) -> str:
    return " ".join(x for x in (w.size, w.color, w.shape) if x)


def mismatches(intent: Intent, scene: Scene) -> list[str]:
    """What in ``scene`` does not match a t2i request ``intent``, named concretely: the details of
    the world's own defects (:func:`.world.find_defects`), so the base and the judge's truth say
    the same thing in the same words; objects and the word first, then the artefacts."""
    found = find_defects(replace(intent, source=None, edit=None), scene)
    return ([d.detail for d in found if d.dim != "physical_quality"]
            + [artefact_phrase(a) for a in ARTEFACTS if a in scene.artefacts])


def differences(a: Scene, b: Scene) -> list[str]:
    """What changed from image ``a`` to image ``b``, slot by slot, then the word and artefacts."""
    return ([phrase for _where, phrase in slot_changes(a, b)]
            + [f"the second image is {ART_WORD[x]}" for x in ARTEFACTS if x in b.artefacts and x not in a.artefacts])


def _join(items: list[str]) -> str:
    return "; ".join(items)


def _qa(scene: Scene, rng: random.Random) -> tuple[str, str, str]:
    """(question, answer, question type) about one image."""
    kind = rng.choice(("where_what", "where_what", "colour", "size", "where", "word", "count", "artefact"))
    objs = list(scene.objects)
    if kind in ("colour", "size", "where") and not objs:
        kind = "count"
    if kind == "where_what":
        pos = rng.choice(POSITIONS)
        o = scene.at(pos)
        q = "What is in the middle?" if pos == "middle" else f"What is on the {pos}?"
        return q, (obj_phrase(o) if o else "nothing").capitalize() + ".", kind
    if kind == "colour":
        o = rng.choice(objs)
        return f"What colour is the {o.shape} {WHERE[o.position]}?", f"{o.color.capitalize()}.", kind
    if kind == "size":
        o = rng.choice(objs)
        return f"What size is the {o.color} {o.shape}?", f"{o.size.capitalize()}.", kind
    if kind == "where":
        if rng.random() < 0.7:
            o = rng.choice(objs)
            return f"Where is the {o.color} {o.shape}?", f"{WHERE[o.position].capitalize()}.", kind
        shape = rng.choice(SHAPES)
        color = rng.choice(("red", "green", "blue", "yellow"))
        o2 = next((x for x in objs if x.shape == shape and x.color == color), None)
        return (f"Where is the {color} {shape}?",
                f"{WHERE[o2.position].capitalize()}." if o2 else f"There is no {color} {shape}.", kind)
    if kind == "word":
        return "What word is written?", f"{scene.text}." if scene.text else "No word is written.", kind
    if kind == "count":
        return "How many objects are there?", f"{_COUNT[len(objs)].capitalize()}.", kind
    art = rng.choice(ARTEFACTS)
    q = {"noise": "Is the image noisy?", "blur": "Is the image blurred?", "seam": "Does a seam split the image?"}[art]
    return q, "Yes." if art in scene.artefacts else "No.", kind


def perturb(scene: Scene, rng: random.Random) -> Scene:
    """``scene`` with one concrete change: an object recoloured, resized, moved to a free slot,
    dropped or added, or the word misspelt (one letter) or replaced; a scene with nothing to change
    gets an object. Used for hard negatives of ``match`` and ``edit``."""
    objs = list(scene.objects)
    free = [p for p in POSITIONS if scene.at(p) is None]
    options = ["add"] if free else []
    if objs:
        options += ["colour", "colour", "size", "drop"] + (["move"] if free else [])
    if scene.text:
        options += ["word"]
    if not options:
        return scene
    what = rng.choice(options)
    if what == "add":
        o = Obj(rng.choice(SHAPES), rng.choice(list(COLORS)), rng.choice(SIZES), rng.choice(free))
        return replace(scene, objects=tuple(sorted([*objs, o], key=lambda x: POSITIONS.index(x.position))))
    if what == "word":
        text = scene.text or ""
        if rng.random() < 0.5:
            k = rng.randrange(len(text))
            letters = [c for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ" if c != text[k]]
            return replace(scene, text=text[:k] + rng.choice(letters) + text[k + 1:])
        return replace(scene, text=rng.choice([w for w in WORDS if w != text]))
    k = rng.randrange(len(objs))
    o = objs[k]
    if what == "drop":
        del objs[k]
    elif what == "colour":
        objs[k] = replace(o, color=rng.choice([c for c in COLORS if c != o.color]))
    elif what == "size":
        objs[k] = replace(o, size=next(s for s in SIZES if s != o.size))
    else:
        objs[k] = replace(o, position=rng.choice(free))
    return replace(scene, objects=tuple(sorted(objs, key=lambda x: POSITIONS.index(x.position))))


def base_examples(n: int, *, seed: int = 0, split: str = "train", edit_rate: float = 0.3,
                  weights: dict[str, float] | None = None, text_first: bool = False,
                  hard_negatives: float = 0.0) -> list[BaseExample]:
    """``n`` pretraining examples of the stream ``demo-base:SEED:SPLIT`` (deterministic).

    Scenes are what the world's generator draws for random requests of the world (with its
    mistakes, so that matches and mismatches both occur) and the sources of edits. ``weights``
    (default :data:`TASK_WEIGHTS`) is the task mix; ``text_first`` and ``hard_negatives`` are
    described in the module docstring. Hard negatives draw from their own random stream, so the
    rest of the stream is the same with and without them.
    """
    rng = random.Random(f"{STREAM}:{seed}:{split}")
    mix = dict(TASK_WEIGHTS if weights is None else weights)
    unknown = sorted(set(mix) - set(TASKS))
    if unknown or not any(v > 0 for v in mix.values()) or any(v < 0 for v in mix.values()):
        raise ValueError(f"task weights must be >= 0 over {', '.join(TASKS)} with one > 0; got {mix}")
    if not 0.0 <= hard_negatives <= 1.0:
        raise ValueError(f"hard_negatives must be in [0, 1], got {hard_negatives}")
    kinds, kind_weights = list(mix), list(mix.values())
    out: list[BaseExample] = []
    for i in range(n):
        kind = rng.choices(kinds, kind_weights)[0]
        want_edit = kind in ("diff", "edit")
        while True:
            task = sample_task(rng, f"{STREAM}-{split}-{i}", edit_rate=1.0 if want_edit else edit_rate * 0.5,
                               cue_rate=0.2)
            if want_edit == (task.intent.source is not None):
                break
        intent, scene = draw_scene(task.prompt, source=task.intent.source, seed=rng.randrange(1_000_000))
        ex_id = f"{STREAM}-{seed}-{split}-{i:06d}"
        meta: dict[str, Any] = {"request": task.prompt}
        if kind == "caption":
            # Captions also of edit sources, so every kind of scene gets described.
            out.append(BaseExample(ex_id, kind, [scene], "Describe the image.", caption(scene), meta))
        elif kind == "qa":
            q, a, qtype = _qa(scene, rng)
            out.append(BaseExample(ex_id, kind, [scene], q, a, {**meta, "question_type": qtype}))
        elif kind == "match":
            if hard_negatives and random.Random(f"{STREAM}:{seed}:{split}:neg:{i}").random() < hard_negatives:
                scene = perturb(scene, random.Random(f"{STREAM}:{seed}:{split}:perturb:{i}"))
                meta["hard_negative"] = True
            bad = mismatches(intent, scene)
            answer = "No: " + _join(bad) + "." if bad else "Yes."
            if text_first:
                out.append(BaseExample(ex_id, kind, [scene], "Does the image follow the instruction?", answer, meta,
                                       prefix=f"User Instruction: {task.prompt}\n"))
            else:
                out.append(BaseExample(ex_id, kind, [scene], f"Text: {task.prompt}\nDoes the image match the text?",
                                       answer, meta))
        else:
            src = task.intent.source
            assert src is not None
            if (kind == "edit" and hard_negatives
                    and random.Random(f"{STREAM}:{seed}:{split}:neg:{i}").random() < hard_negatives):
                scene = perturb(scene, random.Random(f"{STREAM}:{seed}:{split}:perturb:{i}"))
                meta["hard_negative"] = True
            if kind == "diff":
                diff = differences(src, scene)
                answer = "Changes: " + _join(diff) + "." if diff else "Nothing changed."
                out.append(BaseExample(ex_id, kind, [src, scene], "What changed from the first image to the second?",
                                       answer, meta))
            else:
                want = intent.edit.apply(src) if intent.edit is not None else src
                diff = differences(want, scene)
                answer = "Yes." if not diff else "No: compared with what was asked, " + _join(diff) + "."
                if text_first:
                    out.append(BaseExample(ex_id, kind, [src, scene], "Was the instruction carried out on the first "
                                           "image exactly, giving the second?", answer, meta,
                                           prefix=f"User Instruction: {task.prompt}\n"))
                else:
                    out.append(BaseExample(ex_id, kind, [src, scene],
                                           f"Instruction: {task.prompt}\nWas the instruction carried out on the "
                                           "first image exactly, giving the second?", answer, meta))
    return out


def base_corpus(seed: int = 0, n: int = 400) -> list[str]:
    """Lines of pretraining text, for the student's tokenizer (next to the judge vocabulary)."""
    lines: list[str] = []
    for ex in base_examples(n, seed=seed, split="corpus"):
        lines += [ex.question + "\n", ex.answer + "\n"]
    return lines
