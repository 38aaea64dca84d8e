"""Data curation with explainable scores.

Critique every item of a dataset with the reward model, keep or reject it by overall reward and
per-dimension thresholds, and write kept / rejected sets in which every row carries its critique
and the exact reason for the decision::

    from rationalrewards import RewardModel
    from rationalrewards.curate import Thresholds, curate

    rm = RewardModel.from_openai("http://127.0.0.1:8000/v1", model="RationalRewards-8B-T2I")
    result = curate("items.jsonl", "curated/", reward_model=rm,
                    thresholds=Thresholds(min_reward=0.6, min_scores={"physical_quality": 3.0}))
    print(result.n_kept, "kept of", result.n)

Only the standard library and Pillow are imported here; ``datasets`` / ``pyarrow`` are imported
when a Parquet file or a ``datasets`` folder is read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from .pipeline import CurationResult, JudgeRequired, acurate, curate, load_curated
    from .sources import Columns, Item, ItemSource, open_items
    from .thresholds import Check, Decision, Thresholds, decide

# Resolved on first access so that the CLI (which imports ``rationalrewards.curate.cli`` for
# every command, --help included) does not load Pillow or the pipeline until it is used.
_LAZY = {
    "CurationResult": ".pipeline",
    "JudgeRequired": ".pipeline",
    "acurate": ".pipeline",
    "curate": ".pipeline",
    "load_curated": ".pipeline",
    "Columns": ".sources",
    "Item": ".sources",
    "ItemSource": ".sources",
    "open_items": ".sources",
    "Check": ".thresholds",
    "Decision": ".thresholds",
    "Thresholds": ".thresholds",
    "decide": ".thresholds",
}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)


__all__ = [
    "Check",
    "Columns",
    "CurationResult",
    "Decision",
    "Item",
    "ItemSource",
    "JudgeRequired",
    "Thresholds",
    "acurate",
    "curate",
    "decide",
    "load_curated",
    "open_items",
]
