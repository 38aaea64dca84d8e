"""Prompt templates -> chat messages in the layout the released checkpoints were trained on.

A template set is a folder of five text files (see ``templates/default``):
``system_pointwise.txt``, ``t2i_pointwise.txt``, ``edit_pointwise.txt``, ``t2i_pairwise.txt``,
``edit_pairwise.txt``. A template holds ``{request}`` once and one ``<image>`` placeholder per
image line; for edits the first placeholder is the source slot and receives every source image.

``system_pointwise.txt`` may be absent or empty (whitespace only): the pointwise prompt is then a
single user turn with no system message, the release's older test-time layout. It never holds
``{request}`` or ``<image>`` (a system turn has neither).

Messages are plain dicts in the OpenAI shape with image parts kept as objects
(``{"type": "image", "image": PreparedImage}``); each backend turns them into its wire format.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from .dimensions import check_task

Mode = Literal["pointwise", "pairwise"]
IMAGE_MARKER = "<image>"
SYSTEM_FILE = "system_pointwise.txt"
TEMPLATE_FILES = (
    SYSTEM_FILE,
    "t2i_pointwise.txt",
    "edit_pointwise.txt",
    "t2i_pairwise.txt",
    "edit_pairwise.txt",
)
# Files a template folder must have; the system prompt is optional (absent = no system turn).
REQUIRED_TEMPLATE_FILES = tuple(f for f in TEMPLATE_FILES if f != SYSTEM_FILE)
# Expected image slots per template (the edit source slot counts once).
_SLOTS = {
    ("t2i", "pointwise"): 1,
    ("edit", "pointwise"): 2,
    ("t2i", "pairwise"): 2,
    ("edit", "pairwise"): 3,
}


class PromptInputError(ValueError):
    """The request text cannot be used (not a string, not valid Unicode, or empty)."""


_SURROGATE = re.compile(r"[\ud800-\udfff]")
_LINE_BREAKS = re.compile(r"\r\n|[\r\v\f\x1c-\x1e\x85\u2028\u2029]")


def check_request_text(text: object, what: str = "the request") -> str:
    """``text`` as a str that can be encoded (UTF-8, JSON, a tokenizer), else PromptInputError.

    A lone surrogate (``"cat \\ud800"``, e.g. from a JSON ``\\ud800`` escape or a badly decoded
    file) is a valid Python str but no valid Unicode: every encoder downstream would raise
    mid-request. The error names the position so the caller can find it.
    """
    if not isinstance(text, str):
        raise PromptInputError(f"{what} must be text, got {type(text).__name__}")
    m = _SURROGATE.search(text)
    if m:
        raise PromptInputError(
            f"{what} is not valid Unicode: lone surrogate U+{ord(m.group()):04X} at position {m.start()}"
        )
    return text


def neutralize_request(text: str, what: str = "the request") -> str:
    """Make user text inert inside our prompt.

    The request is quoted on one ``User Instruction:`` line, so: line breaks become spaces (a
    request cannot open a new section), ``<image>`` markers become ``[image]`` (no phantom image
    slot in sharegpt exports), line-leading ``#`` marks are dropped (no forged ``## Score:``
    header), and chat-control tokens such as ``<|im_start|>`` are broken up (no role injection).
    """
    check_request_text(text, what)
    # Every character str.splitlines() (and so a tokenizer or a log viewer) treats as a line
    # break, not only "\n": a lone "\r" or U+2028 would otherwise open a line of its own.
    out = _LINE_BREAKS.sub("\n", text)
    out = re.sub(r"(?m)^\s*#+\s*", "", out)
    out = re.sub(r"\s*\n\s*", " ", out).strip()
    # A '#' run mid-line that would start a header once the model echoes the request
    out = re.sub(r"#{2,}", "#", out)
    # Markers last, on the final text, so no earlier step can join the pieces of one.
    out = re.sub(r"<\s*image\s*>", "[image]", out, flags=re.IGNORECASE)
    out = re.sub(r"<\|", "< |", out)
    out = re.sub(r"</?\s*think\s*>", lambda m: m.group(0).replace("<", "< "), out, flags=re.IGNORECASE)
    if not out:
        raise PromptInputError(f"{what} is empty")
    return out


@dataclass(frozen=True)
class TemplateSet:
    """The five prompt texts; build from a folder with :meth:`from_dir`.

    An empty ``system_pointwise`` (``""`` or whitespace) means pointwise prompts carry no system
    message: one user turn, as in the release's older test-time layout.
    """

    name: str
    system_pointwise: str
    t2i_pointwise: str
    edit_pointwise: str
    t2i_pairwise: str
    edit_pairwise: str

    @classmethod
    def from_dir(cls, path: str | Path, name: str | None = None) -> TemplateSet:
        folder = Path(path)
        if not folder.is_dir():
            raise FileNotFoundError(f"no template folder at {folder}")
        missing = [f for f in REQUIRED_TEMPLATE_FILES if not (folder / f).is_file()]
        if missing:
            raise FileNotFoundError(f"template folder {folder} lacks {', '.join(missing)}")
        texts: dict[str, str] = {}
        for f in TEMPLATE_FILES:
            if f == SYSTEM_FILE and not (folder / f).exists():
                texts[f[:-4]] = ""  # no system turn
                continue
            try:
                texts[f[:-4]] = (folder / f).read_text(encoding="utf-8")
            except UnicodeDecodeError as exc:
                raise ValueError(f"template {folder / f} is not UTF-8 text: {exc}") from None
        ts = cls(name=name or folder.name, **texts)
        ts.validate()
        return ts

    @classmethod
    def default(cls) -> TemplateSet:
        root = resources.files("rationalrewards.critique") / "templates" / "default"
        texts = {f[:-4]: (root / f).read_text(encoding="utf-8") for f in TEMPLATE_FILES}
        return cls(name="default", **texts)

    def text(self, task: str, mode: Mode) -> str:
        return getattr(self, f"{task}_{mode}")

    @property
    def has_system(self) -> bool:
        """Whether pointwise prompts open with a system message."""
        return bool(self.system_pointwise.strip())

    def validate(self) -> None:
        """ValueError naming the template and the problem if the set cannot be used."""
        for field_name in ("system_pointwise", *(f"{t}_{m}" for t, m in _SLOTS)):
            text = getattr(self, field_name)
            if not isinstance(text, str):
                raise ValueError(f"template {field_name} must be text, not {type(text).__name__}")
            check_request_text(text, f"template {field_name}")
        if "{request}" in self.system_pointwise or IMAGE_MARKER in self.system_pointwise:
            raise ValueError(f"template system_pointwise must not contain {{request}} or {IMAGE_MARKER}: "
                             "the system turn carries neither the request nor images")
        for (task, mode), slots in _SLOTS.items():
            body = self.text(task, mode)
            if body.count("{request}") != 1:
                raise ValueError(f"template {task}_{mode} must contain {{request}} exactly once")
            if body.count(IMAGE_MARKER) != slots:
                raise ValueError(f"template {task}_{mode} must contain {slots} {IMAGE_MARKER} placeholders")


_DEFAULT: TemplateSet | None = None


def default_templates() -> TemplateSet:
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = TemplateSet.default()
    return _DEFAULT


def resolve_templates(spec: str | Path | TemplateSet | None) -> TemplateSet:
    if spec is None or spec == "default":
        return default_templates()
    if isinstance(spec, TemplateSet):
        return spec
    return TemplateSet.from_dir(spec)


def _interleave(template: str, request: str, slots: list[list[Any]]) -> list[dict[str, Any]]:
    # Split on the markers BEFORE inserting the request, so nothing in the request can ever be
    # taken for an image slot.
    pieces = template.split(IMAGE_MARKER)
    if len(pieces) - 1 != len(slots):
        raise ValueError(f"template has {len(pieces) - 1} image slots, got {len(slots)}")
    content: list[dict[str, Any]] = []
    for i, piece in enumerate(pieces):
        piece = piece.replace("{request}", request)
        if piece:
            content.append({"type": "text", "text": piece})
        if i < len(slots):
            for img in slots[i]:
                content.append({"type": "image", "image": img})
    return content


def build_messages(
    task: str,
    mode: Mode,
    request: str,
    images: list[Any],
    sources: list[Any] | None = None,
    templates: TemplateSet | None = None,
    request_name: str = "the request",
) -> list[dict[str, Any]]:
    """Chat messages for one judgement.

    ``images``: the judged image(s): one for pointwise, two (A, B) for pairwise.
    ``sources``: the edit's source image(s) (edit task only; several go into the one slot).
    Pointwise prompts are a system + user message, pairwise a single user message, as in training;
    a template set with an empty system prompt makes pointwise prompts a single user message too.
    ``request_name`` names the request in errors (``"prompt"`` for the API's argument).
    """
    task = check_task(task)
    ts = templates or default_templates()
    expected = 1 if mode == "pointwise" else 2
    if len(images) != expected:
        raise ValueError(f"{mode} judgement needs {expected} image(s), got {len(images)}")
    if task == "edit":
        if not sources:
            raise ValueError("an edit judgement needs at least one source image")
        slots = [list(sources)] + [[img] for img in images]
    else:
        if sources:
            raise ValueError("a t2i judgement takes no source image")
        slots = [[img] for img in images]
    user = {"role": "user", "content": _interleave(ts.text(task, mode), neutralize_request(request, request_name), slots)}
    if mode == "pointwise" and ts.has_system:
        return [{"role": "system", "content": ts.system_pointwise.strip()}, user]
    return [user]


def render_text(messages: list[dict[str, Any]], marker: str = IMAGE_MARKER) -> list[dict[str, str]]:
    """Messages with image parts replaced by ``marker`` (for sharegpt exports and logs)."""
    out = []
    for msg in messages:
        content = msg["content"]
        if isinstance(content, str):
            out.append({"role": msg["role"], "content": content})
            continue
        text = "".join(p["text"] if p["type"] == "text" else marker for p in content)
        out.append({"role": msg["role"], "content": text})
    return out


def message_images(messages: list[dict[str, Any]]) -> list[Any]:
    """The image objects of the messages, in placeholder order."""
    return [
        part["image"]
        for msg in messages
        if not isinstance(msg["content"], str)
        for part in msg["content"]
        if part["type"] == "image"
    ]
