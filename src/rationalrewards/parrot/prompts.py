"""Teacher prompts: anchored generation (with the label) and re-prediction (without it).

Both start from the judge prompt the student will see (``build_messages`` with the same template
set), so the teacher answers in exactly the released format the student is trained on. The
anchored prompt appends a note stating the human preference; the re-prediction prompt appends
another reviewer's notes (the rationale, scores removed by default) and asks for the released
pairwise format plus a ``Final verdict:`` line. The appended texts live in ``templates/`` as
plain files; ``teacher_templates`` points at a folder with your own versions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ..critique.parser import strip_thinking
from ..critique.prompts import TemplateSet, build_messages

TEACHER_FILES = ("anchor_pairwise.txt", "anchor_pointwise.txt", "repredict.txt", "phrases.yaml")
PHRASE_KEYS = ("pairwise_preferred", "pairwise_tie", "pointwise_won", "pointwise_lost", "pointwise_tie",
               "pointwise_notes")


@dataclass(frozen=True)
class TeacherTemplates:
    """The texts appended to the judge prompt for the teacher."""

    anchor_pairwise: str
    anchor_pointwise: str
    repredict: str
    phrases: dict[str, str]
    name: str = "default"

    @classmethod
    def load(cls, folder: str | Path | None = None) -> TeacherTemplates:
        """Built-in texts, with any file present in ``folder`` replacing its default."""
        import yaml

        root = resources.files("rationalrewards.parrot") / "templates"
        texts: dict[str, str] = {}
        for name in TEACHER_FILES:
            custom = Path(folder) / name if folder else None
            if custom is not None and custom.is_file():
                texts[name] = custom.read_text(encoding="utf-8")
            else:
                texts[name] = (root / name).read_text(encoding="utf-8")
        phrases = yaml.safe_load(texts["phrases.yaml"]) or {}
        missing = [k for k in PHRASE_KEYS if not isinstance(phrases.get(k), str)]
        if missing:
            raise ValueError(f"teacher phrases lack {', '.join(missing)}")
        t = cls(texts["anchor_pairwise.txt"], texts["anchor_pointwise.txt"], texts["repredict.txt"],
                {k: str(v) for k, v in phrases.items()}, name=str(folder) if folder else "default")
        t.validate()
        return t

    def validate(self) -> None:
        for name, text, key in (("anchor_pairwise.txt", self.anchor_pairwise, "{preference}"),
                                ("anchor_pointwise.txt", self.anchor_pointwise, "{preference}"),
                                ("repredict.txt", self.repredict, "{rationale}")):
            if text.count(key) != 1:
                raise ValueError(f"teacher template {name} must contain {key} exactly once")
            if "<image>" in text:
                raise ValueError(f"teacher template {name} must not contain <image> placeholders")


def _append_text(messages: list[dict[str, Any]], text: str) -> list[dict[str, Any]]:
    """Append ``text`` to the last user message (a new text part after its images and text)."""
    out = [dict(m) for m in messages]
    user = out[-1]
    content = list(user["content"]) if not isinstance(user["content"], str) else [{"type": "text", "text": user["content"]}]
    if content and content[-1]["type"] == "text":
        content[-1] = {"type": "text", "text": content[-1]["text"] + text}
    else:
        content.append({"type": "text", "text": text})
    user["content"] = content
    return out


def shown_letter(label: str) -> str:
    return "Image A" if label == "A" else "Image B"


def anchor_pairwise_messages(
    task: str, request: str, shown_a: Any, shown_b: Any, sources: list[Any] | None, shown_label: str,
    judge: TemplateSet, teacher: TeacherTemplates,
) -> list[dict[str, Any]]:
    """The student's pairwise prompt plus the preference note (``shown_label`` in shown order)."""
    msgs = build_messages(task, "pairwise", request, [shown_a, shown_b], sources or None, judge)
    if shown_label == "tie":
        pref = teacher.phrases["pairwise_tie"]
    else:
        other = "B" if shown_label == "A" else "A"
        pref = teacher.phrases["pairwise_preferred"].format(preferred=shown_letter(shown_label), other=shown_letter(other))
    return _append_text(msgs, teacher.anchor_pairwise.replace("{preference}", pref))


def anchor_pointwise_messages(
    task: str, request: str, image: Any, sources: list[Any] | None, standing: str,
    judge: TemplateSet, teacher: TeacherTemplates,
) -> list[dict[str, Any]]:
    """The student's pointwise prompt plus the note; ``standing`` is ``won``, ``lost`` or ``tie``."""
    msgs = build_messages(task, "pointwise", request, [image], sources or None, judge)
    pref = teacher.phrases[f"pointwise_{standing}"]
    return _append_text(msgs, teacher.anchor_pointwise.replace("{preference}", pref))


def repredict_messages(
    task: str, request: str, shown_a: Any, shown_b: Any, sources: list[Any] | None, notes: str,
    judge: TemplateSet, teacher: TeacherTemplates,
) -> list[dict[str, Any]]:
    """The student's pairwise prompt (no label anywhere) plus the reviewer notes."""
    msgs = build_messages(task, "pairwise", request, [shown_a, shown_b], sources or None, judge)
    return _append_text(msgs, teacher.repredict.replace("{rationale}", notes))


# -- rationale text ---------------------------------------------------------------------------
_SCORE_LINE = re.compile(
    r"^\s*(?:#{1,6}\s*)?(?:[-*+]\s+)?(?:\*\*|__)?\s*(?:score(?:\s*\(?\s*(?:for\s+)?(?:image\s+)?[AB]\s*\)?)?|"
    r"(?:image\s+)?[AB]\s+score|winner|final\s+verdict)\s*(?:\*\*|__)?\s*:.*$",
    re.IGNORECASE,
)


def clean_rationale(raw: str) -> str:
    """The teacher's answer as a training target: reasoning block dropped, trailing spaces
    trimmed, and ``<image>`` / chat-control text defused (a stray ``<image>`` in a target would
    break the placeholder count of sharegpt exports)."""
    text = strip_thinking(raw).replace("\r\n", "\n").replace("\r", "\n")
    text = text.replace("<|im_end|>", "").replace("<|endoftext|>", "")
    text = re.sub(r"<\s*image\s*>", "[image]", text, flags=re.IGNORECASE)
    text = re.sub(r"<\|", "< |", text)
    return "\n".join(line.rstrip() for line in text.strip().split("\n"))


def strip_scores(text: str) -> str:
    """Remove score, winner and verdict lines so only the prose is left."""
    return "\n".join(line for line in text.split("\n") if not _SCORE_LINE.match(line))


def as_notes(text: str, keep_scores: bool) -> str:
    """A rationale as reviewer notes for the re-prediction prompt."""
    body = clean_rationale(text)
    if not keep_scores:
        body = strip_scores(body)
    # The notes sit between <notes> tags; a closing tag inside them would end the block early.
    return re.sub(r"</?\s*notes\s*>", "", body, flags=re.IGNORECASE).strip()


_LETTER = re.compile(r"\b(image|score)(\s+)([AB])\b", re.IGNORECASE)


def swap_letters(text: str) -> str:
    """Exchange the A/B names (``Image A`` <-> ``Image B``, ``Score A`` <-> ``Score B``), for
    showing a rationale with the images in the other order."""
    return _LETTER.sub(lambda m: m.group(1) + m.group(2) + ("B" if m.group(3).upper() == "A" else "A"), text)
