"""The evaluation dimensions and the tasks that use them.

The keys, headers and numbering are fixed by the released checkpoints: they were trained to
write exactly these headers, and every parser keys on them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

Task = Literal["t2i", "edit"]
TASKS: tuple[Task, ...] = ("t2i", "edit")

SCORE_MIN = 1.0
SCORE_MAX = 4.0


@dataclass(frozen=True)
class Dimension:
    key: str
    header: str
    # Headers seen in the wild for the same dimension. "Physical Quality" is listed because one
    # copy of the release's parser searched for it; accepting it costs nothing.
    aliases: tuple[str, ...] = ()
    # Whether the model may legitimately answer N/A under the default policy (no text requested
    # => nothing to render). The policy in force is the ``allow_na`` setting; see below.
    allows_na: bool = False


TEXT_FAITHFULNESS = Dimension("text_faithfulness", "Text Faithfulness", ("Prompt Faithfulness",))
IMAGE_FAITHFULNESS = Dimension("image_faithfulness", "Image Faithfulness", ("Source Faithfulness",))
PHYSICAL_QUALITY = Dimension(
    "physical_quality",
    "Physical and Visual Quality",
    ("Physical & Visual Quality", "Physical/Visual Quality", "Physical Quality", "Visual Quality"),
)
TEXT_RENDERING = Dimension("text_rendering", "Text Rendering", (), allows_na=True)

ALL_DIMENSIONS: tuple[Dimension, ...] = (
    TEXT_FAITHFULNESS,
    IMAGE_FAITHFULNESS,
    PHYSICAL_QUALITY,
    TEXT_RENDERING,
)
DIMENSION_KEYS: tuple[str, ...] = tuple(d.key for d in ALL_DIMENSIONS)
BY_KEY: dict[str, Dimension] = {d.key: d for d in ALL_DIMENSIONS}

_TASK_DIMENSIONS: dict[str, tuple[Dimension, ...]] = {
    "t2i": (TEXT_FAITHFULNESS, PHYSICAL_QUALITY, TEXT_RENDERING),
    "edit": (TEXT_FAITHFULNESS, IMAGE_FAITHFULNESS, PHYSICAL_QUALITY, TEXT_RENDERING),
}


def dimensions_for(task: str) -> tuple[Dimension, ...]:
    """Dimensions of a task in the order the model writes them (1., 2., ...)."""
    try:
        return _TASK_DIMENSIONS[task]
    except KeyError:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}") from None


def keys_for(task: str) -> tuple[str, ...]:
    return tuple(d.key for d in dimensions_for(task))


def check_task(task: str) -> Task:
    dimensions_for(task)
    return task  # type: ignore[return-value]


# The dimensions that may be N/A unless ``allow_na`` says otherwise: only text rendering, the one
# dimension the released prompts tell the model to mark N/A. A judge that answers N/A on faithfulness
# or quality has not judged the image, and averaging the remaining dimensions would hide that.
DEFAULT_ALLOW_NA: frozenset[str] = frozenset(d.key for d in ALL_DIMENSIONS if d.allows_na)

AllowNA = str | Iterable[str] | None


def resolve_allow_na(value: AllowNA) -> frozenset[str]:
    """The set of dimension keys that may be N/A, from the ``allow_na`` setting.

    ``None`` is the default (``{"text_rendering"}``); ``"all"`` lets every dimension be N/A (the
    release's lenient reading); ``"none"`` or an empty collection allows none. A string is a
    comma-separated list of keys (the CLI's ``--allow-na``), anything else a collection of keys.
    Unknown keys raise ``ValueError`` naming them.
    """
    if value is None:
        return DEFAULT_ALLOW_NA
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",") if p.strip()]
        lowered = [p.lower() for p in parts]
        if lowered == ["all"]:
            return frozenset(DIMENSION_KEYS)
        if lowered in ([], ["none"]):
            return frozenset()
    else:
        try:
            parts = list(value)
        except TypeError:
            raise ValueError(f"allow_na must be 'all', a comma-separated string or a collection of "
                             f"dimension keys, not {type(value).__name__}") from None
        if parts == ["all"]:
            return frozenset(DIMENSION_KEYS)
    bad = [p for p in parts if not isinstance(p, str) or p not in BY_KEY]
    if bad:
        raise ValueError(f"allow_na names unknown dimension(s) {', '.join(map(repr, bad))}; known: "
                         f"{', '.join(DIMENSION_KEYS)}, or 'all' / 'none'")
    return frozenset(parts)
