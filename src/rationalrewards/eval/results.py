"""What an evaluation leaves behind, as the report reads it: the files of the output folder and
:class:`EvalResults`, the data's index joined with the saved result rows.

This module sits below both the runner (which writes the folder) and the report (which reads it),
so the report never needs the pipeline that produced the results.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..io import latest_rows
from .benchmarks import Benchmark, PairItem

RESULTS = "results.jsonl"
CONFIG = "config.json"
RUNS = "runs.jsonl"


def known_items(items: list[PairItem]) -> list[PairItem]:
    """The items with a recognised label: the ones judged and scored."""
    return [i for i in items if i.label is not None]


def unknown_items(items: list[PairItem]) -> list[PairItem]:
    """The items whose label was not understood (and unreadable lines): counted, never judged."""
    return [i for i in items if i.label is None]


@dataclass
class RunStats:
    """What one invocation did (throughput is measured over the judged items only)."""

    judged: int = 0
    ok: int = 0
    failed: dict[str, int] = field(default_factory=dict)
    judgements: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    wall_s: float = 0.0
    skipped_done: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "judged": self.judged, "ok": self.ok, "failed": dict(self.failed), "judgements": self.judgements,
            "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
            "wall_s": round(self.wall_s, 3), "skipped_done": self.skipped_done,
            "items_per_s": None if not self.wall_s else self.judged / self.wall_s,
        }


def read_results(path: Path) -> dict[str, dict[str, Any]]:
    """The saved result of each pair (torn lines skipped; a success is never undone by a later failure)."""
    return latest_rows(path)


@dataclass(frozen=True)
class EvalResults:
    """One evaluation as a report sees it: the items of the data (light columns, no image bytes),
    the settings that shaped the verdicts, where the data came from, and the saved result rows.

    ``items_with_images()`` streams the items again with their images (one more pass over the
    data, for the report's thumbnails); it raises what reading the data raises.
    """

    bench: Benchmark
    items: list[PairItem]
    out: Path
    mode: str
    swap: bool
    tie_tolerance: float
    settings: dict[str, Any]
    source: str
    """The data's description (a path or ``hf://...``)."""
    source_revision: str | None
    revision: str | None
    n_rows: int
    fingerprint: str
    rows: dict[str, dict[str, Any]]
    items_with_images: Callable[[], Iterator[PairItem]]

    @property
    def known(self) -> list[PairItem]:
        """Items with a recognised label (the ones judged and scored)."""
        return known_items(self.items)

    @property
    def unknown(self) -> list[PairItem]:
        return unknown_items(self.items)
