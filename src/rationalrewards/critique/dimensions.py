"""The evaluation dimensions and the tasks that use them.

The keys, headers and numbering are fixed by the released checkpoints: they were trained to
write exactly these headers, and every parser keys on them.
"""

from __future__ import annotations

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
    # Whether the model may legitimately answer N/A (no text requested => nothing to render).
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
