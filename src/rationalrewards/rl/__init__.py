"""RL in parameter space: the reward object, framework adapters and per-dimension aggregation.

Nothing heavy is imported here: torch and numpy load only when a tensor or array is handed over
or asked for.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .adapters import (
        GroupwiseReward,
        PointwiseReward,
        RemoteGroupwiseReward,
        RemotePointwiseReward,
        RewardOutput,
        make_flow_grpo_reward_fn,
    )
    from .aggregation import DimensionAggregation, combine_dimensions, normalize_within_groups
    from .reward import FailurePolicy, RationalReward, RewardBatch, RewardFailure

_LAZY = {
    "RationalReward": ".reward",
    "RewardBatch": ".reward",
    "FailurePolicy": ".reward",
    "RewardFailure": ".reward",
    "DimensionAggregation": ".aggregation",
    "combine_dimensions": ".aggregation",
    "normalize_within_groups": ".aggregation",
    "make_flow_grpo_reward_fn": ".adapters",
    "PointwiseReward": ".adapters",
    "GroupwiseReward": ".adapters",
    "RemotePointwiseReward": ".adapters",
    "RemoteGroupwiseReward": ".adapters",
    "RewardOutput": ".adapters",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = [
    "DimensionAggregation",
    "FailurePolicy",
    "GroupwiseReward",
    "PointwiseReward",
    "RationalReward",
    "RemoteGroupwiseReward",
    "RemotePointwiseReward",
    "RewardBatch",
    "RewardFailure",
    "RewardOutput",
    "combine_dimensions",
    "make_flow_grpo_reward_fn",
    "normalize_within_groups",
]
