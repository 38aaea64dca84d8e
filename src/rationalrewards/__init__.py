"""RationalRewards: reasoning reward models for visual generation.

A vision-language judge writes a structured critique (per-dimension justification and 1-4 score,
a summary and a refined request) before any scalar reward is derived from it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .critique import (
    Aggregation,
    CompareResult,
    CritiqueResult,
    get_aggregation,
    parse_comparison,
    parse_critique,
)

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .critique.model import RewardModel


def __getattr__(name: str) -> Any:
    # RewardModel pulls in the backend registry; keep `import rationalrewards` light.
    if name == "RewardModel":
        from .critique.model import RewardModel

        return RewardModel
    raise AttributeError(name)


__all__ = [
    "Aggregation",
    "CompareResult",
    "CritiqueResult",
    "RewardModel",
    "__version__",
    "get_aggregation",
    "parse_comparison",
    "parse_critique",
]
